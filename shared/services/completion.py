"""Finishing a job: the job's own record, then whatever its kind produced (points, reports)."""

from __future__ import annotations

import contextlib
from typing import Any

from shared.domain.jobs import Job, JobState
from shared.errors import NotFoundError
from shared.services import failback, inventory, jobs, notify, recovery
from shared.services.auth import Principal
from shared.services.context import Control


def complete(
    ctl: Control, principal: Principal, job_id: str, *, state: JobState,
    result: dict[str, Any] | None = None, error: str | None = None,
) -> Job:  # fmt: skip
    """:func:`shared.services.jobs.complete`, then recovery reports and cleanup outcomes are stored;
    a report the control plane refuses is noted in the job's errors (the job keeps its state)."""
    job = jobs.complete(ctl, principal, job_id, state=state, result=result, error=error)
    if job.state is JobState.FAILED:
        notify.job_failed(ctl, job)
    inventory.sync_finished(ctl, job)
    failback.job_finished(ctl, job, result or {})
    if job.job_kind not in recovery.RECOVERY_KINDS:
        return job
    return _recovery_finished(ctl, job, result or {})


def _recovery_finished(ctl: Control, job: Job, result: dict[str, Any]) -> Job:
    """Store the run's report (problems go to the job's errors); a failover starts the failback cycle."""
    problems = recovery.record_outcome(ctl, job, result)
    if problems:
        job = ctl.store.update(job.model_copy(update={"errors": [*job.errors, *problems][-20:]}))
    report_state = None
    if "report" in result and not problems:
        with contextlib.suppress(NotFoundError):
            report = recovery.report_for(ctl, job.id)
            report_state = report.state
            failback.on_failover(ctl, job, report)
    notify.test_recovery_failed(ctl, job, report_state)
    return job


def complete_from_workflow(
    ctl: Control, job_id: str, *, status: str, output: dict[str, Any] | None, error: str | None = None
) -> Job | None:
    """A workflow execution ended (``status``: SUCCEEDED, FAILED, TIMED_OUT, ABORTED):
    end its job and store what it reported. None if the job had already ended."""
    result = output or {}
    if status == "SUCCEEDED":
        state, why = recovery.job_outcome(result)
    else:
        state, why = JobState.FAILED, f"the workflow execution {status.lower()}: {error or 'no details'}"
    job = jobs.finish_from_workflow(ctl, job_id, state=state, result=result, error=why)
    if job is None:
        return None
    if job.state is JobState.FAILED:
        notify.job_failed(ctl, job)
    return _recovery_finished(ctl, job, result)
