"""Node authentication: enrollment, per-node credentials, rotation and revocation.

Contract (docs/node-authentication.md):

* An admin creates an *enrollment* token (role ``enrollment``, expiring, revocable; one may
  serve a whole autoscaling group). It MUST only register new nodes.
* Registering with an enrollment token creates the node and issues its *credential* (role
  ``node``, bound to the node id); the secret is answered once, only its hash is stored.
  Registering with a credential re-registers that credential's own node (details updated,
  no new credential).
* Rotation issues a new credential and ends the node's others after ``grace`` (0: at once),
  so a node whose answer was lost in transit can still retry with its old secret.
* Revocation revokes every credential of the node and marks the node revoked: its next call
  is refused (401); it can come back only by enrolling again, as a new node.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.domain.base import new_id
from shared.domain.identity import ApiToken, Role
from shared.domain.inventory import Node, Site
from shared.errors import AuthenticationError, InvalidStateError, NotFoundError, PermissionDeniedError
from shared.ports.metadata_store import every
from shared.services import auth
from shared.services.auth import Principal
from shared.services.context import Control

#: how long a rotated-out credential keeps working (a lost answer can be retried)
ROTATION_GRACE = timedelta(minutes=5)
#: an enrollment token's lifetime unless the admin chooses one
ENROLLMENT_TTL = timedelta(days=7)


def issue(ctl: Control, node: Node, *, issued_by: str) -> tuple[ApiToken, str]:
    """A new credential for ``node``; the secret is returned once and never stored."""
    return auth.create_api_token(
        ctl.store, name=f"node {node.name}"[:128], owner=issued_by[:128], roles=[Role.NODE], node_id=node.id
    )


def register(
    ctl: Control, principal: Principal, details: dict[str, Any]
) -> tuple[Node, ApiToken | None, str | None]:
    """Register a node; returns ``(node, credential, secret)`` (no credential on re-registration).

    An enrollment token creates a new node; a node credential re-registers its own node
    (a legacy node token whose node does not exist yet creates it under its bound id)."""
    ctl.store.get(Site, str(details["site_id"]))
    now = ctl.now()
    if principal.node_id is None:
        if Role.ENROLLMENT not in principal.roles:
            raise PermissionDeniedError(
                "only an enrollment token or a node's own credential registers a node"
            )
        node = ctl.store.create(Node(id=new_id("node"), heartbeat_at=now, created_at=now, updated_at=now,
                                     **details))  # fmt: skip
        token, secret = issue(ctl, node, issued_by=principal.subject)
        return node, token, secret
    try:
        node = ctl.store.get(Node, principal.node_id)
    except NotFoundError:
        return ctl.store.create(Node(id=principal.node_id, heartbeat_at=now, **details)), None, None
    if node.revoked:
        raise AuthenticationError(f"node {node.id} was revoked: enroll again with an enrollment token")
    return ctl.store.update(node.model_copy(update={**details, "heartbeat_at": now})), None, None


def live_node(ctl: Control, node_id: str) -> Node:
    """The node, unless revoked (then :class:`AuthenticationError`, as for a revoked token)."""
    node = ctl.store.get(Node, node_id)
    if node.revoked:
        raise AuthenticationError(f"node {node_id} was revoked: enroll again with an enrollment token")
    return node


def rotate(
    ctl: Control, node_id: str, *, grace: timedelta, issued_by: str, current_token_id: str | None = None
) -> tuple[ApiToken, str]:
    """Issue ``node_id`` a new credential; its other credentials end after ``grace``.

    ``current_token_id`` names the caller's own credential, ended even when it predates the
    ``node_id`` index (a legacy token). Credentials already revoked or expired are deleted."""
    node = ctl.store.get(Node, node_id)
    if node.revoked:
        raise InvalidStateError(f"node {node_id} is revoked: it must enroll again", node_id=node_id)
    new, secret = issue(ctl, node, issued_by=issued_by)
    now = ctl.now()
    until = now + grace
    olds = {t.id: t for t in every(ctl.store, ApiToken, {"node_id": node_id})}
    if current_token_id and current_token_id not in olds:
        olds[current_token_id] = ctl.store.get(ApiToken, current_token_id)
    for old in olds.values():
        if old.id == new.id or old.node_id != node_id:
            continue
        if old.revoked or (old.expires_at is not None and old.expires_at <= now):
            ctl.store.delete(ApiToken, old.id)
        elif grace <= timedelta(0):
            ctl.store.update(old.model_copy(update={"revoked": True, "updated_at": now}))
        elif old.expires_at is None or old.expires_at > until:
            ctl.store.update(old.model_copy(update={"expires_at": until, "updated_at": now}))
    return new, secret


def revoke(ctl: Control, node_id: str) -> Node:
    """Revoke every credential of ``node_id`` (at once, no grace) and mark the node revoked.

    Every token is scanned, not only the ``node_id`` index, so that credentials written
    before the index existed are revoked too (an admin action: rare, tokens are few)."""
    node = ctl.store.get(Node, node_id)
    now = ctl.now()
    for token in every(ctl.store, ApiToken):
        if token.node_id == node_id and not token.revoked:
            ctl.store.update(token.model_copy(update={"revoked": True, "updated_at": now}))
    if node.revoked:
        return node
    return ctl.store.update(node.model_copy(update={"revoked_at": now, "updated_at": now}))
