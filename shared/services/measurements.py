"""What the control plane measures, as it records the events (the one emitter of every
catalogue metric: nodes and workflow engines report, the control plane counts).

Each function is called where the event is recorded exactly once: after the conditional
write that made the job start or end (a retried completion fails that write first, a
redelivered workflow event finds the job already ended), and once per scheduler tick.
Values the node reported are untrusted: anything that is not a non-negative number is
left out rather than failing the completion that carries it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from shared.domain import metrics as m
from shared.domain.jobs import Job, JobState
from shared.domain.recovery import RecoveryReport
from shared.policies.scheduling import RpoState, RpoStatus
from shared.services.context import Control

#: a stage name the report may carry as a dimension (the flow's names: reconstruct, prepare-os, ...)
_STAGE = re.compile(r"[a-z][a-z0-9-]{0,31}")
_ENDED = {
    JobState.SUCCEEDED: m.JOBS_SUCCEEDED.name,
    JobState.FAILED: m.JOBS_FAILED.name,
    JobState.CANCELLED: m.JOBS_CANCELLED.name,
}


def job_started(ctl: Control, job: Job) -> None:
    ctl.metrics.count(m.JOBS_STARTED.name, kind=str(job.job_kind))


def job_ended(ctl: Control, job: Job) -> None:
    name = _ENDED.get(job.state)
    if name is not None:
        ctl.metrics.count(name, kind=str(job.job_kind))


def _amount(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return None
    return float(value) if value != float("inf") else None


def replication_finished(ctl: Control, job: Job, result: dict[str, Any]) -> None:
    """Per disk of a replication result (``machines[].disks[]``, see node_runtime/agent.py):
    bytes read, bytes new to the repository, bytes stored, throughput; per plan: dedup ratio."""
    read_total = changed_total = 0.0
    machines = result.get("machines")
    for machine in machines if isinstance(machines, list) else []:
        disks = machine.get("disks") if isinstance(machine, dict) else None
        for disk in disks if isinstance(disks, list) else []:
            if not isinstance(disk, dict):
                continue
            read, changed = _amount(disk.get("bytes_read")), _amount(disk.get("bytes_new"))
            stored, seconds = _amount(disk.get("bytes_stored")), _amount(disk.get("seconds"))
            if read is not None:
                ctl.metrics.count(m.REPLICATED_BYTES.name, read)
                read_total += read
                if seconds:
                    ctl.metrics.observe(m.REPLICATION_THROUGHPUT.name, read / seconds)
            if changed is not None:
                ctl.metrics.count(m.CHANGED_BYTES.name, changed)
                changed_total += changed
            if stored is not None:
                ctl.metrics.count(m.REPOSITORY_BYTES_STORED.name, stored)
    if job.plan_id and changed_total > 0:
        ctl.metrics.gauge(m.DEDUP_RATIO.name, read_total / changed_total, plan=job.plan_id)


def recovery_reported(ctl: Control, report: RecoveryReport) -> None:
    """Each machine's stage timings (stages named otherwise than the flow names them are
    left out: a dimension's values must stay few), and the run's RTO."""
    for machine in report.machines():
        for stage in machine.stages:
            if _STAGE.fullmatch(stage.stage):
                ctl.metrics.observe(m.RECOVERY_STAGE_SECONDS.name, stage.seconds, stage=stage.stage)
    if report.rto_seconds is not None:
        ctl.metrics.observe(m.RECOVERY_RTO_SECONDS.name, report.rto_seconds, mode=str(report.mode))


def rpo_measured(ctl: Control, statuses: Iterable[RpoStatus]) -> None:
    """Per replicating plan: the largest lag of its machines that have a point."""
    for status in statuses:
        if status.state is RpoState.PAUSED:
            continue
        lags = [m.lag.total_seconds() for m in status.machines if m.lag is not None]
        if lags:
            ctl.metrics.gauge(m.RPO_LAG_SECONDS.name, max(lags), plan=status.plan_id)


def tick_counted(ctl: Control, created: int, alerts_opened: int) -> None:
    ctl.metrics.count(m.JOBS_CREATED.name, created)
    ctl.metrics.count(m.RPO_ALERTS_OPENED.name, alerts_opened)
