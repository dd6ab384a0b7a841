"""Users, roles, API tokens and the permission table that RBAC enforces on every route."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar

from pydantic import Field

from shared.domain.base import Name, Record, Slug


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    NODE = "node"


class Permission(StrEnum):
    READ = "read"  # inventory, plans, points, jobs, reports
    OPERATE = "operate"  # plans and sites: create/change; actions: replicate, recover, cancel
    ADMINISTER = "administer"  # users, roles, tokens, audit log, nodes' tokens
    NODE_WORK = "node-work"  # register, heartbeat, claim jobs, report progress and points


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset({Permission.READ, Permission.OPERATE, Permission.ADMINISTER}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.OPERATE}),
    Role.VIEWER: frozenset({Permission.READ}),
    Role.NODE: frozenset({Permission.NODE_WORK}),
}


def allowed(roles: list[Role] | tuple[Role, ...], permission: Permission) -> bool:
    return any(permission in ROLE_PERMISSIONS[r] for r in roles)


class User(Record):
    kind: ClassVar[str] = "user"
    indexed: ClassVar[tuple[str, ...]] = ("username",)

    username: Slug
    display_name: Name | None = None
    password_hash: str = Field(repr=False, description="argon2id hash; never returned by the API.")
    roles: list[Role] = Field(min_length=1)
    disabled: bool = False


class ApiToken(Record):
    """A scoped bearer token (e.g. for a node). Only its hash is stored; the secret is shown once."""

    kind: ClassVar[str] = "token"
    indexed: ClassVar[tuple[str, ...]] = ("owner",)

    name: Name
    owner: str = Field(max_length=128, description="The user who created it.")
    roles: list[Role] = Field(min_length=1)
    secret_hash: str = Field(repr=False)
    node_id: Slug | None = None
    expires_at: datetime | None = None
    revoked: bool = False
