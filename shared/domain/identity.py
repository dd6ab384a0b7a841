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
    NODE = "node"  # a node's own credential (bound to its node id)
    ENROLLMENT = "enrollment"  # registers new nodes, nothing else


class Permission(StrEnum):
    READ = "read"  # inventory, plans, points, jobs, reports
    OPERATE = "operate"  # plans and sites: create/change; actions: replicate, recover, cancel
    ADMINISTER = "administer"  # users, roles, tokens, audit log, nodes' tokens
    NODE_WORK = "node-work"  # heartbeat, claim jobs, report progress and points, rotate its credential
    NODE_ENROLL = "node-enroll"  # register a node (an enrollment token) or re-register one's own


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset({Permission.READ, Permission.OPERATE, Permission.ADMINISTER}),
    Role.OPERATOR: frozenset({Permission.READ, Permission.OPERATE}),
    Role.VIEWER: frozenset({Permission.READ}),
    Role.NODE: frozenset({Permission.NODE_WORK, Permission.NODE_ENROLL}),
    Role.ENROLLMENT: frozenset({Permission.NODE_ENROLL}),
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


#: the permissions a node's calls need: the routes API Gateway's node authorizer guards
NODE_PERMISSIONS = frozenset({Permission.NODE_WORK, Permission.NODE_ENROLL})


class ApiToken(Record):
    """A scoped bearer token. Only its hash is stored; the secret is shown once.

    Two kinds serve nodes (docs/node-authentication.md): an *enrollment* token
    (role ``enrollment``, no ``node_id``, expiring) may only register new nodes, and a node
    *credential* (role ``node``, ``node_id`` set) is issued by registration and acts for that
    node only. A credential being rotated out keeps working until ``expires_at`` (the grace)."""

    kind: ClassVar[str] = "token"
    indexed: ClassVar[tuple[str, ...]] = ("owner", "node_id")

    name: Name
    owner: str = Field(max_length=128, description="The user who created it.")
    roles: list[Role] = Field(min_length=1)
    secret_hash: str = Field(repr=False)
    node_id: Slug | None = None
    expires_at: datetime | None = None
    revoked: bool = False
