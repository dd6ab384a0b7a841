"""Job life cycle across the metadata store and the queue.

A job record is the truth; the queue only carries ``{"job_id": ...}`` so that idle nodes
learn about work. Every state change is a conditional write on the job's revision, so
two nodes that receive the same message (SQS delivers at least once) cannot both run it:
the second one's claim fails and it drops the message.

Leases: a running job belongs to its node until ``lease_until``; each progress report
extends the lease and the queue visibility together. A node that dies stops reporting,
its message becomes visible again, and the next node to receive it requeues and runs the
job (attempt + 1). Jobs whose message was dead-lettered are failed by ``expire_lost``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from shared.domain.base import new_id
from shared.domain.hardware import HardwareProfile
from shared.domain.jobs import Job, JobKind, JobProgress, JobState
from shared.domain.points import DiskPoint, MachineStatus, PlanStatus, RecoveryPoint
from shared.errors import ConflictError, InvalidStateError, NotFoundError, PermissionDeniedError
from shared.ports.job_queue import Message
from shared.services import measurements
from shared.services.auth import Principal
from shared.services.context import Control

#: a job whose lease expired this many leases ago, and was never redelivered, is failed
LOST_AFTER_LEASES = 3


def job_id_for(dedup_key: str) -> str:
    """A job id derived from a dedup key: two schedulers deciding the same run create one job."""
    return "job-" + hashlib.sha256(dedup_key.encode()).hexdigest()[:16]


def submit(ctl: Control, job: Job, *, dedup_key: str | None = None) -> tuple[Job, bool]:
    """Create and enqueue a job; return ``(job, created)``. With a dedup key, an existing
    job of that key is returned instead of a second one."""
    if dedup_key:
        job = job.model_copy(update={"id": job_id_for(dedup_key)})
    try:
        created = ctl.store.create(job)
    except ConflictError:
        return ctl.store.get(Job, job.id), False
    ctl.queue.send({"job_id": created.id}, dedup_key=created.id)
    return created, True


def _seconds(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds()))


def _message(job: Job) -> Message | None:
    m = job.queue_message
    return Message(m["id"], m["receipt"], m["body"], m["receive_count"]) if m else None


def claim(ctl: Control, node_id: str, *, max_messages: int = 1) -> Job | None:
    """Take the next job for ``node_id``: queued, or abandoned by a node whose lease expired."""
    now = ctl.now()
    for msg in ctl.queue.receive(max_messages=max_messages, visibility_seconds=_seconds(ctl.lease)):
        try:
            job = ctl.store.get(Job, str(msg.body.get("job_id")))
        except NotFoundError:
            ctl.queue.ack(msg)
            continue
        if job.terminal:
            ctl.queue.ack(msg)
            continue
        if job.state is not JobState.QUEUED:
            if job.lease_until and job.lease_until > now:
                ctl.queue.release(msg, delay_seconds=int((job.lease_until - now).total_seconds()) + 1)
                continue  # its node is alive; look again after the lease
            if job.state is JobState.CANCELLING:
                measurements.job_ended(ctl, _save(ctl, job.transition(
                    JobState.CANCELLED, now=now, error="node lost while cancelling")))  # fmt: skip
                ctl.queue.ack(msg)
                continue
            job = job.transition(
                JobState.QUEUED, now=now, error=f"node {job.node_id} stopped reporting; requeued"
            )
        running = job.transition(JobState.RUNNING, now=now).model_copy(
            update={
                "node_id": node_id,
                "lease_until": now + ctl.lease,
                "queue_message": {"id": msg.id, "receipt": msg.receipt, "body": msg.body,
                                  "receive_count": msg.receive_count},
            }
        )  # fmt: skip
        try:
            claimed = ctl.store.update(running)
        except ConflictError:
            continue  # another node claimed it first; its delivery owns the message now
        measurements.job_started(ctl, claimed)
        return claimed
    return None


def _save(ctl: Control, job: Job) -> Job:
    return ctl.store.update(job)


def owned(ctl: Control, principal: Principal, job_id: str) -> Job:
    """The job, if it runs on the calling node (else PermissionDeniedError)."""
    job = ctl.store.get(Job, job_id)
    if principal.node_id is None or job.node_id != principal.node_id:
        raise PermissionDeniedError(f"job {job_id} is not running on this node", job_id=job_id)
    return job


def report_progress(ctl: Control, principal: Principal, job_id: str, progress: JobProgress) -> Job:
    """Record progress and extend the lease; the answer tells the node if it should cancel."""
    for _ in range(3):
        job = owned(ctl, principal, job_id)
        if job.terminal:
            raise InvalidStateError(f"job {job_id} is already {job.state}", job_id=job_id)
        now = ctl.now()
        msg = _message(job)
        if msg is not None:
            ctl.queue.extend(msg, _seconds(ctl.lease))
        try:
            return ctl.store.update(
                job.model_copy(update={"progress": progress, "lease_until": now + ctl.lease})
            )
        except ConflictError:
            continue  # e.g. a cancel landed in between: re-read and report again
    raise ConflictError(f"job {job_id} kept changing while reporting progress", job_id=job_id)


def complete(
    ctl: Control,
    principal: Principal,
    job_id: str,
    *,
    state: JobState,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> Job:
    """Finish a job the node owns; a successful replication records its recovery points.

    Recovery reports are recorded by :func:`shared.services.completion.complete`, which callers use.
    """
    if state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        raise InvalidStateError(
            f"a node can only finish a job as succeeded, failed or cancelled, not {state}"
        )
    job = owned(ctl, principal, job_id)
    if job.state is JobState.RUNNING and state is JobState.CANCELLED:
        raise InvalidStateError(f"job {job_id} was not asked to cancel", job_id=job_id)
    now = ctl.now()
    replicated: list[dict[str, Any]] = []  # the replication results this completion carries
    if state is JobState.SUCCEEDED and job.job_kind is JobKind.REPLICATION:
        _record_points(ctl, job, result or {}, now)
        replicated.append(result or {})
    if state is JobState.SUCCEEDED and job.job_kind is JobKind.REVERSE_REPLICATION:
        _record_points(ctl, job, result or {}, now, direction="reverse")
        replicated.append(result or {})
    replication = (result or {}).get("replication")
    if job.job_kind is JobKind.RECOVERY and isinstance(replication, dict):
        _record_points(ctl, job, replication, now)  # a migration's final incremental
        replicated.append(replication)
    if job.job_kind is JobKind.FAILBACK and isinstance(replication, dict):
        _record_points(ctl, job, replication, now, direction="reverse", suffix="-final")  # its final reverse run
        replicated.append(replication)
    written_back = (result or {}).get("failback")
    if state is JobState.SUCCEEDED and job.job_kind is JobKind.FAILBACK and isinstance(written_back, dict):
        _record_points(ctl, job, written_back, now)  # what the origin disks hold now
    done = job.transition(state, now=now, error=error).model_copy(update={"result": result or {}})
    saved = ctl.store.update(done)
    measurements.job_ended(ctl, saved)
    for measured in replicated:
        measurements.replication_finished(ctl, saved, measured)
    msg = _message(job)
    if msg is not None:
        ctl.queue.ack(msg)
    if job.plan_id and job.job_kind is JobKind.REPLICATION:
        _update_plan_status(ctl, saved, result or {})
    return saved


def _record_points(ctl: Control, job: Job, result: dict[str, Any], now: datetime, *,
                   direction: Literal["forward", "reverse"] = "forward", suffix: str = "") -> None:  # fmt: skip
    if not job.plan_id:
        return
    site_id = str(job.params.get("target_site_id", ""))
    for machine in result.get("machines", []):
        point = RecoveryPoint(
            id=f"{job.id}-{machine['machine_id']}{suffix}"[:128], direction=direction,
            plan_id=job.plan_id,
            machine_id=machine["machine_id"],
            run_id=job.id,
            time=datetime.fromisoformat(machine["time"]),
            created_at=datetime.fromisoformat(machine["time"]),
            site_id=site_id or "unknown",
            disks=[DiskPoint(**d) for d in machine["disks"]],
            hardware=HardwareProfile.model_validate(machine["hardware"]) if machine.get("hardware") else None,
        )
        try:
            ctl.store.create(point)
        except ConflictError:
            pass  # a retried completion: the point is already recorded


def _update_plan_status(ctl: Control, job: Job, result: dict[str, Any]) -> None:
    assert job.plan_id is not None
    for _ in range(5):
        try:
            status = ctl.store.get(PlanStatus, job.plan_id)
        except NotFoundError:
            status = None
        machines = dict(status.machines) if status else {}
        if job.state is JobState.SUCCEEDED:
            for m in result.get("machines", []):
                machines[m["machine_id"]] = MachineStatus(
                    last_point_at=datetime.fromisoformat(m["time"]),
                    last_point_id=f"{job.id}-{m['machine_id']}",
                )
        changes: dict[str, Any] = {
            "machines": machines,
            "last_job_id": job.id,
            "last_error": (job.errors[-1] if job.errors else "failed")
            if job.state is JobState.FAILED
            else None,
        }
        if job.state is JobState.SUCCEEDED:
            changes["last_success_at"] = job.finished_at
        try:
            if status is None:
                ctl.store.create(PlanStatus(id=job.plan_id, **changes))
            else:
                ctl.store.update(status.model_copy(update=changes))
            return
        except ConflictError:
            continue


def cancel(ctl: Control, job_id: str) -> Job:
    """Cancel a queued job at once; ask a running job's node to stop (state ``cancelling``)."""
    for _ in range(5):
        job = ctl.store.get(Job, job_id)
        if job.state is JobState.QUEUED:
            target = JobState.CANCELLED
        elif job.state is JobState.RUNNING:
            target = JobState.CANCELLING
        else:
            raise InvalidStateError(
                f"job {job_id} is {job.state}; only queued or running jobs can be cancelled"
            )
        try:
            changed = ctl.store.update(job.transition(target, now=ctl.now()))
        except ConflictError:
            continue
        measurements.job_ended(ctl, changed)  # counts only a job cancelled at once
        return changed
    raise ConflictError(f"job {job_id} kept changing; try again", job_id=job_id)


def expire_lost(ctl: Control) -> list[Job]:
    """Fail running jobs whose node has been silent for LOST_AFTER_LEASES leases (their message is gone too)."""
    now = ctl.now()
    failed = []
    for state in (JobState.RUNNING, JobState.CANCELLING):
        cursor = None
        while True:
            page = ctl.store.query(Job, where={"state": state}, limit=200, cursor=cursor)
            for job in page.items:
                if job.lease_until and now - job.lease_until > (LOST_AFTER_LEASES - 1) * ctl.lease:
                    try:
                        failed.append(ctl.store.update(job.transition(
                            JobState.FAILED, now=now, error=f"node {job.node_id} lost and the job was not redelivered")))  # fmt: skip
                    except ConflictError:
                        continue
                    measurements.job_ended(ctl, failed[-1])
            if not page.next_cursor:
                break
            cursor = page.next_cursor
    return failed


#: ``params["runner"]`` of a job a workflow engine runs (no node, no lease, no queue message)
WORKFLOW_RUNNER = "workflow"


def start_in_workflow(ctl: Control, job: Job, start: Callable[[Job], str]) -> Job:
    """Record ``job`` as running in a workflow engine and start it there with ``start``.

    The job is created running (no queue message, no lease: the engine reports the end
    through :func:`finish_from_workflow`). If the engine refuses, the job is failed with
    the reason and the error re-raised.
    """
    now = ctl.now()
    running = job.model_copy(update={
        "state": JobState.RUNNING, "started_at": now, "attempts": 1,
        "params": {**job.params, "runner": WORKFLOW_RUNNER},
    })  # fmt: skip
    created = ctl.store.create(running)
    measurements.job_started(ctl, created)
    try:
        execution = start(created)
    except Exception as exc:
        measurements.job_ended(ctl, ctl.store.update(
            created.transition(JobState.FAILED, now=ctl.now(), error=f"could not start: {exc}")))  # fmt: skip
        raise
    return ctl.store.update(created.model_copy(update={"result": {"execution": execution}}))


def finish_from_workflow(
    ctl: Control, job_id: str, *, state: JobState, result: dict[str, Any], error: str | None = None
) -> Job | None:
    """End a workflow-run job; None if it had already ended (events may be delivered twice)."""
    for _ in range(5):
        job = ctl.store.get(Job, job_id)
        if job.params.get("runner") != WORKFLOW_RUNNER:
            raise InvalidStateError(f"job {job_id} is not run by a workflow engine", job_id=job_id)
        if job.terminal:
            return None
        to = JobState.CANCELLED if job.state is JobState.CANCELLING and state is JobState.FAILED else state
        done = job.transition(to, now=ctl.now(), error=error)
        try:
            ended = ctl.store.update(done.model_copy(update={"result": {**job.result, **result}}))
        except ConflictError:
            continue
        measurements.job_ended(ctl, ended)
        return ended
    raise ConflictError(f"job {job_id} kept changing", job_id=job_id)


def new_job(
    kind: JobKind, *, plan_id: str | None, reason: str, created_by: str, params: dict[str, Any]
) -> Job:
    return Job(
        id=new_id("job"), job_kind=kind, plan_id=plan_id, reason=reason, created_by=created_by, params=params
    )
