"""Recovery-point metadata: what the control plane knows about points in a repository."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.base import Record, Slug
from shared.domain.hardware import HardwareProfile


class DiskPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disk_id: Slug
    point_id: str = Field(max_length=64, description="The repository point id (docs/FORMAT.md).")
    disk_size: int = Field(ge=0)
    bytes_new: int = Field(
        default=0,
        ge=0,
        description="Bytes of new data this point added (after deduplication, before compression).",
    )
    bytes_stored: int | None = Field(
        default=None, ge=0,
        description="Bytes this point added to the repository (after deduplication and compression); "
        "None: not recorded (points written before nodes reported it).",
    )  # fmt: skip
    bytes_read: int = Field(default=0, ge=0, description="Bytes the run read from the source for this point.")
    seconds: float = Field(default=0.0, ge=0, description="How long the disk's replication took.")
    read: str = Field(default="", max_length=16, description="'changed' (incremental) or 'full'.")
    read_note: str = Field(
        default="", max_length=500, description="Why a full read, when one was not expected."
    )
    change_token: str | None = Field(
        default=None, max_length=512, description="e.g. the disk's CBT changeId."
    )


class RecoveryPoint(Record):
    """One machine at one moment: a point per disk, all from the same plan run."""

    kind: ClassVar[str] = "point"
    indexed: ClassVar[tuple[str, ...]] = ("plan_id", "machine_id", "run_id")

    plan_id: Slug
    machine_id: Slug
    run_id: Slug = Field(description="The plan run (replication job) that made it.")
    time: datetime
    site_id: Slug
    disks: list[DiskPoint] = Field(min_length=1)
    hardware: HardwareProfile | None = Field(default=None, description="The machine's virtual hardware then.")
    direction: Literal["forward", "reverse"] = Field(
        default="forward", description="reverse: a recovered machine protected back after a failover (failback).",
    )  # fmt: skip


class MachineStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    last_point_at: datetime | None = None
    last_point_id: str | None = None


class PlanStatus(Record):
    """Per-plan replication state the scheduler reads in one query (kept apart from the plan
    so user edits and job completions never conflict on one revision)."""

    kind: ClassVar[str] = "plan-status"

    machines: dict[str, MachineStatus] = Field(default_factory=dict)
    last_job_id: str | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
