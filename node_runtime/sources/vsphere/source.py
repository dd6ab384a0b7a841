"""A vSphere VM as a :class:`~node_runtime.sources.port.MachineSource`.

``open`` logs in, finds the VM (by instance UUID, else moref), switches CBT on if it is
off, and takes one snapshot (quiesced when asked and Tools run); every disk is then read
from that snapshot's read-only base, so the disks of one run describe one moment.
``close`` removes the snapshot and logs out, whatever happened before.

Per disk, the read plan is ``QueryChangedDiskAreas`` since the parent point's changeId; a
first run asks with ``"*"`` (allocated areas only). A changeId vSphere no longer accepts
(CBT reset after a storage vMotion or a restore) falls back to every allocated area,
deduplicated against the parent point by block id, and the plan's note says so.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from pyVmomi import vim

from node_runtime.sources.port import DiskSource, ReadPlan
from node_runtime.sources.vsphere import snapshots
from node_runtime.sources.vsphere.connection import Endpoint, Session, connect
from node_runtime.sources.vsphere.datastore import DiskReader, FlatDisk
from node_runtime.sources.vsphere.inventory import disks_of, nics_of
from shared.domain.hardware import DiskProfile, Firmware, HardwareProfile, NicProfile
from shared.domain.vsphere import device_key, disk_source
from shared.errors import NotFoundError, SourceError
from shared.repo.points import PointRecord

log = logging.getLogger(__name__)


class VsphereDisk:
    """One disk of the snapshot: reads its frozen base, plans through CBT."""

    def __init__(
        self, vm: Any, snapshot: Any, key: int, label: str, change_id: str | None, reader: DiskReader
    ) -> None:
        self.vm, self.snapshot, self.key = vm, snapshot, key
        self.label = label
        self.size = reader.size
        self._change_id = change_id
        self.reader = reader

    @property
    def change_token(self) -> str | None:
        return self._change_id

    def plan(self, parent: PointRecord | None) -> ReadPlan:
        if not self._change_id:
            return ReadPlan([(0, self.size)], incremental=False, note="CBT is not active on this disk: read all of it")
        note = ""
        since = parent.change_token if parent is not None else None
        if parent is not None and not since:
            note = "the previous point has no changeId (CBT was just enabled): read every allocated area"
        elif since:
            try:
                changed = snapshots.changed_areas(self.vm, self.snapshot, self.key, self.size, since)
                return ReadPlan(changed, incremental=True)
            except snapshots.InvalidChangeIdError as exc:
                note = (f"changed block tracking was reset ({exc}); read every allocated area, "
                        "deduplicated against the previous point")  # fmt: skip
        return ReadPlan(snapshots.changed_areas(self.vm, self.snapshot, self.key, self.size, "*"), False, note)

    def read(self, offset: int, length: int) -> bytes:
        return self.reader.read(offset, length)

    def committed(self, point: PointRecord) -> None:
        """Nothing to forget: vCenter keeps CBT; the point's changeId is the next run's base."""


class VsphereSnapshot:
    def __init__(self, session: Session, vm: Any, snapshot: Any, disks: Mapping[str, DiskSource],
                 hardware: HardwareProfile) -> None:  # fmt: skip
        self.session, self.vm, self.snapshot = session, vm, snapshot
        self.disks = disks
        self.hardware = hardware
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            snapshots.remove(self.snapshot, f"replication snapshot of {self.vm.name}")
        finally:
            self.session.close()


class VsphereMachine:
    def __init__(
        self, endpoint: Endpoint, *, moref: str, instance_uuid: str, sources: list[str],
        node_id: str, job_id: str, quiesce: bool = False,
    ) -> None:  # fmt: skip
        self.endpoint = endpoint
        self.moref, self.instance_uuid = moref, instance_uuid
        self.sources = sources
        self.node_id, self.job_id = node_id, job_id
        self.quiesce = quiesce

    def open(self) -> VsphereSnapshot:
        session = connect(self.endpoint)
        snap = None
        try:
            vm = find_vm(session, self.moref, self.instance_uuid)
            snapshots.remove_leftovers(vm, self.node_id)  # a crashed earlier run of this node
            snapshots.ensure_cbt(vm)
            name = snapshots.snapshot_name(self.node_id, self.job_id)
            snap = snapshots.create(vm, name, f"Lifeboat replication snapshot ({name})", quiesce=self.quiesce)
            config = snap.config
            devices = list(config.hardware.device)
            disks = {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)}
            datacenter = _datacenter_of(vm)
            out: dict[str, DiskSource] = {}
            for source in self.sources:
                key = device_key(source)
                disk = disks.get(key) if key is not None else None
                if disk is None:
                    raise SourceError(
                        f"VM {vm.name} has no disk {source} (it has {sorted(disks)}); sync the inventory "
                        "and update the plan", site_id=self.endpoint.site_id,
                    )  # fmt: skip
                backing: Any = disk.backing
                capacity = int(getattr(disk, "capacityInBytes", 0) or 0) or int(disk.capacityInKB) * 1024
                reader = FlatDisk(session, datacenter, backing.fileName, capacity)
                out[source] = VsphereDisk(vm, snap, disk.key, backing.fileName,
                                          getattr(backing, "changeId", None) or None, reader)  # fmt: skip
            return VsphereSnapshot(session, vm, snap, out, hardware_of(vm, config, devices))
        except BaseException:
            if snap is not None:
                with contextlib.suppress(Exception):
                    snapshots.remove(snap, "replication snapshot after a failed open")
            session.close()
            raise


def find_vm(session: Session, moref: str, instance_uuid: str) -> Any:
    content = session.content
    if instance_uuid:
        vm = content.searchIndex.FindByUuid(None, instance_uuid, True, True)
        if vm is not None:
            return vm
    vm = next((v for v in session.vms() if v._moId == moref), None)
    if vm is not None:
        return vm
    raise NotFoundError(
        f"site {session.endpoint.site_id}: VM {moref} ({instance_uuid or 'no uuid'}) is gone from vCenter",
        site_id=session.endpoint.site_id,
    )


def _datacenter_of(vm: Any) -> str:
    parent = vm.parent
    while parent is not None and not isinstance(parent, vim.Datacenter):
        parent = parent.parent
    if parent is None:
        raise SourceError(f"VM {vm.name} is in no datacenter")
    return str(parent.name)


def hardware_of(vm: Any, config: Any, devices: list[Any]) -> HardwareProfile:
    """The VM's hardware as of the snapshot: CPUs, memory, firmware, NICs, disks in boot order."""
    networks = {n._moId: n.name for n in (vm.network or [])}
    for n in vm.network or []:
        if isinstance(n, vim.dvs.DistributedVirtualPortgroup):
            networks[str(n.key)] = n.name
    hw = config.hardware
    return HardwareProfile(
        cpus=max(1, int(hw.numCPU or 1)), memory_mb=max(4, int(hw.memoryMB or 4)),
        firmware=Firmware.EFI if str(getattr(config, "firmware", "bios")) == "efi" else Firmware.BIOS,
        guest_os=str(getattr(config, "guestId", "") or ""),
        nics=[NicProfile(network=n.network, mac=n.mac, adapter=n.adapter) for n in nics_of(devices, networks)],
        disks=[DiskProfile(source=disk_source(d.key), capacity_bytes=d.capacity_bytes, bus=d.bus,
                           controller=d.controller, unit=d.unit) for d in disks_of(devices)],
    )  # fmt: skip
