"""Liveness and the caller's session: health (public), login, who am I."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body

from functions.api import schemas
from functions.api.core import PUBLIC, ctl, current, route
from shared.domain.identity import ROLE_PERMISSIONS, Permission
from shared.services import auth


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
