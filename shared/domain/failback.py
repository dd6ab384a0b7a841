"""A plan's failback cycle: failed over -> reverse protecting -> failing back -> protected.

One :class:`Failback` record per plan (its id is the plan's), created when a failover
succeeds. It names what reverse protection reads (the recovered machines' disks, through
their QMP sockets) and where each reverse lineage starts (the failed-over point), and it
keeps the history of the cycle's steps.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.base import Record, Slug

Phase = Literal["failed-over", "reverse-protecting", "failing-back", "protected"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReverseDisk(_Part):
    disk_id: Slug = Field(description="The plan's (forward) disk id: what failback writes back to the origin.")
    reverse_disk_id: Slug = Field(description="The repository lineage of the recovered disk.")
    seed_point_id: str = Field(max_length=64, description="The failed-over point: the reverse lineage's parent.")
    source: str = Field(max_length=64, description="The recovered VM's disk, 'device:<key>'.")
    origin: str = Field(default="", max_length=1024, description="The origin disk image failback writes (a path).")


class ReverseMachine(_Part):
    machine_id: Slug
    instance_id: str = Field(max_length=256)
    qmp_socket: str = Field(default="", max_length=107, description="The recovered VM's QMP socket.")
    vm_uuid: str = Field(default="", max_length=64)
    disks: list[ReverseDisk] = Field(min_length=1)


class FailbackStep(_Part):
    phase: Phase
    at: datetime
    actor: str = Field(max_length=256)
    job_id: str | None = None
    note: str = Field(default="", max_length=1000)


class Failback(Record):
    kind: ClassVar[str] = "failback"
    indexed: ClassVar[tuple[str, ...]] = ("phase",)

    plan_id: Slug
    cycle: int = Field(default=1, ge=1, description="How many failovers this plan has had.")
    phase: Phase = "failed-over"
    platform: str = Field(description="Where the machines were recovered (qemu, aws, azure).")
    target_site_id: Slug
    failover_job_id: Slug
    machines: list[ReverseMachine] = Field(default_factory=list)
    unsupported: str | None = Field(
        default=None, max_length=500, description="Why reverse protection is not possible for this failover."
    )
    reverse_job_id: str | None = None
    last_reverse_at: datetime | None = None
    failback_job_id: str | None = None
    last_error: str | None = Field(default=None, max_length=2000)
    history: list[FailbackStep] = Field(default_factory=list, max_length=200)
