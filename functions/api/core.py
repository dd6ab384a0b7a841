"""The Lifeboat REST API's core: one aws-lambda-powertools resolver for Lambda and the embedded server.

Every route is declared with :func:`route`, which records the permission it needs (the RBAC
matrix test enumerates :data:`ROUTES`). :func:`resolve` is the one entry point: it
authenticates the caller, checks the permission and writes an audit event for every
mutating call, whatever its outcome, before powertools validates and dispatches. Handlers
are thin: parse (powertools + pydantic), call ``shared.services``, answer. Every error has
one shape: ``{"error": {"code", "message", "request_id", "details"}}``.

This module holds the plumbing (resolver, error handlers, authentication, audit,
idempotency, response helpers, the OpenAPI document); the routes live in
``functions/api/routes/``, one module per capability, and ``functions/api/app.py`` is the
entry point that imports them all. To add a capability (say vSphere inventory):

1. write ``functions/api/routes/<capability>.py`` declaring its handlers with
   ``from functions.api.core import route`` (and ``ctl``, ``current``, ``public``,
   ``page_of``, ``created``, ``IdPath``, ``Limit``, ``Cursor`` as needed);
2. import it in ``functions/api/app.py`` and add it to ``CAPABILITIES``. Routes register on
   import, and the OpenAPI document lists paths in registration order, so append new
   modules (before ``docs``) to keep the existing document stable.
"""

import contextlib
import contextvars
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from pydantic import ValidationError

from functions.api.documented import documented_responses
from functions.api.schemas import PRIVATE_FIELDS
from shared.domain.audit import AuditEvent, IdempotencyRecord
from shared.domain.base import Record, new_id
from shared.domain.identity import NODE_PERMISSIONS, Permission
from shared.errors import (
    AuthenticationError,
    InvalidInputError,
    LifeboatError,
    NotFoundError,
    UnsupportedMediaTypeError,
    http_status_for,
)
from shared.policies import login_throttle
from shared.services import auth
from shared.services.context import Control

log = logging.getLogger("lifeboat.api")
MAX_BODY = 1 << 20  # API Gateway would cut at 10 MiB; we refuse far earlier

app = APIGatewayRestResolver(enable_validation=True)
_state: dict[str, Control] = {}
#: True only in the Lambda behind API Gateway, whose node authorizer sets requestContext.authorizer
_trust: dict[str, bool] = {"authorizer": False}
PUBLIC = None  # permission of routes that need no authentication

#: (method, rule) -> permission; None = public
ROUTES: dict[tuple[str, str], Permission | None] = {}
#: rule -> a check of the bearer value that stands in for authentication on that rule only
#: (``GET /metrics``' scrape token); it answers a principal, or None to authenticate as usual
ROUTE_CREDENTIALS: dict[str, Callable[[str], auth.Principal | None]] = {}


def configure(ctl: Control, *, trust_authorizer: bool = False) -> None:
    """Wire the ports (called once by each composition root).

    ``trust_authorizer``: node routes take the caller from API Gateway's node authorizer
    (``requestContext.authorizer``) instead of verifying the token again. Only the Lambda
    handler sets it: the embedded server builds ``requestContext`` itself, but nothing a
    client sends must ever be trusted as an authorizer's verdict."""
    _state["ctl"] = ctl
    _trust["authorizer"] = trust_authorizer


def ctl() -> Control:
    return _state["ctl"]


# --- errors --------------------------------------------------------------------------------
def _error(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    request_id = ""
    with contextlib.suppress(Exception):
        request_id = app.current_event.request_context.request_id or ""
    return Response(
        status_code=status,
        content_type="application/json",
        body=_error_json(code, message, request_id, details),
        headers=headers,
    )


def _error_headers(exc: LifeboatError) -> dict[str, str]:
    """Headers an error answer carries: ``Retry-After`` (seconds) when the error says how long to wait."""
    retry_after = exc.fields.get("retry_after")
    return {"Retry-After": str(int(retry_after))} if isinstance(retry_after, int | float) else {}


def _error_json(code: str, message: str, request_id: str, details: Any = None) -> str:
    return json.dumps(
        {"error": {"code": code, "message": message, "request_id": request_id, "details": details}},
        default=str,
    )


def _code(exc: LifeboatError) -> str:
    return type(exc).__name__.removesuffix("Error") or "Error"


@app.exception_handler(LifeboatError)
def _lifeboat_error(exc: LifeboatError) -> Response:
    return _error(http_status_for(exc), _code(exc), exc.message, headers=_error_headers(exc) or None)


@app.exception_handler(RequestValidationError)
def _validation_error(exc: RequestValidationError) -> Response:
    return _invalid(exc.errors())


@app.exception_handler(ValidationError)
def _model_error(exc: ValidationError) -> Response:
    """A body that passed the schema but not a record's own rules (cross-field checks)."""
    return _invalid(exc.errors())


def _invalid(raw: Any) -> Response:
    """422 naming the first offending field; every problem in ``details``."""
    errors = [
        {"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in raw
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return _error(422, "Validation", f"invalid request: {where}: {first['msg']}", errors)


@app.not_found
def _not_found(_exc: Exception) -> Response:
    return _error(404, "NotFound", f"no route {app.current_event.http_method} {app.current_event.path}")


# --- authentication, authorisation, audit ----------------------------------------------------
# These run in `resolve`, before powertools parses and validates the request, as API
# Gateway's authorizer does: an unauthenticated or unauthorised caller learns nothing about
# the request schema, and every mutating call is audited, including refused and malformed ones.
_principal_var: contextvars.ContextVar[auth.Principal] = contextvars.ContextVar("principal")
_COMPILED: list[tuple[str, re.Pattern[str], str]] = []


def current() -> auth.Principal:
    """The authenticated caller of the request being handled."""
    return _principal_var.get()


def route(method: str, rule: str, permission: Permission | None, **kwargs: Any) -> Callable:
    """Register a route and the permission it needs (see :func:`resolve`); ``errors`` documents
    statuses beyond the usual ones (e.g. ``(401, 429)`` for the public login)."""
    ROUTES[(method, rule)] = permission
    _COMPILED.append((method, re.compile("^" + re.sub(r"<[^>]+>", "[^/]+", rule) + "$"), rule))
    extra = tuple(kwargs.pop("errors", ()))
    responses = {
        **documented_responses(method, public=permission is PUBLIC, extra=extra),
        **kwargs.pop("responses", {}),
    }

    def decorate(fn: Callable) -> Callable:
        return app.route(rule, method=method, responses=responses, **kwargs)(fn)

    return decorate


def _match(method: str, path: str) -> str | None:
    for m, pattern, rule in _COMPILED:
        if m == method and pattern.match(path):
            return rule
    return None


def _authenticate(event: dict[str, Any], rule: str, permission: Permission | None = None) -> auth.Principal:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = authorizer.get("claims") or {}
    if claims:
        return auth.principal_from_claims(claims)
    if _trust["authorizer"] and permission in NODE_PERMISSIONS and authorizer.get("tokenId"):
        return auth.principal_from_authorizer(authorizer)
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    scheme, _, value = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationError("authentication required: send Authorization: Bearer <token>")
    alternative = ROUTE_CREDENTIALS.get(rule)
    principal = alternative(value.strip()) if alternative else None
    if principal is not None:
        return principal
    return auth.authenticate_bearer(ctl().store, value.strip(), secret=ctl().jwt_secret, now=ctl().now())


def _error_event(event: dict[str, Any], exc: LifeboatError) -> dict[str, Any]:
    request_id = (event.get("requestContext") or {}).get("requestId", "")
    return {"statusCode": http_status_for(exc), "headers": {"Content-Type": "application/json", **_error_headers(exc)},
            "multiValueHeaders": {}, "body": _error_json(_code(exc), exc.message, request_id),
            "isBase64Encoded": False}  # fmt: skip


def _audit(event: dict[str, Any], actor: str, action: str, status: int) -> None:
    outcome = "denied" if status in (401, 403) else ("success" if status < 400 else "failed")
    record = AuditEvent(
        id=new_id("aud"), at=ctl().now(), actor=actor, action=action, target=event.get("path", ""),
        outcome=outcome, status=status, request_id=(event.get("requestContext") or {}).get("requestId", ""),
    )  # fmt: skip
    _write_audit(record, action)


def audit(
    actor: str, action: str, target: str, details: dict[str, Any] | None = None, *, outcome: str = "success"
) -> None:
    """An explicit audit event of the request being handled (e.g. ``auth.lockout``), besides
    the one :func:`resolve` writes for every mutating call. Never pass a secret in ``details``."""
    request_id = ""
    with contextlib.suppress(Exception):
        request_id = app.current_event.request_context.request_id or ""
    record = AuditEvent(id=new_id("aud"), at=ctl().now(), actor=actor[:128], action=action, target=target[:256],
                        outcome=outcome, details=details or {}, request_id=request_id)  # fmt: skip
    _write_audit(record, action)


def client_address() -> str:
    """The caller's address: API Gateway's ``requestContext.identity.sourceIp`` (the socket peer in
    the embedded server), or the forwarded client when that peer is a configured trusted proxy."""
    event = app.current_event
    source = event.request_context.identity.source_ip or "unknown"
    forwarded = next((v for k, v in (event.headers or {}).items() if k.lower() == "x-forwarded-for"), None)
    return login_throttle.client_address(source, forwarded, ctl().login_throttle.trusted_proxies)


def _write_audit(record: AuditEvent, action: str) -> None:
    try:
        ctl().store.create(record)
    except LifeboatError:
        log.exception("audit write failed", extra={"action": action})


def _claimed_token(event: dict[str, Any]) -> str:
    """The actor of a refused API-token call: the token id it claims (not a secret), for the audit."""
    value = next((v for k, v in (event.get("headers") or {}).items() if k.lower() == "authorization"), "")
    token = str(value).partition(" ")[2].strip()
    if token.startswith(auth.TOKEN_PREFIX):
        token_id = token[len(auth.TOKEN_PREFIX) :].split("_", 1)[0]
        if re.fullmatch(r"[A-Za-z0-9-]{1,64}", token_id):
            return f"anonymous (token {token_id})"
    return "anonymous"


def _login_name(event: dict[str, Any]) -> str:
    try:
        return f"login:{str(json.loads(event.get('body') or '{}').get('username', ''))[:64]}"
    except (ValueError, AttributeError):
        return "anonymous"


#: powertools keeps the current event on the resolver object: one request at a time goes
#: through it (as in one Lambda environment), whatever the caller's threading (the embedded
#: server, Azure Functions' thread pool)
_resolving = threading.Lock()


def resolve(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Authenticate, authorise, dispatch and audit one API Gateway event.

    The only entry point: Lambda's handler and the embedded server both call this.
    """
    method = event.get("httpMethod", "")
    rule = _match(method, event.get("path", ""))
    if rule is None:
        with _resolving:
            return app.resolve(event, context)  # unknown route or /openapi.json, /docs
    permission = ROUTES[(method, rule)]
    actor = _login_name(event) if rule == "/auth/login" else "anonymous"
    status = 500
    token = None
    try:
        body = event.get("body") or ""
        if len(body.encode()) > MAX_BODY:
            raise InvalidInputError(f"request body larger than {MAX_BODY} bytes")
        content_type = next(
            (v for k, v in (event.get("headers") or {}).items() if k.lower() == "content-type"), ""
        )
        if body and content_type.split(";")[0].strip().lower() not in ("application/json", ""):
            raise UnsupportedMediaTypeError(f"request bodies must be application/json, not {content_type!r}")
        if permission is not PUBLIC:
            actor = _claimed_token(event)
            principal = _authenticate(event, rule, permission)
            actor = principal.subject
            principal.require(permission)
            token = _principal_var.set(principal)
        with _resolving:
            response = app.resolve(event, context)
        status = int(response["statusCode"])
        return response
    except LifeboatError as exc:
        response = _error_event(event, exc)
        status = int(response["statusCode"])
        return response
    finally:
        if token is not None:
            _principal_var.reset(token)
        if method in ("POST", "PUT", "DELETE", "PATCH"):
            _audit(event, actor, f"{method} {rule}", status)


def _stamps() -> dict[str, Any]:
    """Creation times from the control plane's clock (the one the scheduler reasons with)."""
    now = ctl().now()
    return {"created_at": now, "updated_at": now}


def public(record: Record) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude=PRIVATE_FIELDS)


def page_of(page: Any) -> dict[str, Any]:
    return {"items": [public(r) for r in page.items], "next_cursor": page.next_cursor}


def created(record: Record | dict[str, Any]) -> Response:
    body = public(record) if isinstance(record, Record) else record
    return Response(status_code=201, content_type="application/json", body=json.dumps(body, default=str))


def _idempotent(key: str | None, action: Callable[[], Response]) -> Response:
    """Replay the stored answer of an earlier call with the same Idempotency-Key."""
    if not key:
        return action()
    principal = current().subject
    record_id = "idem-" + hashlib.sha256(f"{principal}\0{key}".encode()).hexdigest()[:32]
    try:
        prior = ctl().store.get(IdempotencyRecord, record_id)
    except NotFoundError:
        prior = None
    if prior is not None:
        if prior.route != app.current_event.path:
            raise InvalidInputError("Idempotency-Key already used for another request")
        return Response(
            status_code=prior.status, content_type="application/json", body=json.dumps(prior.body)
        )
    response = action()
    body = json.loads(response.body) if isinstance(response.body, str | bytes) and response.body else {}
    try:
        ctl().store.create(IdempotencyRecord(id=record_id, principal=principal, route=app.current_event.path,
                                             status=response.status_code, body=body))  # fmt: skip
    except LifeboatError:
        pass
    return response


IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(max_length=2048)]
IdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInputError(f"{name} must be an ISO 8601 time, got {value!r}") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def openapi_json() -> str:
    return app.get_openapi_json_schema(
        title="Lifeboat API", version="0.1.0", description="Disaster recovery control plane.",
        openapi_version="3.1.0",
        security_schemes={"bearer": HTTPBearer(bearerFormat="JWT or lbt_ API token")},
        security=[{"bearer": []}],
    )  # fmt: skip
