"""Liveness and the caller's session: health (public), login, who am I."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body

from functions.api import schemas
from functions.api.core import PUBLIC, audit, client_address, ctl, current, route
from shared.domain.identity import ROLE_PERMISSIONS, Permission
from shared.errors import AuthenticationError
from shared.services import auth
from shared.services.login_throttle import LoginThrottler


# --- public ----------------------------------------------------------------------------------
@route("GET", "/health", PUBLIC)
def health() -> dict[str, Any]:
    return {"status": "ok", "time": ctl().now().isoformat()}


@route("POST", "/auth/login", PUBLIC, errors=(401, 429))
def login(body: Annotated[schemas.LoginIn, Body()]) -> dict[str, Any]:
    """Trade a password for a JWT. Throttled per username and per client address
    (docs/login-throttling.md): while either must wait, 429 with ``Retry-After``, whatever the password."""
    now = ctl().now()
    address = client_address()
    throttle = LoginThrottler(ctl().store, ctl().login_throttle, now)
    throttle.check(body.username, address)
    try:
        token, ttl = auth.login(ctl().store, body.username, body.password, secret=ctl().jwt_secret, now=now)
    except AuthenticationError:
        for lockout in throttle.failed(body.username, address):
            details = {"scope": str(lockout.scope), "key": lockout.key, "until": lockout.until.isoformat()}
            audit(f"login:{body.username[:64]}", "auth.lockout", f"{lockout.scope}:{lockout.key}", details,
                  outcome="denied")  # fmt: skip
        raise
    throttle.succeeded(body.username)
    return {"access_token": token, "token_type": "Bearer", "expires_in": ttl}


@route("GET", "/auth/me", Permission.READ)
def me() -> dict[str, Any]:
    p = current()
    return {"subject": p.subject, "roles": list(p.roles),
            "permissions": sorted({str(x) for r in p.roles for x in ROLE_PERMISSIONS[r]})}  # fmt: skip
