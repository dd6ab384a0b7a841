"""Storage: what each disk, machine and repository protects and what it costs to keep.

Pure functions over recovery-point records. Per disk (figures summed over its points):

* ``protected_bytes``: the disk's size at its newest point (what a recovery restores);
* ``logical_bytes``: the sum of the disk's size over its points (what restoring every
  point would produce: the data the repository represents);
* ``new_bytes``: data each point added after deduplication, before compression
  (``DiskPoint.bytes_new``);
* ``stored_bytes``: what each point added to the repository after deduplication and
  compression (``DiskPoint.bytes_stored``, recorded by nodes since issue 16; points from
  before it are counted in ``unrecorded_points`` and add nothing);
* ``reduction_ratio = logical_bytes / stored_bytes`` (deduplication and compression
  together) and ``compression_ratio = new_bytes / stored_bytes`` over the points that
  record ``stored_bytes``; None when nothing is stored.

Machines sum their disks; repositories (a target site's repository, ``RecoveryPoint.site_id``)
and the total sum every disk. The figures are what each point added when it was written:
``lifeboat prune`` frees data later without changing the records, so after a prune they
are an upper bound of what the repository holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.points import RecoveryPoint


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageFigures(_Model):
    points: int = Field(ge=0, description="Recovery points (of the disk, of the machine, in the repository).")
    protected_bytes: int = Field(ge=0)
    logical_bytes: int = Field(ge=0)
    new_bytes: int = Field(ge=0)
    stored_bytes: int = Field(ge=0)
    unrecorded_points: int = Field(ge=0, description="Points that did not record stored_bytes.")
    reduction_ratio: float | None = None
    compression_ratio: float | None = None


class DiskStorage(StorageFigures):
    plan_id: str
    machine_id: str
    disk_id: str
    site_id: str
    newest_point_at: datetime


class MachineStorage(StorageFigures):
    plan_id: str
    machine_id: str
    disks: int = Field(ge=0)


class RepositoryStorage(StorageFigures):
    site_id: str


class StorageReport(_Model):
    disks: list[DiskStorage]
    machines: list[MachineStorage]
    repositories: list[RepositoryStorage]
    total: StorageFigures


@dataclass
class _Sum:
    points: int = 0
    protected: int = 0
    logical: int = 0
    new: int = 0
    stored: int = 0
    new_recorded: int = 0  # new bytes of the points that record stored bytes
    unrecorded: int = 0
    newest: datetime | None = None
    keys: set[str] = field(default_factory=set)

    def add(self, other: _Sum) -> None:
        self.points += other.points
        self.protected += other.protected
        self.logical += other.logical
        self.new += other.new
        self.stored += other.stored
        self.new_recorded += other.new_recorded
        self.unrecorded += other.unrecorded

    def figures(self, points: int | None = None) -> dict[str, Any]:
        return {
            "points": self.points if points is None else points,
            "protected_bytes": self.protected,
            "logical_bytes": self.logical,
            "new_bytes": self.new,
            "stored_bytes": self.stored,
            "unrecorded_points": self.unrecorded,
            "reduction_ratio": self.logical / self.stored if self.stored else None,
            "compression_ratio": self.new_recorded / self.stored if self.stored else None,
        }


def storage_report(points: Iterable[RecoveryPoint]) -> StorageReport:
    """Storage per disk, machine, repository and in total (see the module docstring).

    Disks are keyed by ``(site_id, disk_id)``; rows are sorted by plan, machine and disk."""
    disks: dict[tuple[str, str], _Sum] = {}
    owner: dict[tuple[str, str], tuple[str, str]] = {}
    counts: dict[tuple[str, str], int] = {}  # machine points, per (plan, machine) and per ("site", site)
    for p in points:
        for key in ((p.plan_id, p.machine_id), ("\0site", p.site_id), ("\0total", "")):
            counts[key] = counts.get(key, 0) + 1
        for d in p.disks:
            key = (p.site_id, d.disk_id)
            s = disks.setdefault(key, _Sum())
            s.points += 1
            s.logical += d.disk_size
            s.new += d.bytes_new
            if d.bytes_stored is None:
                s.unrecorded += 1
            else:
                s.stored += d.bytes_stored
                s.new_recorded += d.bytes_new
            if s.newest is None or p.time >= s.newest:
                s.newest, s.protected = p.time, d.disk_size
                owner[key] = (p.plan_id, p.machine_id)
    disk_rows = sorted(
        (
            DiskStorage(
                plan_id=owner[k][0],
                machine_id=owner[k][1],
                disk_id=k[1],
                site_id=k[0],
                newest_point_at=s.newest,
                **s.figures(),
            )
            for k, s in disks.items()
            if s.newest is not None
        ),
        key=lambda r: (r.plan_id, r.machine_id, r.disk_id, r.site_id),
    )
    machines: dict[tuple[str, str], _Sum] = {}
    repos: dict[str, _Sum] = {}
    total = _Sum()
    for k, s in disks.items():
        m = machines.setdefault(owner[k], _Sum())
        m.add(s)
        m.keys.add(k[1])
        repos.setdefault(k[0], _Sum()).add(s)
        total.add(s)
    return StorageReport(
        disks=disk_rows,
        machines=[
            MachineStorage(plan_id=k[0], machine_id=k[1], disks=len(s.keys), **s.figures(counts[k]))
            for k, s in sorted(machines.items())
        ],
        repositories=[
            RepositoryStorage(site_id=k, **s.figures(counts[("\0site", k)])) for k, s in sorted(repos.items())
        ],
        total=StorageFigures(**total.figures(counts.get(("\0total", ""), 0))),
    )
