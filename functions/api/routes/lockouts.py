"""Login lockouts (administer): list who is locked out, unlock a user or a client address.

Each unlock writes an ``auth.unlock`` audit event naming the key, besides the audit event of
the request itself.
"""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body

from functions.api import schemas
from functions.api.core import IdPath, audit, ctl, current, route
from shared.domain.identity import Permission, User
from shared.domain.login_throttle import LoginThrottle
from shared.policies.login_throttle import Scope
from shared.services.login_throttle import LoginThrottler


def _throttler() -> LoginThrottler:
    return LoginThrottler(ctl().store, ctl().login_throttle, ctl().now())


def _lockout(record: LoginThrottle) -> dict[str, Any]:
    now = ctl().now()
    until = record.locked_until or now
    return {"scope": str(record.scope), "key": record.key, "failures": record.failures,
            "locked_until": until.isoformat(), "retry_after": max(0, int((until - now).total_seconds()))}  # fmt: skip


def _unlock(scope: Scope, key: str) -> dict[str, Any]:
    cleared = _throttler().clear(scope, key)
    audit(
        current().subject,
        "auth.unlock",
        f"{scope}:{key}",
        {"scope": str(scope), "key": key, "cleared": cleared},
    )
    return {"scope": str(scope), "key": key, "cleared": cleared}


@route("GET", "/auth/lockouts", Permission.ADMINISTER)
def list_lockouts() -> dict[str, Any]:
    """Usernames and client addresses locked out of login now, soonest unlock first."""
    return {"items": [_lockout(r) for r in _throttler().lockouts()]}


@route("POST", "/auth/lockouts/clear", Permission.ADMINISTER)
def clear_lockout(body: Annotated[schemas.LockoutClearIn, Body()]) -> dict[str, Any]:
    """Clear the failed-login counter of one username (known or not) or one client address."""
    if body.username is not None:
        return _unlock(Scope.USER, body.username)
    return _unlock(Scope.ADDRESS, str(body.address))


@route("POST", "/users/<user_id>/unlock", Permission.ADMINISTER)
def unlock_user(user_id: IdPath) -> dict[str, Any]:
    """Clear a user's failed-login counter (lockout and backoff); 404 for an unknown user."""
    user = ctl().store.get(User, user_id)
    return {**_unlock(Scope.USER, user.username), "user_id": user.id}
