"""Inventory of the sites whose VMs a node discovers: vmware sites through their vCenter,
kvm sites through their VMs' QMP sockets. Syncs are jobs a node runs; what it discovers is
stored here the same way for both kinds (:class:`InventoryVm`, :class:`InventoryObject`),
and plans pick their machines from it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from shared.domain.inventory import InventorySyncStatus, Site, SiteKind
from shared.domain.jobs import Job, JobKind, JobState
from shared.domain.plans import ProtectedDisk, ProtectedMachine, SourceVm
from shared.domain.vsphere import InventoryObject, InventoryVm, PresenceState, disk_source
from shared.errors import ConflictError, InvalidInputError, InvalidStateError, NotFoundError
from shared.ports.metadata_store import every
from shared.services import jobs
from shared.services.auth import Principal
from shared.services.context import Control

#: the site kinds with an inventory, and the route that gives each its connection
INVENTORY_KINDS = {SiteKind.VMWARE: "vcenter", SiteKind.KVM: "kvm"}


def inventory_site(ctl: Control, site_id: str) -> Site:
    """The site, if its kind has an inventory (vmware, kvm); else InvalidInputError."""
    site = ctl.store.get(Site, site_id)
    if site.site_kind not in INVENTORY_KINDS:
        raise InvalidInputError(
            f"site {site_id} is a {site.site_kind} site; only vmware and kvm sites have an inventory"
        )
    return site


def source_params(site: Site) -> dict[str, Any] | None:
    """What a node needs to read a site's VMs (no secret: at most a reference to one), or
    ``None`` if the site has no connection to read them through. The node's source
    resolution reads exactly these keys."""
    if site.site_kind is SiteKind.VMWARE and site.vcenter is not None:
        return {"kind": "vsphere", "site_id": site.id, "vcenter": site.vcenter.model_dump(mode="json")}
    if site.site_kind is SiteKind.KVM and site.kvm is not None:
        return {"kind": "kvm", "site_id": site.id, "kvm": site.kvm.model_dump(mode="json")}
    return None


def node_sources(ctl: Control) -> list[dict[str, Any]]:
    """Every vmware and kvm site's connection (references only) a node may be asked to read."""
    return [p for kind in INVENTORY_KINDS for site in every(ctl.store, Site, {"site_kind": kind.value})
            if (p := source_params(site)) is not None]  # fmt: skip


def request_sync(ctl: Control, site_id: str, *, actor: str, reason: str) -> Job:
    """Queue an inventory sync of the site (one at a time: an open one is returned)."""
    site = inventory_site(ctl, site_id)
    if not site.has_inventory_source:
        route = INVENTORY_KINDS[site.site_kind]
        what = "vCenter connection" if site.site_kind is SiteKind.VMWARE else "KVM host connection (QMP sockets)"
        raise InvalidStateError(f"site {site_id} has no {what} yet (PUT /sites/{site_id}/{route})")
    if site.inventory_job_id:
        with contextlib.suppress(NotFoundError):
            open_job = ctl.store.get(Job, site.inventory_job_id)
            if not open_job.terminal:
                return open_job
    # the node reads the site's connection when it runs the job: a sync queued before the
    # connection changed uses the new one
    job = jobs.new_job(JobKind.INVENTORY_SYNC, plan_id=None, reason=reason, created_by=actor,
                       params={"site_id": site_id})  # fmt: skip
    try:
        ctl.store.update(site.model_copy(update={"inventory_job_id": job.id}))
    except ConflictError as exc:
        raise ConflictError(f"site {site_id} changed meanwhile; try again", site_id=site_id) from exc
    created, _ = jobs.submit(ctl, job)
    return created


def due_syncs(ctl: Control, now: datetime) -> list[Job]:
    """Scheduled syncs: every connected vmware or kvm site whose last sync is older than its period."""
    out = []
    for kind in INVENTORY_KINDS:
        for site in every(ctl.store, Site, {"site_kind": kind.value}):
            if not site.has_inventory_source or site.inventory_sync_minutes is None:
                continue
            last = site.last_inventory_sync
            if last is None or now - last.at >= timedelta(minutes=site.inventory_sync_minutes):
                out.append(request_sync(ctl, site.id, actor="scheduler", reason="scheduled inventory sync"))
    return out


def record_inventory(
    ctl: Control, site_id: str, vms: Iterable[InventoryVm], objects: Iterable[InventoryObject]
) -> dict[str, int]:
    """Store one batch of a discovery: every item seen now (present, ``last_seen_at`` now)."""
    inventory_site(ctl, site_id)
    now = ctl.now()
    counts = {"vms": 0, "objects": 0}
    for items, key in ((list(vms), "vms"), (list(objects), "objects")):
        for item in items:
            if item.site_id != site_id:
                raise InvalidInputError(f"inventory item {item.id} belongs to site {item.site_id}, not {site_id}")
            _upsert(ctl, item.model_copy(update={"state": PresenceState.PRESENT, "last_seen_at": now,
                                                 "missing_since": None} if isinstance(item, InventoryVm)
                                                else {"state": PresenceState.PRESENT, "last_seen_at": now}))  # fmt: skip
            counts[key] += 1
    return counts


def finish_inventory(ctl: Control, site_id: str, *, since: datetime, job_id: str) -> dict[str, int]:
    """The discovery is complete: what it did not see since ``since`` is marked missing
    (kept, so plans naming a VM still resolve and say so), and the site records the sync."""
    site = inventory_site(ctl, site_id)
    now = ctl.now()
    counts = {"vms": 0, "missing": 0}
    olds: list[InventoryVm | InventoryObject] = [
        *every(ctl.store, InventoryVm, {"site_id": site_id}), *every(ctl.store, InventoryObject, {"site_id": site_id})
    ]
    for old in olds:
        seen = old.last_seen_at is not None and old.last_seen_at >= since
        if isinstance(old, InventoryVm) and seen:
            counts["vms"] += 1
        if not seen and old.state is PresenceState.PRESENT:
            changes: dict[str, Any] = {"state": PresenceState.MISSING}
            if isinstance(old, InventoryVm):
                changes["missing_since"] = now
            _upsert(ctl, old.model_copy(update=changes))
            counts["missing"] += 1
    _record_sync(ctl, site, InventorySyncStatus(at=now, job_id=job_id, ok=True, vms=counts["vms"]))
    return counts


def record_sync_failure(ctl: Control, job: Job) -> None:
    """A failed sync job leaves the inventory as it was and says why on the site."""
    site_id = str(job.params.get("site_id", ""))
    try:
        site = ctl.store.get(Site, site_id)
    except NotFoundError:
        return
    error = job.errors[-1] if job.errors else "failed"
    _record_sync(ctl, site, InventorySyncStatus(at=ctl.now(), job_id=job.id, ok=False, error=error[:2000]))


def sync_finished(ctl: Control, job: Job) -> None:
    if job.job_kind is JobKind.INVENTORY_SYNC and job.state is JobState.FAILED:
        record_sync_failure(ctl, job)


def record_from_node(
    ctl: Control, principal: Principal, job_id: str, vms: list[InventoryVm], objects: list[InventoryObject],
    *, final: bool,
) -> dict[str, int]:  # fmt: skip
    """A batch of the discovery of the inventory-sync job this node runs (and only that);
    the ``final`` call, sent only after the whole discovery succeeded, marks what was not seen."""
    job = jobs.owned(ctl, principal, job_id)
    if job.job_kind is not JobKind.INVENTORY_SYNC or job.terminal:
        raise InvalidStateError(f"job {job_id} is not a running inventory sync", job_id=job_id)
    site_id = str(job.params["site_id"])
    counts = record_inventory(ctl, site_id, vms, objects)
    if final:
        counts.update(finish_inventory(ctl, site_id, since=job.started_at or job.created_at, job_id=job_id))
    return counts


def machine_from_inventory(vm: InventoryVm, *, machine_id: str | None = None) -> ProtectedMachine:
    """A plan machine for an inventory VM: every disk by device key (vSphere: the virtual
    device key; KVM: the disk's position among the VM's disks), its networks in NIC order."""
    mid = machine_id or _slug(vm.name)
    return ProtectedMachine(
        machine_id=mid, name=vm.name[:128],
        vm=SourceVm(moref=vm.moref, instance_uuid=vm.instance_uuid, inventory_id=vm.id),
        disks=[ProtectedDisk(disk_id=f"{mid}-disk{d.key}"[:128], source=disk_source(d.key)) for d in vm.disks],
        networks=[n.network[:128] for n in vm.nics if n.network],
    )  # fmt: skip


def _slug(name: str) -> str:
    out = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip("-._") or "vm"
    return out[:100]


def _record_sync(ctl: Control, site: Site, status: InventorySyncStatus) -> None:
    for _ in range(5):
        try:
            ctl.store.update(site.model_copy(update={"last_inventory_sync": status}))
            return
        except ConflictError:
            site = ctl.store.get(Site, site.id)


def _upsert(ctl: Control, item: InventoryVm | InventoryObject) -> None:
    for _ in range(5):
        try:
            current = ctl.store.get(type(item), item.id)
        except NotFoundError:
            try:
                ctl.store.create(item.model_copy(update={"revision": 0}))
                return
            except ConflictError:
                continue
        try:
            ctl.store.update(item.model_copy(update={"revision": current.revision, "created_at": current.created_at}))
            return
        except ConflictError:
            continue
    raise ConflictError(f"inventory item {item.id} kept changing")
