"""Identity administration: roles, users and scoped API tokens."""

from datetime import timedelta
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body

from functions.api import schemas
from functions.api.core import Cursor, IdPath, Limit, _stamps, created, ctl, current, page_of, public, route
from shared.domain.base import new_id
from shared.domain.identity import ROLE_PERMISSIONS, ApiToken, Permission, Role, User
from shared.errors import ConflictError
from shared.services import auth, node_credentials


# --- roles, users, tokens ------------------------------------------------------------------------
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
    node_id = new_id("node") if Role.NODE in body.roles else None  # legacy: a credential for a node to come
    expires = ctl().now() + timedelta(days=body.ttl_days) if body.ttl_days else None
    if Role.ENROLLMENT in body.roles and expires is None:
        expires = ctl().now() + node_credentials.ENROLLMENT_TTL
    record, secret = auth.create_api_token(ctl().store, name=body.name, owner=current().subject, roles=body.roles,
                                           node_id=node_id, expires_at=expires)  # fmt: skip
    return created({**public(record), "secret": secret})


@route("DELETE", "/tokens/<token_id>", Permission.ADMINISTER)
def revoke_token(token_id: IdPath) -> dict[str, Any]:
    token = ctl().store.get(ApiToken, token_id)
    return public(ctl().store.update(token.model_copy(update={"revoked": True})))
