"""Recovery, test-recovery and cleanup jobs on a node: the flow run by the local runner.

The CLI's composition root hands :func:`job_runners` to the node agent. A migration
first runs the plan's final incremental replication on this node and recovers from the
points it just made (cutover); the control plane records those points from the job's
result like any replication's.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from functions.recovery.failback_job import failback_job
from functions.recovery.local_runner import RecoveryFlowError, run_cleanup, run_recovery
from functions.recovery.ports import RecoveryPorts, RunCancelled
from functions.recovery.reading import CachedTargets, TargetFactory, open_existing_repository
from node_runtime.agent import JobContext, JobOutcome, JobRunner
from node_runtime.prep.models import GuestPrep
from node_runtime.prep.remote import prepare_readable_disks
from shared.domain.points import DiskPoint
from shared.domain.recovery import FlowInput
from shared.errors import LifeboatError
from shared.repo.repository import Repository
from shared.services.recovery import job_outcome

log = logging.getLogger("lifeboat.recovery")


def _ports(ctx: JobContext, targets: TargetFactory) -> RecoveryPorts:
    repos: dict[tuple[str, str | None], Repository] = {}
    lock = threading.Lock()

    def repository(url: str, ref: str | None) -> Repository:
        with lock:
            if (url, ref) not in repos:
                repos[(url, ref)] = open_existing_repository(url, ref)
            return repos[(url, ref)]

    def checkpoint() -> None:
        if ctx.cancelled():
            raise RunCancelled("the recovery job was cancelled")

    return RecoveryPorts(
        target_for=CachedTargets(targets), open_repository=repository, checkpoint=checkpoint,
        progress=ctx.progress, notify=ctx.message, guest_prep=guest_prep,
    )  # fmt: skip


def guest_prep(
    disks: list[tuple[Callable[[int, int], bytes], int]], platform: str, planned: Callable[[GuestPrep], None]
) -> tuple[GuestPrep, dict[int, list[tuple[int, bytes]]]]:
    """Guest preparation on this node (libguestfs; scratch space in ``LIFEBOAT_PREP_DIR`` or /tmp)."""
    return prepare_readable_disks(
        disks, target=platform, before_apply=planned, workdir=os.environ.get("LIFEBOAT_PREP_DIR")
    )


def with_final_points(flow: FlowInput, replication: dict[str, Any], job_id: str) -> FlowInput:
    """The flow recovering the points a migration's final incremental just made."""
    made = {m["machine_id"]: m for m in replication.get("machines", [])}
    groups = []
    for group in flow.groups:
        machines = []
        for m in group.machines:
            new = made.get(m.machine_id)
            if new is None:
                machines.append(m)
                continue
            machines.append(m.model_copy(update={
                "recovery_point_id": f"{job_id}-{m.machine_id}"[:128], "point_time": datetime.fromisoformat(new["time"]),
                "disks": [DiskPoint(**d) for d in new["disks"]],
            }))  # fmt: skip
        groups.append(group.model_copy(update={"machines": machines}))
    notes = [
        *flow.notes,
        f"migration: recovering the final incremental of job {job_id} ({len(made)} machines)",
    ]
    return FlowInput.model_validate({**flow.model_dump(), "groups": groups, "notes": notes})


def recovery_job(job: dict[str, Any], ctx: JobContext, targets: TargetFactory) -> JobOutcome:
    params = job["params"]
    result: dict[str, Any] = {}
    try:
        flow = FlowInput.model_validate(params["flow"])
        if params.get("final_replication"):
            ctx.message("migration: final incremental replication before cutover")
            result["replication"] = ctx.replicate(params["final_replication"])
            flow = with_final_points(flow, result["replication"], job["id"])
        report, _ = run_recovery(flow, _ports(ctx, targets))
    except (LifeboatError, RecoveryFlowError) as exc:
        return JobOutcome("failed", result, str(exc))
    result["report"] = report.model_dump(mode="json")
    if ctx.cancelled():
        return JobOutcome(
            "cancelled", result, "cancelled by request: machines not yet validated were removed"
        )
    state, error = job_outcome(result)
    return JobOutcome(str(state), result, error)


def cleanup_job(job: dict[str, Any], ctx: JobContext, targets: TargetFactory) -> JobOutcome:
    params = job["params"]
    if not params.get("target"):
        return JobOutcome("failed", {}, "the test recovery's site has no recovery target any more")
    try:
        outcome = run_cleanup(params, _ports(ctx, targets))
    except LifeboatError as exc:
        return JobOutcome("failed", {}, str(exc))
    result = {"cleanup": outcome.model_dump(mode="json")}
    state, error = job_outcome(result)
    return JobOutcome(str(state), result, error)


def job_runners(targets: TargetFactory) -> dict[str, JobRunner]:
    """Runners for the node agent, keyed by job kind."""

    def recover(job: dict[str, Any], ctx: JobContext) -> JobOutcome:
        return recovery_job(job, ctx, targets)

    def cleanup(job: dict[str, Any], ctx: JobContext) -> JobOutcome:
        return cleanup_job(job, ctx, targets)

    def fail_back(job: dict[str, Any], ctx: JobContext) -> JobOutcome:
        return failback_job(
            job, ctx, ports=lambda: _ports(ctx, targets), open_repository=open_existing_repository
        )

    return {"recovery": recover, "test-recovery": recover, "cleanup": cleanup, "failback": fail_back}
