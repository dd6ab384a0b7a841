"""vmware sites' vCenter connection; the inventory of vmware and kvm sites (sync, VMs, other
objects); and the node routes that read a site's connection, a vCenter password and post
what a sync discovered. (A kvm site's QMP sockets: :mod:`functions.api.routes.kvm`.)"""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from pydantic import BaseModel, ConfigDict, Field

from functions.api.core import Cursor, IdPath, Limit, created, ctl, current, page_of, public, route
from shared.domain.identity import Permission
from shared.domain.inventory import Node
from shared.domain.vsphere import InventoryObject, InventoryVm
from shared.errors import PermissionDeniedError
from shared.services import inventory, node_credentials, vsphere


class SyncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=256)


class InventoryBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(min_length=1, max_length=128)
    final: bool = False
    vms: list[InventoryVm] = Field(default_factory=list, max_length=500)
    objects: list[InventoryObject] = Field(default_factory=list, max_length=500)


class MachineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    machine_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# --- a site's vCenter ---------------------------------------------------------------------------
@route("PUT", "/sites/<site_id>/vcenter", Permission.OPERATE)
def set_vcenter(site_id: IdPath, body: Annotated[vsphere.VCenterIn, Body()]) -> dict[str, Any]:
    """Connect a vmware site to its vCenter/ESXi; the password is sealed and never served.
    Queues an inventory sync, which proves the connection (its job says what went wrong)."""
    site, job = vsphere.set_vcenter(ctl(), site_id, body, actor=current().subject)
    return {**public(site), "sync_job": public(job)}


@route("DELETE", "/sites/<site_id>/vcenter", Permission.OPERATE)
def clear_vcenter(site_id: IdPath) -> dict[str, Any]:
    return public(vsphere.clear_vcenter(ctl(), site_id))


@route("POST", "/sites/<site_id>/inventory/sync", Permission.OPERATE)
def sync_inventory(site_id: IdPath, body: Annotated[SyncIn, Body()]):  # -> Response
    who = current().subject
    job = inventory.request_sync(ctl(), site_id, actor=who, reason=body.reason or f"inventory sync by {who}")
    return created(job)


# --- inventory ------------------------------------------------------------------------------------
@route("GET", "/inventory/vms", Permission.READ)
def list_inventory_vms(
    site_id: Annotated[str | None, Query(max_length=128)] = None,
    state: Annotated[str | None, Query(pattern="^(present|missing)$")] = None,
    limit: Limit = 100, cursor: Cursor = None,
) -> dict[str, Any]:  # fmt: skip
    where = {k: v for k, v in (("site_id", site_id), ("state", state)) if v}
    return page_of(ctl().store.query(InventoryVm, where=where, limit=limit, cursor=cursor))


@route("GET", "/inventory/vms/<vm_id>", Permission.READ)
def get_inventory_vm(vm_id: IdPath) -> dict[str, Any]:
    return public(ctl().store.get(InventoryVm, vm_id))


@route("POST", "/inventory/vms/<vm_id>/machine", Permission.READ)
def machine_for_vm(vm_id: IdPath, body: Annotated[MachineIn, Body()]) -> dict[str, Any]:
    """The plan machine (VM reference, every disk, NIC networks) for an inventory VM: what
    the plan builder and `lifeboat inventory machine` put into a plan. Changes nothing."""
    vm = ctl().store.get(InventoryVm, vm_id)
    return inventory.machine_from_inventory(vm, machine_id=body.machine_id).model_dump(mode="json")


@route("GET", "/inventory/objects", Permission.READ)
def list_inventory_objects(
    site_id: Annotated[str | None, Query(max_length=128)] = None,
    object_type: Annotated[str | None, Query(pattern="^(datacenter|cluster|host|datastore|network)$")] = None,
    limit: Limit = 100, cursor: Cursor = None,
) -> dict[str, Any]:  # fmt: skip
    where = {k: v for k, v in (("site_id", site_id), ("object_type", object_type)) if v}
    return page_of(ctl().store.query(InventoryObject, where=where, limit=limit, cursor=cursor))


# --- node routes ----------------------------------------------------------------------------------
def _this_node(node_id: str) -> Node:
    p = current()
    if p.node_id is None or p.node_id != node_id:
        raise PermissionDeniedError(f"this token does not belong to node {node_id}")
    return node_credentials.live_node(ctl(), node_id)


@route("GET", "/nodes/<node_id>/sources", Permission.NODE_WORK)
def node_sources(node_id: IdPath) -> dict[str, Any]:
    """The vmware and kvm sites' connections (references, no secrets) a node may read."""
    node = _this_node(node_id)
    return {"items": [s for s in inventory.node_sources(ctl()) if node.may_read(s["site_id"])]}


@route("POST", "/nodes/<node_id>/sources/<site_id>/credentials", Permission.NODE_WORK)
def source_credentials(node_id: IdPath, site_id: IdPath):  # -> Response
    """A vmware site's vCenter password, for a node (audited like every POST; never cached)."""
    if not _this_node(node_id).may_read(site_id):
        raise PermissionDeniedError(
            f"node {node_id} is not configured to read site {site_id} (--source-site)"
        )
    password = vsphere.source_password(ctl(), site_id)
    return Response(status_code=200, content_type="application/json", headers={"Cache-Control": "no-store"},
                    body=_json({"password": password}))  # fmt: skip


@route("POST", "/nodes/<node_id>/inventory", Permission.NODE_WORK)
def post_inventory(node_id: IdPath, body: Annotated[InventoryBatchIn, Body()]) -> dict[str, Any]:
    _this_node(node_id)
    return inventory.record_from_node(ctl(), current(), body.job_id, body.vms, body.objects, final=body.final)


def _json(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc)
