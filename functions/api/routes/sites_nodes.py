"""Inventory: sites, and the nodes (agents) that register, heartbeat and claim jobs at them."""

import json
from datetime import timedelta
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body

from functions.api import schemas
from functions.api.core import Cursor, IdPath, Limit, _stamps, created, ctl, current, page_of, public, route
from shared.domain.base import new_id
from shared.domain.identity import ApiToken, Permission
from shared.domain.inventory import Node, Site
from shared.errors import PermissionDeniedError
from shared.services import jobs, node_credentials


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
def _node_view(n: Node) -> dict[str, Any]:
    return {**public(n), "online": n.online(ctl().now()) and not n.revoked, "revoked": n.revoked}


@route("GET", "/nodes", Permission.READ)
def list_nodes(limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    page = ctl().store.query(Node, limit=limit, cursor=cursor)
    return {"items": [_node_view(n) for n in page.items], "next_cursor": page.next_cursor}


@route("GET", "/nodes/<node_id>", Permission.READ)
def get_node(node_id: IdPath) -> dict[str, Any]:
    return _node_view(ctl().store.get(Node, node_id))


@route("DELETE", "/nodes/<node_id>", Permission.ADMINISTER)
def delete_node(node_id: IdPath):  # -> Response (powertools reads annotations as schemas)
    """Forget a node; its credentials are revoked first, so they cannot re-register it."""
    node_credentials.revoke(ctl(), node_id)
    ctl().store.delete(Node, node_id)
    return Response(status_code=204, content_type="application/json", body="")


def _credential(token: ApiToken, secret: str) -> dict[str, Any]:
    """A credential as answered once: the secret is never stored nor shown again."""
    return {"token_id": token.id, "secret": secret, "created_at": token.created_at.isoformat()}


@route("POST", "/nodes/register", Permission.NODE_ENROLL)
def register_node(
    body: Annotated[schemas.NodeRegisterIn, Body()],
):  # -> Response (powertools reads annotations as schemas)
    """Enroll a new node (an enrollment token: the answer holds its credential, once) or
    re-register the calling node (its own credential)."""
    node, token, secret = node_credentials.register(ctl(), current(), body.model_dump())
    answer = public(node)
    if token is not None and secret is not None:
        answer["credential"] = _credential(token, secret)
    return Response(status_code=201, content_type="application/json", headers={"Cache-Control": "no-store"},
                    body=json.dumps(answer, default=str))  # fmt: skip


def _own_node(node_id: str) -> Node:
    """The calling node's record: a credential acts for its own node only, a revoked node not at all."""
    p = current()
    if p.node_id is None or p.node_id != node_id:
        raise PermissionDeniedError(f"this credential does not belong to node {node_id}")
    return node_credentials.live_node(ctl(), node_id)


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


# --- node credentials: rotation (the node itself, or an admin) and revocation (admin) --------------
def _rotated(node_id: str, grace_seconds: int, *, current_token_id: str | None):  # -> Response
    token, secret = node_credentials.rotate(
        ctl(), node_id, grace=timedelta(seconds=grace_seconds), issued_by=current().subject,
        current_token_id=current_token_id,
    )  # fmt: skip
    return Response(status_code=201, content_type="application/json", headers={"Cache-Control": "no-store"},
                    body=json.dumps(_credential(token, secret)))  # fmt: skip


@route("POST", "/nodes/<node_id>/credentials/rotate", Permission.NODE_WORK)
def rotate_own_credential(
    node_id: IdPath, body: Annotated[schemas.RotateIn, Body()]
):  # -> Response (powertools reads annotations as schemas)
    """The node replaces its credential: the new secret is in this answer only; the one it
    called with keeps working for ``grace_seconds`` (so a lost answer can be retried)."""
    _own_node(node_id)
    return _rotated(node_id, body.grace_seconds, current_token_id=current().token_id)


@route("POST", "/nodes/<node_id>/credentials", Permission.ADMINISTER)
def reissue_credential(
    node_id: IdPath, body: Annotated[schemas.RotateIn, Body()]
):  # -> Response (powertools reads annotations as schemas)
    """An admin issues the node a new credential (to hand to it); its others end after the grace."""
    return _rotated(node_id, body.grace_seconds, current_token_id=None)


@route("POST", "/nodes/<node_id>/revoke", Permission.ADMINISTER)
def revoke_node(node_id: IdPath) -> dict[str, Any]:
    """Revoke every credential of the node at once; it can return only by enrolling again."""
    return _node_view(node_credentials.revoke(ctl(), node_id))
