"""``func.HttpRequest`` -> API Gateway REST proxy event -> ``resolve`` -> ``func.HttpResponse``.

The event is the one the embedded server builds (:func:`functions.embedded.http_server.to_event`),
so the API behaves the same behind API Gateway, the embedded server and Azure Functions.
The request path is the URL's path: ``host.json`` sets ``routePrefix`` to ``""`` so that
``/plans`` is served at ``https://<app>.azurewebsites.net/plans`` as it is everywhere else.

Bodies over :data:`MAX_BODY` are refused with 413 before an event is built (the Functions
host itself accepts up to 100 MB). A crash of the resolver becomes a 500 in the API's
error shape (the host would answer an empty 500) and is logged with the invocation id.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import azure.functions as func

from functions.azure import entra
from functions.embedded.http_server import to_event
from shared.errors import LifeboatError, http_status_for

log = logging.getLogger("lifeboat.azure.http")
MAX_BODY = 1 << 20

Resolver = Callable[[dict[str, Any], Any], dict[str, Any]]


class InvocationContext:
    """What powertools may read of a Lambda context, filled from the Functions invocation."""

    memory_limit_in_mb = 2048
    invoked_function_arn = "azure:functions:lifeboat-api"

    def __init__(self, function_name: str = "api", invocation_id: str = "") -> None:
        self.function_name = function_name
        self.aws_request_id = invocation_id or uuid.uuid4().hex

    def get_remaining_time_in_millis(self) -> int:
        return 230_000  # the HTTP trigger's response deadline (Azure Load Balancer: 230 s)


def _problem(status: int, code: str, message: str, request_id: str = "") -> func.HttpResponse:
    body = {"error": {"code": code, "message": message, "request_id": request_id, "details": None}}
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")


def to_api_event(req: func.HttpRequest, request_id: str) -> dict[str, Any]:
    """The API Gateway REST event of ``req`` (headers as sent, path and query from the URL)."""
    url = urlsplit(req.url)
    query = url.query or urlencode(dict(req.params))
    headers = {k: v for k, v in req.headers.items()}
    forwarded = next((v for k, v in headers.items() if k.lower() == "x-forwarded-for"), "")
    # the right-most hop is the one the Functions front end added; hops to its left are whatever
    # the client sent (login throttling counts per address: a client must not choose its own)
    client_ip = forwarded.split(",")[-1].strip()
    if client_ip.count(":") == 1:  # the front end appends the port to an IPv4 address
        client_ip = client_ip.split(":")[0]
    target = url.path + (f"?{query}" if query else "")
    event = to_event(req.method.upper(), target, headers, req.get_body() or b"", client_ip)
    event["requestContext"]["requestId"] = request_id
    return event


def to_http_response(resp: dict[str, Any]) -> func.HttpResponse:
    """The Functions response of an API Gateway proxy result (base64 bodies decoded)."""
    out = resp.get("body") or ""
    data = base64.b64decode(out) if resp.get("isBase64Encoded") else str(out).encode()
    headers = {str(k): str(v) for k, v in (resp.get("headers") or {}).items()}
    for k, vs in (resp.get("multiValueHeaders") or {}).items():
        headers[k] = ", ".join(str(v) for v in vs)
    headers.pop("Content-Length", None)
    return func.HttpResponse(body=data, status_code=int(resp["statusCode"]), headers=headers)


def handle(
    req: func.HttpRequest,
    *,
    resolver: Resolver,
    env: Mapping[str, str],
    invocation_id: str = "",
) -> func.HttpResponse:
    """Serve one request: size limit, Entra principal (if trusted), resolve, answer."""
    request_id = invocation_id or uuid.uuid4().hex
    body = req.get_body() or b""
    if len(body) > MAX_BODY:
        return _problem(413, "PayloadTooLarge", f"request body larger than {MAX_BODY} bytes", request_id)
    try:
        event = entra.authorize_event(to_api_event(req, request_id), env)
        return to_http_response(resolver(event, InvocationContext("api", request_id)))
    except LifeboatError as exc:
        return _problem(
            http_status_for(exc), type(exc).__name__.removesuffix("Error"), exc.message, request_id
        )
    except Exception:
        log.exception("API crashed", extra={"request_id": request_id, "path": urlsplit(req.url).path})
        return _problem(500, "Internal", "internal server error", request_id)
