"""The Lifeboat REST API: one aws-lambda-powertools resolver for Lambda and the embedded server.

Every route is declared with :func:`route`, which records the permission it needs (the RBAC
matrix test enumerates :data:`ROUTES`). :func:`resolve` is the one entry point: it
authenticates the caller, checks the permission and writes an audit event for every
mutating call, whatever its outcome, before powertools validates and dispatches. Handlers
are thin: parse (powertools + pydantic), call ``shared.services``, answer. Every error has
one shape: ``{"error": {"code", "message", "request_id", "details"}}``.
"""

import contextlib
import contextvars
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from pydantic import TypeAdapter, ValidationError

from functions.api import schemas
from functions.api.report_html import render_report_html
from functions.api.schemas import PRIVATE_FIELDS
from shared.domain.audit import Alert, AuditEvent, IdempotencyRecord
from shared.domain.base import Record, new_id
from shared.domain.identity import ROLE_PERMISSIONS, ApiToken, Permission, Role, User
from shared.domain.inventory import Node, Site
from shared.domain.jobs import Job, JobProgress, JobState
from shared.domain.plans import PlanState, ProtectionPlan
from shared.domain.points import RecoveryPoint
from shared.domain.recovery import RecoveryMode, RecoveryReport
from shared.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    LifeboatError,
    NotFoundError,
    PermissionDeniedError,
    UnsupportedMediaTypeError,
    http_status_for,
)
from shared.policies.scheduling import RpoStatus, rpo_status
from shared.services import auth, completion, jobs, plans, recovery
from shared.services.context import Control

log = logging.getLogger("lifeboat.api")
MAX_BODY = 1 << 20  # API Gateway would cut at 10 MiB; we refuse far earlier

app = APIGatewayRestResolver(enable_validation=True)
_state: dict[str, Control] = {}
PUBLIC = None  # permission of routes that need no authentication

#: (method, rule) -> permission; None = public
ROUTES: dict[tuple[str, str], Permission | None] = {}


def configure(ctl: Control) -> None:
    """Wire the ports (called once by each composition root)."""
    _state["ctl"] = ctl


def ctl() -> Control:
    return _state["ctl"]


# --- errors --------------------------------------------------------------------------------
def _error(status: int, code: str, message: str, details: Any = None) -> Response:
    request_id = ""
    with contextlib.suppress(Exception):
        request_id = app.current_event.request_context.request_id or ""
    return Response(
        status_code=status,
        content_type="application/json",
        body=_error_json(code, message, request_id, details),
    )


def _error_json(code: str, message: str, request_id: str, details: Any = None) -> str:
    return json.dumps(
        {"error": {"code": code, "message": message, "request_id": request_id, "details": details}},
        default=str,
    )


def _code(exc: LifeboatError) -> str:
    return type(exc).__name__.removesuffix("Error") or "Error"


@app.exception_handler(LifeboatError)
def _lifeboat_error(exc: LifeboatError) -> Response:
    return _error(http_status_for(exc), _code(exc), exc.message)


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


_ERRORS = {
    400: "Malformed request", 401: "Authentication required or invalid", 403: "The caller's roles do not allow this",
    404: "Not found", 409: "Conflict: the record changed, exists, or is in the wrong state",
    413: "Body too large", 415: "Body is not JSON", 422: "Request failed validation",
}  # fmt: skip


def _documented_errors(permission: Permission | None, method: str) -> dict[int, Any]:
    codes = [400, 404, 413, 415, 422, 409] if method != "GET" else [400, 404, 422]
    if permission is not PUBLIC:
        codes += [401, 403]
    success = {"GET": [200], "POST": [200, 201, 204], "PUT": [200], "DELETE": [200, 204]}[method]
    documented: dict[int, Any] = {c: {"description": "Success"} for c in success}
    for c in sorted(codes):
        documented[c] = {
            "description": _ERRORS[c],
            "content": {"application/json": {"model": schemas.ErrorResponse}},
        }
    return documented


def route(method: str, rule: str, permission: Permission | None, **kwargs: Any) -> Callable:
    """Register a route and the permission it needs (see :func:`resolve`)."""
    ROUTES[(method, rule)] = permission
    _COMPILED.append((method, re.compile("^" + re.sub(r"<[^>]+>", "[^/]+", rule) + "$"), rule))
    responses = {**_documented_errors(permission, method), **kwargs.pop("responses", {})}

    def decorate(fn: Callable) -> Callable:
        return app.route(rule, method=method, responses=responses, **kwargs)(fn)

    return decorate


def _match(method: str, path: str) -> str | None:
    for m, pattern, rule in _COMPILED:
        if m == method and pattern.match(path):
            return rule
    return None


def _authenticate(event: dict[str, Any]) -> auth.Principal:
    claims = ((event.get("requestContext") or {}).get("authorizer") or {}).get("claims") or {}
    if claims:
        return auth.principal_from_claims(claims)
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    scheme, _, value = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationError("authentication required: send Authorization: Bearer <token>")
    return auth.authenticate_bearer(ctl().store, value.strip(), secret=ctl().jwt_secret, now=ctl().now())


def _error_event(event: dict[str, Any], exc: LifeboatError) -> dict[str, Any]:
    request_id = (event.get("requestContext") or {}).get("requestId", "")
    return {"statusCode": http_status_for(exc), "headers": {"Content-Type": "application/json"},
            "multiValueHeaders": {}, "body": _error_json(_code(exc), exc.message, request_id),
            "isBase64Encoded": False}  # fmt: skip


def _audit(event: dict[str, Any], actor: str, action: str, status: int) -> None:
    outcome = "denied" if status in (401, 403) else ("success" if status < 400 else "failed")
    record = AuditEvent(
        id=new_id("aud"), at=ctl().now(), actor=actor, action=action, target=event.get("path", ""),
        outcome=outcome, status=status, request_id=(event.get("requestContext") or {}).get("requestId", ""),
    )  # fmt: skip
    try:
        ctl().store.create(record)
    except LifeboatError:
        log.exception("audit write failed", extra={"action": action})


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
            principal = _authenticate(event)
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


# --- public ----------------------------------------------------------------------------------
@route("GET", "/health", PUBLIC)
def health() -> dict[str, Any]:
    return {"status": "ok", "time": ctl().now().isoformat()}


@route("POST", "/auth/login", PUBLIC)
def login(body: Annotated[schemas.LoginIn, Body()]) -> dict[str, Any]:
    token, ttl = auth.login(
        ctl().store, body.username, body.password, secret=ctl().jwt_secret, now=ctl().now()
    )
    return {"access_token": token, "token_type": "Bearer", "expires_in": ttl}


@route("GET", "/auth/me", Permission.READ)
def me() -> dict[str, Any]:
    p = current()
    return {"subject": p.subject, "roles": list(p.roles),
            "permissions": sorted({str(x) for r in p.roles for x in ROLE_PERMISSIONS[r]})}  # fmt: skip


# --- sites -----------------------------------------------------------------------------------
@route("GET", "/sites", Permission.READ)
def list_sites(limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    return page_of(ctl().store.query(Site, limit=limit, cursor=cursor))


@route("POST", "/sites", Permission.OPERATE)
def create_site(
    body: Annotated[schemas.SiteIn, Body()],
):  # -> Response (powertools reads annotations as schemas)
    data = body.model_dump(exclude_none=False)
    data["id"] = data.get("id") or new_id("site")
    return created(ctl().store.create(Site(**data, **_stamps())))


@route("GET", "/sites/<site_id>", Permission.READ)
def get_site(site_id: IdPath) -> dict[str, Any]:
    return public(ctl().store.get(Site, site_id))


@route("PUT", "/sites/<site_id>", Permission.OPERATE)
def update_site(site_id: IdPath, body: Annotated[schemas.SiteUpdate, Body()]) -> dict[str, Any]:
    site = ctl().store.get(Site, site_id)
    return public(ctl().store.update(Site(**{**site.model_dump(), **body.model_dump()})))  # re-validated


@route("DELETE", "/sites/<site_id>", Permission.OPERATE)
def delete_site(site_id: IdPath):  # -> Response (powertools reads annotations as schemas)
    ctl().store.delete(Site, site_id)
    return Response(status_code=204, content_type="application/json", body="")


# --- nodes -----------------------------------------------------------------------------------
@route("GET", "/nodes", Permission.READ)
def list_nodes(limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    page = ctl().store.query(Node, limit=limit, cursor=cursor)
    now = ctl().now()
    return {
        "items": [{**public(n), "online": n.online(now)} for n in page.items],
        "next_cursor": page.next_cursor,
    }


@route("GET", "/nodes/<node_id>", Permission.READ)
def get_node(node_id: IdPath) -> dict[str, Any]:
    n = ctl().store.get(Node, node_id)
    return {**public(n), "online": n.online(ctl().now())}


@route("DELETE", "/nodes/<node_id>", Permission.ADMINISTER)
def delete_node(node_id: IdPath):  # -> Response (powertools reads annotations as schemas)
    ctl().store.delete(Node, node_id)
    return Response(status_code=204, content_type="application/json", body="")


@route("POST", "/nodes/register", Permission.NODE_WORK)
def register_node(
    body: Annotated[schemas.NodeRegisterIn, Body()],
):  # -> Response (powertools reads annotations as schemas)
    p = current()
    ctl().store.get(Site, body.site_id)
    node_id = p.node_id or new_id("node")
    try:
        node = ctl().store.get(Node, node_id)
        node = ctl().store.update(node.model_copy(update={**body.model_dump(), "heartbeat_at": ctl().now()}))
    except NotFoundError:
        node = ctl().store.create(Node(id=node_id, heartbeat_at=ctl().now(), **body.model_dump()))
    return created(node)


def _own_node(node_id: str) -> Node:
    p = current()
    if p.node_id is not None and p.node_id != node_id:
        raise PermissionDeniedError(f"this token belongs to node {p.node_id}, not {node_id}")
    return ctl().store.get(Node, node_id)


@route("POST", "/nodes/<node_id>/heartbeat", Permission.NODE_WORK)
def heartbeat(node_id: IdPath, body: Annotated[schemas.HeartbeatIn, Body()]) -> dict[str, Any]:
    node = _own_node(node_id)
    node = ctl().store.update(
        node.model_copy(update={"heartbeat_at": ctl().now(), "running_jobs": body.running_jobs})
    )
    return public(node)


@route("POST", "/nodes/<node_id>/claim", Permission.NODE_WORK)
def claim_job(node_id: IdPath):  # -> Response (powertools reads annotations as schemas)
    node = _own_node(node_id)
    job = jobs.claim(ctl(), node.id)
    if job is None:
        return Response(status_code=204, content_type="application/json", body="")
    return Response(status_code=200, content_type="application/json", body=json.dumps(public(job)))


# --- plans -----------------------------------------------------------------------------------
@route("GET", "/plans", Permission.READ)
def list_plans(
    limit: Limit = 100, cursor: Cursor = None, state: Annotated[PlanState | None, Query()] = None
) -> dict[str, Any]:
    where = {"state": str(state)} if state else None
    return page_of(ctl().store.query(ProtectionPlan, where=where, limit=limit, cursor=cursor))


@route("POST", "/plans", Permission.OPERATE)
def create_plan(
    body: Annotated[schemas.PlanIn, Body()],
):  # -> Response (powertools reads annotations as schemas)
    data = body.model_dump()
    data["id"] = data.get("id") or new_id("plan")
    plan = ProtectionPlan(**data, **_stamps())  # the plan's own rules first, then its references
    for site_id in (plan.source_site_id, plan.target_site_id):
        ctl().store.get(Site, site_id)
    return created(ctl().store.create(plan))


@route("GET", "/plans/<plan_id>", Permission.READ)
def get_plan(plan_id: IdPath) -> dict[str, Any]:
    return public(ctl().store.get(ProtectionPlan, plan_id))


@route("PUT", "/plans/<plan_id>", Permission.OPERATE)
def update_plan(plan_id: IdPath, body: Annotated[schemas.PlanUpdate, Body()]) -> dict[str, Any]:
    plan = ctl().store.get(ProtectionPlan, plan_id)
    changed = ProtectionPlan(**{**plan.model_dump(), **body.model_dump()})
    return public(ctl().store.update(changed))


@route("DELETE", "/plans/<plan_id>", Permission.OPERATE)
def delete_plan(plan_id: IdPath):  # -> Response (powertools reads annotations as schemas)
    ctl().store.delete(ProtectionPlan, plan_id)
    return Response(status_code=204, content_type="application/json", body="")


@route("POST", "/plans/<plan_id>/protect", Permission.OPERATE)
def protect_plan(plan_id: IdPath) -> dict[str, Any]:
    return public(plans.protect(ctl(), plan_id))


@route("POST", "/plans/<plan_id>/pause", Permission.OPERATE)
def pause_plan(plan_id: IdPath) -> dict[str, Any]:
    return public(plans.set_state(ctl(), plan_id, PlanState.PAUSED, allowed_from={PlanState.ACTIVE}))


@route("POST", "/plans/<plan_id>/resume", Permission.OPERATE)
def resume_plan(plan_id: IdPath) -> dict[str, Any]:
    return public(plans.set_state(ctl(), plan_id, PlanState.ACTIVE, allowed_from={PlanState.PAUSED}))


@route("POST", "/plans/<plan_id>/replicate-now", Permission.OPERATE)
def replicate_now(
    plan_id: IdPath, idempotency_key: IdemKey = None
):  # -> Response (powertools reads annotations as schemas)
    return _idempotent(
        idempotency_key, lambda: created(plans.replicate_now(ctl(), plan_id, actor=current().subject))
    )


@route("POST", "/plans/<plan_id>/recover", Permission.OPERATE)
def recover_plan(
    plan_id: IdPath, body: Annotated[schemas.RecoverIn, Body()], idempotency_key: IdemKey = None
):  # -> Response (powertools reads annotations as schemas)
    def start() -> Response:
        job = recovery.start(
            ctl(), plan_id, mode=RecoveryMode(body.mode), point_time=_time(body.point_time, "point_time"),
            actor=current().subject,
        )  # fmt: skip
        return created(job)

    return _idempotent(idempotency_key, start)


@route("POST", "/plans/<plan_id>/cleanup-test", Permission.OPERATE)
def cleanup_test(
    plan_id: IdPath, idempotency_key: IdemKey = None
):  # -> Response (powertools reads annotations as schemas)
    return _idempotent(
        idempotency_key, lambda: created(recovery.start_cleanup(ctl(), plan_id, actor=current().subject))
    )


# --- recovery points -------------------------------------------------------------------------
def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInputError(f"{name} must be an ISO 8601 time, got {value!r}") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@route("GET", "/points", Permission.READ)
def list_points(
    plan_id: Annotated[str | None, Query(max_length=128)] = None,
    machine_id: Annotated[str | None, Query(max_length=128)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[str | None, Query(max_length=64)] = None,
    newest_first: bool = True,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    where = {k: v for k, v in (("plan_id", plan_id), ("machine_id", machine_id)) if v}
    page = ctl().store.query(
        RecoveryPoint, where=where or None, after=_time(after, "after"), before=_time(before, "before"),
        descending=newest_first, limit=limit, cursor=cursor,
    )  # fmt: skip
    return page_of(page)


@route("GET", "/points/<point_id>", Permission.READ)
def get_point(point_id: IdPath) -> dict[str, Any]:
    return public(ctl().store.get(RecoveryPoint, point_id))


# --- jobs ------------------------------------------------------------------------------------
@route("GET", "/jobs", Permission.READ)
def list_jobs(
    state: Annotated[JobState | None, Query()] = None,
    plan_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    where = {k: str(v) for k, v in (("state", state), ("plan_id", plan_id)) if v}
    return page_of(ctl().store.query(Job, where=where or None, descending=True, limit=limit, cursor=cursor))


@route("GET", "/jobs/<job_id>", Permission.READ)
def get_job(job_id: IdPath) -> dict[str, Any]:
    return public(ctl().store.get(Job, job_id))


@route("POST", "/jobs/<job_id>/cancel", Permission.OPERATE)
def cancel_job(job_id: IdPath) -> dict[str, Any]:
    return public(jobs.cancel(ctl(), job_id))


@route("POST", "/jobs/<job_id>/progress", Permission.NODE_WORK)
def job_progress(job_id: IdPath, body: Annotated[schemas.ProgressIn, Body()]) -> dict[str, Any]:
    return public(jobs.report_progress(ctl(), current(), job_id, JobProgress(**body.model_dump())))


@route("POST", "/jobs/<job_id>/complete", Permission.NODE_WORK)
def job_complete(job_id: IdPath, body: Annotated[schemas.CompleteIn, Body()]) -> dict[str, Any]:
    done = completion.complete(
        ctl(), current(), job_id, state=JobState(body.state), result=body.result, error=body.error
    )
    return public(done)


# --- users, roles, tokens, audit -----------------------------------------------------------------
@route("GET", "/roles", Permission.READ)
def list_roles() -> dict[str, Any]:
    return {
        "items": [
            {"role": str(r), "permissions": sorted(str(p) for p in ps)} for r, ps in ROLE_PERMISSIONS.items()
        ]
    }


@route("GET", "/users", Permission.ADMINISTER)
def list_users(limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    return page_of(ctl().store.query(User, limit=limit, cursor=cursor))


@route("POST", "/users", Permission.ADMINISTER)
def create_user(
    body: Annotated[schemas.UserIn, Body()],
):  # -> Response (powertools reads annotations as schemas)
    # The id derives from the username, so the store's create refuses a second user of that name.
    if ctl().store.query(User, where={"username": body.username}, limit=1).items:
        raise ConflictError(f"user {body.username} already exists")
    user = User(id=f"user-{body.username}"[:128], username=body.username, display_name=body.display_name,
                password_hash=auth.hash_password(body.password), roles=body.roles, **_stamps())  # fmt: skip
    return created(ctl().store.create(user))


@route("GET", "/users/<user_id>", Permission.ADMINISTER)
def get_user(user_id: IdPath) -> dict[str, Any]:
    return public(ctl().store.get(User, user_id))


@route("PUT", "/users/<user_id>", Permission.ADMINISTER)
def update_user(user_id: IdPath, body: Annotated[schemas.UserUpdate, Body()]) -> dict[str, Any]:
    user = ctl().store.get(User, user_id)
    changes: dict[str, Any] = body.model_dump(exclude={"password"})
    if body.password:
        changes["password_hash"] = auth.hash_password(body.password)
    return public(ctl().store.update(user.model_copy(update=changes)))


@route("DELETE", "/users/<user_id>", Permission.ADMINISTER)
def delete_user(user_id: IdPath):  # -> Response (powertools reads annotations as schemas)
    ctl().store.delete(User, user_id)
    return Response(status_code=204, content_type="application/json", body="")


@route("GET", "/tokens", Permission.ADMINISTER)
def list_tokens(limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    return page_of(ctl().store.query(ApiToken, limit=limit, cursor=cursor))


@route("POST", "/tokens", Permission.ADMINISTER)
def create_token(
    body: Annotated[schemas.TokenIn, Body()],
):  # -> Response (powertools reads annotations as schemas)
    """Create a scoped API token; the secret is in this answer only."""
    node_id = new_id("node") if Role.NODE in body.roles else None
    expires = ctl().now() + timedelta(days=body.ttl_days) if body.ttl_days else None
    record, secret = auth.create_api_token(ctl().store, name=body.name, owner=current().subject, roles=body.roles,
                                           node_id=node_id, expires_at=expires)  # fmt: skip
    return created({**public(record), "secret": secret})


@route("DELETE", "/tokens/<token_id>", Permission.ADMINISTER)
def revoke_token(token_id: IdPath) -> dict[str, Any]:
    token = ctl().store.get(ApiToken, token_id)
    return public(ctl().store.update(token.model_copy(update={"revoked": True})))


@route("GET", "/audit", Permission.ADMINISTER)
def list_audit(
    actor: Annotated[str | None, Query(max_length=128)] = None, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    where = {"actor": actor} if actor else None
    return page_of(ctl().store.query(AuditEvent, where=where, descending=True, limit=limit, cursor=cursor))


# --- reports and alerts ----------------------------------------------------------------------
@route("GET", "/alerts", Permission.READ)
def list_alerts(
    state: Annotated[str | None, Query(pattern=r"^(open|resolved)$")] = "open",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    where = {"state": state} if state else None
    return page_of(ctl().store.query(Alert, where=where, descending=True, limit=limit, cursor=cursor))


@route("GET", "/reports/rpo", Permission.READ)
def rpo_report() -> dict[str, Any]:
    from shared.services.scheduler import load_state

    state = load_state(ctl())
    statuses = rpo_status(state.plans, state.last_points, ctl().now())
    return {
        "generated_at": ctl().now().isoformat(),
        "plans": TypeAdapter(list[RpoStatus]).dump_python(statuses, mode="json"),
    }


@route("GET", "/recoveries", Permission.READ)
def list_recoveries(
    plan_id: Annotated[str | None, Query(max_length=128)] = None,
    mode: Annotated[RecoveryMode | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Recovery reports, newest first."""
    where = {k: str(v) for k, v in (("plan_id", plan_id), ("mode", mode)) if v}
    page = ctl().store.query(RecoveryReport, where=where or None, descending=True, limit=limit, cursor=cursor)
    return page_of(page)


@route("GET", "/recoveries/<report_id>", Permission.READ)
def get_recovery(report_id: IdPath) -> dict[str, Any]:
    """One recovery run's report: per machine and per stage timings, validation evidence, errors."""
    return public(recovery.report_for(ctl(), report_id))


@route("GET", "/recoveries/<report_id>/html", Permission.READ)
def get_recovery_html(report_id: IdPath):  # -> Response (powertools reads annotations as schemas)
    """The same report as a self-contained HTML page (download it with Accept: text/html)."""
    page = render_report_html(recovery.report_for(ctl(), report_id))
    return Response(
        status_code=200, content_type="text/html; charset=utf-8", body=page,
        headers={"Content-Disposition": f'attachment; filename="recovery-{report_id}.html"'},
    )  # fmt: skip


def openapi_json() -> str:
    return app.get_openapi_json_schema(
        title="Lifeboat API", version="0.1.0", description="Disaster recovery control plane.",
        openapi_version="3.1.0",
        security_schemes={"bearer": HTTPBearer(bearerFormat="JWT or lbt_ API token")},
        security=[{"bearer": []}],
    )  # fmt: skip


@app.get("/openapi.json", include_in_schema=False)
def _openapi():  # -> Response (powertools reads annotations as schemas)
    return Response(status_code=200, content_type="application/json", body=openapi_json())


ROUTES[("GET", "/openapi.json")] = PUBLIC


@app.get("/docs", include_in_schema=False)
def _docs():  # -> Response (powertools reads annotations as schemas)
    """The API reference as one self-contained page (no external assets: works offline)."""
    import html

    spec = json.loads(openapi_json())
    rows = []
    for path, ops in sorted(spec["paths"].items()):
        for method, op in ops.items():
            perm = ROUTES.get((method.upper(), path.replace("{", "<").replace("}", ">")), "?")
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op.get('summary', ''))}</td><td>{html.escape(str(perm or 'public'))}</td></tr>"
            )
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Lifeboat API</title>"
        "<style>body{font:15px system-ui;margin:2em}td{padding:.2em .8em;border-bottom:1px solid #ddd}</style>"
        "<h1>Lifeboat API</h1><p>Machine-readable: <a href=/openapi.json>/openapi.json</a> (OpenAPI 3.1).</p>"
        "<table><tr><th>method</th><th>path</th><th>summary</th><th>permission</th></tr>"
        + "".join(rows)
        + "</table>"
    )
    return Response(status_code=200, content_type="text/html; charset=utf-8", body=page)


ROUTES[("GET", "/docs")] = PUBLIC
