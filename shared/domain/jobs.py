"""Jobs: units of work the scheduler or a user creates and nodes run, with a strict state machine."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.base import Record, Slug, utcnow
from shared.errors import InvalidStateError


class JobKind(StrEnum):
    REPLICATION = "replication"
    RECOVERY = "recovery"
    TEST_RECOVERY = "test-recovery"
    CLEANUP = "cleanup"
    INVENTORY_SYNC = "inventory-sync"
    REVERSE_REPLICATION = "reverse-replication"  # recovered machines into the repository (failback)
    FAILBACK = "failback"  # origin disks brought to the latest reverse point


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

#: allowed transitions; RUNNING -> QUEUED is a requeue after a node was lost
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLING, JobState.QUEUED}),
    JobState.CANCELLING: frozenset(
        {JobState.CANCELLED, JobState.FAILED, JobState.SUCCEEDED, JobState.QUEUED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class JobProgress(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bytes_done: int = Field(default=0, ge=0)
    bytes_total: int = Field(default=0, ge=0)
    rate_bps: float = Field(default=0.0, ge=0)
    eta_seconds: float | None = None
    message: str = Field(default="", max_length=512)


class Job(Record):
    kind: ClassVar[str] = "job"
    indexed: ClassVar[tuple[str, ...]] = ("plan_id", "state", "node_id")

    job_kind: JobKind
    plan_id: Slug | None = None
    machine_id: Slug | None = None
    state: JobState = JobState.QUEUED
    reason: str = Field(
        default="", max_length=512, description="Why the job exists (scheduler reason or user)."
    )
    params: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    progress: JobProgress = Field(default_factory=JobProgress)
    errors: list[str] = Field(default_factory=list)
    attempts: int = Field(default=0, ge=0)
    node_id: Slug | None = None
    lease_until: datetime | None = Field(
        default=None, description="The running node must report before this."
    )
    queue_message: dict[str, Any] | None = Field(
        default=None, description="Internal: the queue delivery (never served)."
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_by: str = Field(default="scheduler", max_length=128)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def transition(self, to: JobState, *, now: datetime | None = None, error: str | None = None) -> Job:
        """A copy in state ``to``; :class:`InvalidStateError` if the state machine forbids it."""
        if to not in TRANSITIONS[self.state]:
            raise InvalidStateError(
                f"job {self.id} cannot go from {self.state} to {to}", job_id=self.id, state=str(self.state)
            )
        at = now or utcnow()
        changes: dict[str, Any] = {"state": to, "updated_at": at}
        if to is JobState.RUNNING:
            changes["started_at"] = at
            changes["attempts"] = self.attempts + 1
        if to in TERMINAL:
            changes["finished_at"] = at
        if to is JobState.QUEUED or to in TERMINAL:
            changes["lease_until"] = None
        if to is JobState.QUEUED:
            changes["node_id"] = None
        if error:
            changes["errors"] = [*self.errors, error][-20:]
        return self.model_copy(update=changes)
