"""A KVM/QEMU machine as a :class:`~node_runtime.sources.port.MachineSource`.

``open`` connects to the VM's QMP socket, freezes every disk of the machine in one
transaction (:mod:`.fleece`), rotates the dirty bitmaps (:mod:`.bitmaps`) and exports the
frozen views over NBD; each disk then plans its read from its parent point's bitmap
generation and reads through libnbd. ``close`` tears all of it down and, for the disks
whose point was committed, forgets the generations that point supersedes.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from node_runtime.sources.kvm import bitmaps, fleece
from node_runtime.sources.kvm.nbd_reader import ALLOCATION, DIRTY, STATE_ZERO, NbdExport, dirty_context
from node_runtime.sources.kvm.qmp import BlockDisk, Qmp
from node_runtime.sources.port import DiskSource, ReadPlan
from shared.domain.hardware import HardwareProfile
from shared.domain.vsphere import device_key
from shared.errors import SourceError
from shared.repo.points import PointRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DiskRef:
    """One disk of the plan: its repository id and how the source names it."""

    disk_id: str
    source: str  # 'device:<key>' (a running VM's disk) or the node name in a storage daemon


class KvmDisk:
    """One frozen disk, read through its NBD export."""

    def __init__(self, snapshot: KvmSnapshot, fd: fleece.FleeceDisk, export: NbdExport, label: str) -> None:
        self._snapshot, self._fd, self._export, self._label = snapshot, fd, export, label

    @property
    def label(self) -> str:
        return self._label

    @property
    def size(self) -> int:
        return self._export.size

    @property
    def change_token(self) -> str | None:
        return bitmaps.token(self._fd.disk_id, self._fd.freeze.next_generation)

    def plan(self, parent: PointRecord | None) -> ReadPlan:
        choice = bitmaps.choose_read(self._fd.disk_id, parent.change_token if parent else None, self._fd.freeze,
                                     has_parent=parent is not None)  # fmt: skip
        if choice.bitmap is not None:
            # every dirty range, holes included: a range the guest discarded must become zeros
            return ReadPlan(self._export.extents(dirty_context(choice.bitmap), lambda f: bool(f & DIRTY)), True)
        return ReadPlan(self._export.extents(ALLOCATION, lambda f: not f & STATE_ZERO), False, choice.note)

    def read(self, offset: int, length: int) -> bytes:
        data = self._export.pread(offset, length)
        if len(data) != length:
            raise SourceError(f"short NBD read from {self._label} at {offset}", offset=offset)
        return data

    def committed(self, point: PointRecord) -> None:
        self._snapshot.mark_committed(self._fd.disk_id)


class KvmSnapshot:
    """The frozen machine: its disks by plan source, and the cleanup of everything ``open`` made.

    It holds no QMP session while the disks are read (QEMU serves one QMP client at a time,
    and the VM's other management must not wait for a long read); ``close`` reconnects.
    """

    def __init__(self, socket_path: str, frozen: Sequence[fleece.FleeceDisk], *,
                 on_close: Callable[[], None] | None = None, hardware: HardwareProfile | None = None) -> None:  # fmt: skip
        self._socket_path, self._frozen, self._on_close = socket_path, list(frozen), on_close
        self.hardware = hardware
        self.disks: Mapping[str, DiskSource] = {}
        self._exports: list[NbdExport] = []
        self._committed: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False

    def attach(self, source: str, disk: KvmDisk, export: NbdExport) -> None:
        self._exports.append(export)
        self.disks = {**self.disks, source: disk}

    def mark_committed(self, disk_id: str) -> None:
        with self._lock:
            self._committed.add(disk_id)

    def close(self) -> None:
        if self._closed:
            return
        try:
            with Qmp(self._socket_path) as qmp:
                self.release(qmp)
        finally:
            self._finish()

    def release(self, qmp: Qmp) -> None:
        """Tear down through an open session (``close`` opens one)."""
        if self._closed:
            return
        self._closed = True
        try:
            for export in self._exports:
                export.close()
            failures = fleece.release(qmp, self._frozen, committed=self._committed)
        finally:
            self._finish()
        if failures:
            raise SourceError(f"releasing the KVM disks left: {'; '.join(failures)}")

    def _finish(self) -> None:
        self._closed = True
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


def nbd_socket(scratch_dir: Path) -> Path:
    """The NBD socket for one machine's exports: short (unix socket paths stop at 107 bytes)."""
    digest = hashlib.sha256(str(scratch_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"lifeboat-nbd-{digest}.sock"


def freeze_and_export(qmp: Qmp, refs: Sequence[DiskRef], disks: Mapping[str, BlockDisk], *, scratch_dir: Path,
                      label: str, hardware: HardwareProfile | None = None,
                      on_close: Callable[[], None] | None = None) -> KvmSnapshot:  # fmt: skip
    """Freeze ``refs`` (their block disks in ``disks``, by ``ref.source``) and export them."""
    frozen = [
        fleece.FleeceDisk(
            disk_id=r.disk_id, disk=disks[r.source],
            freeze=bitmaps.plan_freeze(r.disk_id, disks[r.source].bitmaps, persistent=disks[r.source].persistent_bitmaps),
            scratch=scratch_dir / f"{r.disk_id}.fleece.qcow2",
        )
        for r in refs
    ]  # fmt: skip
    fleece.freeze(qmp, frozen)
    snap = KvmSnapshot(qmp.socket_path, frozen, on_close=on_close, hardware=hardware)
    try:
        sock = nbd_socket(scratch_dir)
        fleece.export(qmp, sock, frozen)
        for r, fd in zip(refs, frozen, strict=True):
            export = NbdExport(str(sock), fd.export, tuple(dirty_context(n) for n in fd.frozen))
            name = fd.disk.device or fd.disk.filename
            snap.attach(r.source, KvmDisk(snap, fd, export, f"{label}:{name}" if label else name), export)
    except BaseException:
        try:
            snap.release(qmp)
        except SourceError as exc:
            log.warning("cleanup after a failed freeze: %s", exc)
        raise
    return snap


class KvmMachine:
    """A running VM reached through its QMP unix socket (a :class:`MachineSource`)."""

    def __init__(self, socket_path: str, refs: Sequence[DiskRef], *, scratch_dir: Path, vm_id: str = "",
                 hardware: Callable[[Qmp], HardwareProfile] | None = None) -> None:  # fmt: skip
        self.socket_path, self.refs, self.scratch_dir, self.vm_id = socket_path, list(refs), scratch_dir, vm_id
        self._hardware = hardware
        for r in self.refs:
            if device_key(r.source) is None:
                raise SourceError(f"disk {r.disk_id}: a KVM VM's disks are named 'device:<key>', not {r.source}")

    def open(self) -> KvmSnapshot:
        with Qmp(self.socket_path) as qmp:
            removed = fleece.sweep(qmp, [r.disk_id for r in self.refs])  # before reading the disks' top nodes
            if removed:
                log.warning("removed what an earlier run left on %s: %s", self.socket_path, ", ".join(removed))
            by_key = {f"device:{d.key}": d for d in qmp.disks()}
            missing = [r.source for r in self.refs if r.source not in by_key]
            if missing:
                raise SourceError(f"VM at {self.socket_path} has no disk {', '.join(missing)} "
                                  f"(it has {', '.join(by_key) or 'none'})", socket=self.socket_path)  # fmt: skip
            scratch = self.scratch_dir / (self.vm_id or Path(self.socket_path).stem)
            scratch.mkdir(parents=True, exist_ok=True)
            hw = self._hardware(qmp) if self._hardware else None
            return freeze_and_export(qmp, self.refs, by_key, scratch_dir=scratch, label=self.vm_id or self.socket_path,
                                     hardware=hw)  # fmt: skip
