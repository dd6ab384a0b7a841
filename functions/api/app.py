"""The Lifeboat REST API's entry point: the resolver of :mod:`functions.api.core` with every route.

Composition roots (Lambda's handler, the embedded server, Azure Functions, tests) import
this module and call :func:`configure` then :func:`resolve`; importing it registers every
capability's routes. The plumbing lives in ``core``, the routes in ``routes/`` (one module
per capability); to add a capability see the docstring of :mod:`functions.api.core`.
"""

from functions.api.core import (
    MAX_BODY,
    PUBLIC,
    ROUTES,
    Cursor,
    IdemKey,
    IdPath,
    Limit,
    app,
    configure,
    created,
    ctl,
    current,
    openapi_json,
    page_of,
    public,
    resolve,
    route,
)

# Routes register on import, and the OpenAPI document lists paths in registration order:
# keep this order, append new capabilities (before ``docs``, which serves the document).
# isort: off
from functions.api.routes import session
from functions.api.routes import sites_nodes
from functions.api.routes import plans
from functions.api.routes import jobs_points
from functions.api.routes import identity
from functions.api.routes import reports
from functions.api.routes import vsphere
from functions.api.routes import kvm
from functions.api.routes import failback
from functions.api.routes import reporting
from functions.api.routes import lockouts
from functions.api.routes import notifications
from functions.api.routes import metrics
from functions.api.routes import docs

# isort: on

#: the route modules, in registration order
CAPABILITIES = (
    session,
    sites_nodes,
    plans,
    jobs_points,
    identity,
    reports,
    vsphere,
    kvm,
    failback,
    reporting,
    lockouts,
    notifications,
    metrics,
    docs,
)

__all__ = [
    "CAPABILITIES", "MAX_BODY", "PUBLIC", "ROUTES", "Cursor", "IdPath", "IdemKey", "Limit", "app", "configure",
    "created", "ctl", "current", "openapi_json", "page_of", "public", "resolve", "route",
]  # fmt: skip
