"""The source port: what the replication pipeline reads a disk through.

Every kind of source (image file or block device, a vSphere VM through CBT, a KVM VM or
qcow2 image through QEMU dirty bitmaps) implements the same two small protocols:

* :class:`MachineSource` opens one consistent view of a machine — a snapshot — and
  :meth:`MachineSnapshot.close` is its cleanup twin, which MUST run whatever happened
  (the node agent calls it in ``finally``; a node also sweeps leftovers at start-up).
* :class:`DiskSource` is one disk of that view: its size, the extents to read
  (:meth:`DiskSource.plan`), ``read(offset, length)`` and the change token to record with
  the new point, so the next run can ask for what changed since.

Every disk of a :class:`MachineSnapshot` describes the same moment, so the points a run
makes from it form one crash-consistent machine point.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.domain.hardware import HardwareProfile
from shared.repo.points import PointRecord

Extent = tuple[int, int]  # (offset, length) in bytes


@dataclass(frozen=True)
class ReadPlan:
    """What one run reads from one disk.

    ``incremental``: only ``extents`` changed since the parent point; every other block is
    the parent's. Otherwise ``extents`` are all the ranges that may hold data (the rest
    reads as zeros) and blocks are compared with the parent by id. ``note`` says why a
    full read was chosen when the caller may have expected an incremental (shown in the
    job and recorded in the point's tags).
    """

    extents: Sequence[Extent]
    incremental: bool
    note: str = ""


class DiskSource(Protocol):
    """One disk of an open machine view. Reads are thread-safe; offsets are bytes."""

    @property
    def label(self) -> str:
        """What the point records as its source (a path, ``[ds] vm/vm.vmdk``...)."""
        ...

    @property
    def size(self) -> int: ...

    def plan(self, parent: PointRecord | None) -> ReadPlan:
        """The extents to read given the disk's latest point (``None``: there is none of
        this size and block size). A source that cannot trust ``parent.change_token``
        (reset, unknown) returns a full plan with a ``note``; it never raises for that."""
        ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` or :class:`shared.errors.SourceError`."""
        ...

    @property
    def change_token(self) -> str | None:
        """The token naming this view's moment (e.g. a CBT changeId), or ``None``."""
        ...

    def committed(self, point: PointRecord) -> None:
        """``point`` (made from this view) is durable: the source may forget the change
        tracking it supersedes (a QEMU source drops older bitmap generations at close).
        Not called for a failed run, so a source keeps everything a retry needs."""
        ...


class MachineSnapshot(Protocol):
    """A machine frozen at one moment; ``close`` releases it (removes the snapshot)."""

    @property
    def disks(self) -> Mapping[str, DiskSource]:
        """The machine's disks by the plan's disk ``source`` reference."""
        ...

    @property
    def hardware(self) -> HardwareProfile | None:
        """The machine's virtual hardware at this moment, where the source knows it."""
        ...

    def close(self) -> None:
        """Release everything ``open`` took (remove the snapshot, log out). Idempotent;
        raises SourceError if the release fails: the caller decides what that means for
        the run (the agent keeps committed points and reports it)."""
        ...


class MachineSource(Protocol):
    def open(self) -> MachineSnapshot:
        """Freeze the machine (snapshot) and return its disks; raises SourceError."""
        ...
