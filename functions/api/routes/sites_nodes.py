"""Inventory: sites, and the nodes (agents) that register, heartbeat and claim jobs at them."""

import json
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body

from functions.api import schemas
from functions.api.core import Cursor, IdPath, Limit, _stamps, created, ctl, current, page_of, public, route
from shared.domain.base import new_id
from shared.domain.identity import Permission
from shared.domain.inventory import Node, Site
from shared.errors import NotFoundError, PermissionDeniedError
from shared.services import jobs


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
