"""Discover a KVM host's VMs from their QMP sockets, and find one VM again by its id."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from node_runtime.sources.kvm.qmp import Qmp
from shared.domain.hardware import DiskProfile, HardwareProfile
from shared.domain.kvm import kvm_moref
from shared.domain.vsphere import InventoryDisk, InventoryVm, disk_source, inventory_id
from shared.errors import SourceError

log = logging.getLogger(__name__)


@dataclass
class KvmDiscovery:
    vms: list[InventoryVm] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)  # "socket: why"


def bus_of(qdev: str) -> str:
    """The disk's bus as the hardware profile names it, from its QOM path."""
    path = qdev.lower()
    return next((bus for bus in ("virtio", "nvme", "scsi", "ide", "sata") if bus in path), "")


def describe(qmp: Qmp, *, site_id: str, now: datetime) -> InventoryVm:
    """One VM as the inventory stores it; ``host`` is its QMP socket."""
    name, uuid = qmp.identity()
    moref = kvm_moref(name, uuid) or "socket-" + qmp.socket_path.strip("/").replace("/", "_")[-50:]
    status = qmp.cmd("query-status")
    cpus = len(qmp.cmd("query-cpus-fast"))
    memory = int(qmp.cmd("query-memory-size-summary").get("base-memory", 0)) >> 20
    disks = [InventoryDisk(key=d.key, label=d.device or d.qdev, capacity_bytes=d.size, file=d.filename,
                           controller=d.format, bus=bus_of(d.qdev)) for d in qmp.disks()]  # fmt: skip
    return InventoryVm(
        id=inventory_id(site_id, moref), site_id=site_id, moref=moref, instance_uuid=uuid if moref.startswith("uuid-") else "",
        name=name or moref, host=qmp.socket_path, power_state=str(status.get("status", "")), cpus=max(1, cpus),
        memory_mb=memory, cbt_enabled=all(d.controller == "qcow2" for d in disks), disks=disks, last_seen_at=now,
    )  # fmt: skip


def discover(sockets: Sequence[str], *, site_id: str, now: datetime) -> KvmDiscovery:
    """Every reachable VM; an unreachable socket is reported, not fatal (the VM may be off)."""
    found = KvmDiscovery()
    for path in sockets:
        try:
            with Qmp(path, timeout=10) as qmp:
                found.vms.append(describe(qmp, site_id=site_id, now=now))
        except SourceError as exc:
            log.warning("KVM inventory: %s", exc)
            found.unreachable.append(f"{path}: {exc}")
    return found


def find_vm(sockets: Sequence[str], moref: str) -> str:
    """The QMP socket of the VM whose id is ``moref``, among the site's sockets."""
    errors: list[str] = []
    for path in sockets:
        try:
            with Qmp(path, timeout=10) as qmp:
                name, uuid = qmp.identity()
        except SourceError as exc:
            errors.append(str(exc))
            continue
        if (kvm_moref(name, uuid) or "socket-" + path.strip("/").replace("/", "_")[-50:]) == moref:
            return path
    detail = f" ({'; '.join(errors)})" if errors else ""
    raise SourceError(f"no VM {moref} behind the site's QMP sockets{detail}", moref=moref)


def hardware(qmp: Qmp) -> HardwareProfile:
    """The running VM's CPUs, memory and disks (what the recovery sizes the target from)."""
    memory = int(qmp.cmd("query-memory-size-summary").get("base-memory", 0)) >> 20
    return HardwareProfile(
        cpus=max(1, len(qmp.cmd("query-cpus-fast"))), memory_mb=max(4, memory),
        disks=[DiskProfile(source=disk_source(d.key), capacity_bytes=d.size, bus=bus_of(d.qdev)) for d in qmp.disks()],
    )  # fmt: skip
