"""Authentication: local users (argon2id), short-lived signed JWTs, scoped API tokens.

In AWS the same :class:`Principal` is built from the Cognito claims that the API Gateway
authorizer passes on (``cognito:username`` and ``cognito:groups`` as roles); everything
after authentication is identical.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared.domain.base import new_id
from shared.domain.identity import ApiToken, Permission, Role, User, allowed
from shared.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from shared.ports.metadata_store import MetadataStore

ACCESS_TOKEN_TTL = timedelta(minutes=30)
JWT_ALGORITHM = "HS256"
TOKEN_PREFIX = "lbt_"
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user or a token, and the roles it acts with."""

    subject: str
    roles: tuple[Role, ...]
    token_id: str | None = None
    node_id: str | None = None

    def require(self, permission: Permission) -> None:
        if not allowed(self.roles, permission):
            raise PermissionDeniedError(
                f"{self.subject} ({', '.join(self.roles) or 'no role'}) may not {permission}",
                subject=self.subject,
                permission=str(permission),
            )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _find_user(store: MetadataStore, username: str) -> User | None:
    page = store.query(User, where={"username": username}, limit=1)
    return page.items[0] if page.items else None


def login(
    store: MetadataStore, username: str, password: str, *, secret: str, now: datetime
) -> tuple[str, int]:
    """Check a user's password; return ``(jwt, lifetime seconds)``. One error for every failure."""
    user = _find_user(store, username)
    # Verify against a dummy hash when the user is unknown so timing does not reveal it.
    ok = verify_password(user.password_hash if user else _dummy_hash(), password)
    if user is None or not ok or user.disabled:
        raise AuthenticationError("invalid username or password")
    claims = {
        "sub": user.username,
        "roles": [str(r) for r in user.roles],
        "iat": int(now.timestamp()),
        "exp": int((now + ACCESS_TOKEN_TTL).timestamp()),
        "iss": "lifeboat",
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM), int(ACCESS_TOKEN_TTL.total_seconds())


def principal_from_jwt(token: str, *, secret: str, now: datetime) -> Principal:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            issuer="lifeboat",
            options={
                "require": ["exp", "sub", "iss"],
                "verify_exp": False,
                "verify_iat": False,
            },  # our clock decides
        )
    except jwt.PyJWTError as exc:
        raise AuthenticationError("invalid access token") from exc
    if claims["exp"] <= now.timestamp():
        raise AuthenticationError("access token expired: log in again")
    return Principal(subject=str(claims["sub"]), roles=_roles(claims.get("roles", [])))


def principal_from_claims(claims: dict[str, object]) -> Principal:
    """Cognito claims from the API Gateway authorizer (``cognito:groups`` are our roles)."""
    groups = claims.get("cognito:groups") or []
    if isinstance(groups, str):
        groups = [g for g in groups.replace(",", " ").split() if g]
    subject = claims.get("cognito:username") or claims.get("username") or claims.get("sub")
    if not subject:
        raise AuthenticationError("authorizer claims carry no subject")
    return Principal(subject=str(subject), roles=_roles(groups))  # type: ignore[arg-type]


def authorizer_context(principal: Principal) -> dict[str, str]:
    """The context API Gateway's node authorizer passes on (values must be strings)."""
    return {
        "subject": principal.subject,
        "tokenId": principal.token_id or "",
        "nodeId": principal.node_id or "",
        "roles": ",".join(principal.roles),
    }


def principal_from_authorizer(context: dict[str, object]) -> Principal:
    """The :class:`Principal` the node authorizer verified (see :func:`authorizer_context`).

    Only trust this in Lambda behind API Gateway, which alone sets ``requestContext.authorizer``."""
    token_id = str(context.get("tokenId") or "")
    if not token_id:
        raise AuthenticationError("authorizer context carries no token")
    return Principal(
        subject=str(context.get("subject") or f"token:{token_id}"),
        roles=_roles([r for r in str(context.get("roles") or "").split(",") if r]),
        token_id=token_id,
        node_id=str(context.get("nodeId") or "") or None,
    )


def _roles(names: list[str]) -> tuple[Role, ...]:
    return tuple(Role(n) for n in names if n in Role._value2member_map_)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_token(
    store: MetadataStore,
    *,
    name: str,
    owner: str,
    roles: list[Role],
    node_id: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Create a token; return the record and the secret, which is shown once and never stored."""
    token_id = new_id("tok")
    secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    record = ApiToken(
        id=token_id, name=name, owner=owner, roles=roles, secret_hash=_digest(secret), node_id=node_id,
        expires_at=expires_at,
    )  # fmt: skip
    return store.create(record), secret


def principal_from_api_token(store: MetadataStore, secret: str, *, now: datetime) -> Principal:
    try:
        token_id = secret[len(TOKEN_PREFIX) :].split("_", 1)[0]  # the secret part may hold "_"
        record = store.get(ApiToken, token_id)
    except (NotFoundError, IndexError, ValueError) as exc:
        raise AuthenticationError("invalid API token") from exc
    if not hmac.compare_digest(record.secret_hash, _digest(secret)) or record.revoked:
        raise AuthenticationError("invalid API token")
    if record.expires_at is not None and record.expires_at <= now:
        raise AuthenticationError("API token expired")
    return Principal(
        subject=f"token:{record.name}", roles=tuple(record.roles), token_id=record.id, node_id=record.node_id
    )


def authenticate_bearer(store: MetadataStore, bearer: str, *, secret: str, now: datetime) -> Principal:
    """An ``Authorization: Bearer`` value: an API token (``lbt_…``) or a JWT."""
    if bearer.startswith(TOKEN_PREFIX):
        return principal_from_api_token(store, bearer, now=now)
    return principal_from_jwt(bearer, secret=secret, now=now)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_hex(16))
