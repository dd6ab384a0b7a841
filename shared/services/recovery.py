"""Recovery use cases: start a recovery run, clean up a test, record what a run reported.

The control plane resolves everything a run needs when the job is created (points,
boot order, mapped NICs, the target) into a :class:`~shared.domain.recovery.FlowInput`;
whoever runs the recovery flow (Step Functions, or a node's local runner) needs nothing
else from the metadata store. Failover and migration pause the plan at once (the
source is lost, or is being cut over); a test leaves replication running.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from shared.domain.hardware import Firmware
from shared.domain.inventory import Site
from shared.domain.jobs import TERMINAL, Job, JobKind, JobState
from shared.domain.plans import PlanState, ProtectionPlan
from shared.domain.points import RecoveryPoint
from shared.domain.recovery import (
    CleanupOutcome,
    FlowInput,
    GroupRun,
    MachineRun,
    RecoveryMode,
    RecoveryReport,
    RunSpec,
    ValidationSpec,
)
from shared.errors import ConflictError, InvalidInputError, InvalidStateError, NotFoundError
from shared.policies.recovery import MappingRefused, boot_sequence, choose_points, map_nics
from shared.policies.sizing import choose_size
from shared.ports.metadata_store import every
from shared.services import jobs, measurements
from shared.services.context import Control
from shared.services.plans import replication_params, set_state

#: platforms that isolate a test NIC by themselves when the plan maps no test network (QEMU
#: restricted user networking; on Azure a virtual network of the run's own, without peering)
PLATFORMS_THAT_ISOLATE = frozenset({"qemu", "azure"})
RECOVERY_KINDS = frozenset({JobKind.RECOVERY, JobKind.TEST_RECOVERY, JobKind.CLEANUP})


def _refuse_concurrent(ctl: Control, plan_id: str) -> None:
    for job in every(ctl.store, Job, {"plan_id": plan_id}):
        if job.job_kind in RECOVERY_KINDS and job.state not in TERMINAL:
            raise ConflictError(
                f"plan {plan_id} already has {job.job_kind} job {job.id} ({job.state}); wait for it or cancel it",
                job_id=job.id,
            )


def _pending_test(ctl: Control, plan_id: str) -> RecoveryReport | None:
    reports = [
        r for r in every(ctl.store, RecoveryReport, {"plan_id": plan_id})
        if r.mode is RecoveryMode.TEST and r.cleanup_state in ("pending", "cleanup-failed")
    ]  # fmt: skip
    return max(reports, key=lambda r: r.started_at) if reports else None


def build_flow_input(
    plan: ProtectionPlan, site: Site, points: list[RecoveryPoint], *, job_id: str, mode: RecoveryMode,
    point_time: datetime | None, now: datetime,
) -> FlowInput:  # fmt: skip
    """Resolve a run: points, boot order, NICs and target (raises with a reason if it cannot run)."""
    if site.recovery_target is None:
        raise InvalidStateError(
            f"site {site.id} has no recovery target: set recovery_target on the site first", site_id=site.id
        )
    machines = {m.machine_id: m for m in plan.machines}
    choice = choose_points(points, list(machines), point_time)
    if choice.missing:
        raise InvalidStateError(
            f"no recovery point for {', '.join(choice.missing)}: " + "; ".join(choice.reasons),
            plan_id=plan.id,
        )
    isolates = site.recovery_target.platform in PLATFORMS_THAT_ISOLATE
    groups = []
    for step in boot_sequence(plan):
        runs = []
        for machine_id in step.machine_ids:
            m, point = machines[machine_id], choice.selected[machine_id]
            try:
                nics = map_nics(plan, m, mode, platform_isolates=isolates)
            except MappingRefused as exc:
                raise InvalidInputError(str(exc), plan_id=plan.id) from exc
            size = choose_size(site.recovery_target.platform, point.hardware, m.instance_type, nics=len(nics))
            runs.append(MachineRun(
                machine_id=machine_id, name=m.name or machine_id, instance_type=size.instance_type,
                firmware=point.hardware.firmware if point.hardware else Firmware.BIOS,
                recovery_point_id=point.id, point_time=point.time, disks=point.disks, nics=nics,
                validation=ValidationSpec(marker=m.boot_marker, timeout_seconds=plan.boot_timeout_seconds),
            ))  # fmt: skip
        groups.append(
            GroupRun(name=step.name, order=step.order, delay_seconds=step.delay_seconds, machines=runs)
        )
    run = RunSpec(
        run_id=job_id, job_id=job_id, plan_id=plan.id, plan_name=plan.name, mode=mode,
        target=site.recovery_target, repository_url=site.repository_url, credentials_ref=site.credentials_ref,
        requested_point_time=point_time, started_at=now,
    )  # fmt: skip
    return FlowInput(run=run, groups=groups, notes=choice.reasons)


def start(ctl: Control, plan_id: str, *, mode: RecoveryMode, point_time: datetime | None, actor: str) -> Job:
    """Queue a recovery run of the whole plan (see the module docstring)."""
    plan = ctl.store.get(ProtectionPlan, plan_id)
    if plan.state is PlanState.DRAFT:
        raise InvalidStateError(f"plan {plan_id} is a draft: protect and replicate it first", plan_id=plan_id)
    _refuse_concurrent(ctl, plan_id)
    if mode is RecoveryMode.TEST and (pending := _pending_test(ctl, plan_id)) is not None:
        raise InvalidStateError(
            f"test recovery {pending.id} of plan {plan_id} is still up: clean it up first",
            report_id=pending.id,
        )
    site = ctl.store.get(Site, plan.target_site_id)
    # reverse points (a recovered machine protected back) are failback's, not recovery candidates
    points = [p for p in every(ctl.store, RecoveryPoint, {"plan_id": plan_id}) if p.direction == "forward"]
    kind = JobKind.TEST_RECOVERY if mode is RecoveryMode.TEST else JobKind.RECOVERY
    job = jobs.new_job(
        kind, plan_id=plan.id, reason=f"{mode} recovery by {actor}", created_by=actor, params={}
    )
    flow = build_flow_input(
        plan, site, points, job_id=job.id, mode=mode, point_time=point_time, now=ctl.now()
    )
    params: dict[str, Any] = {"mode": str(mode), "plan_id": plan.id, "flow": flow.model_dump(mode="json")}
    if mode is RecoveryMode.MIGRATION:
        params["final_replication"] = replication_params(ctl, plan, {site.id: site})
    if mode is not RecoveryMode.TEST:
        set_state(ctl, plan_id, PlanState.PAUSED, allowed_from={PlanState.ACTIVE})
    job = job.model_copy(update={"params": params})
    if ctl.workflows is not None and mode is not RecoveryMode.MIGRATION:  # a migration's final
        # incremental needs a node: it runs the whole job there
        workflows = ctl.workflows
        return jobs.start_in_workflow(ctl, job, lambda j: workflows.start("recovery", j.id, params["flow"]))
    created, _ = jobs.submit(ctl, job)
    return created


def start_cleanup(ctl: Control, plan_id: str, *, actor: str) -> Job:
    """Queue the deletion of everything the plan's last test recovery left on the target."""
    plan = ctl.store.get(ProtectionPlan, plan_id)
    _refuse_concurrent(ctl, plan_id)
    report = _pending_test(ctl, plan_id)
    if report is None:
        raise InvalidStateError(f"plan {plan_id} has no test recovery to clean up", plan_id=plan_id)
    site = ctl.store.get(Site, plan.target_site_id)
    job = jobs.new_job(
        JobKind.CLEANUP, plan_id=plan.id, reason=f"clean up test recovery {report.id}, by {actor}",
        created_by=actor, params={},
    )  # fmt: skip
    params = {
        "plan_id": plan.id,
        "report_id": report.id,
        "target": site.recovery_target.model_dump(mode="json") if site.recovery_target else None,
        "machines": [
            {"machine_id": m.machine_id, "resources": [r.model_dump(mode="json") for r in m.resources]}
            for m in report.machines() if m.resources
        ],
    }  # fmt: skip
    job = job.model_copy(update={"params": params})
    if ctl.workflows is not None and params["target"] is not None:
        workflows = ctl.workflows
        payload = {"target": params["target"], "machines": params["machines"]}
        created = jobs.start_in_workflow(ctl, job, lambda j: workflows.start("test-cleanup", j.id, payload))
    else:
        created, _ = jobs.submit(ctl, job)
    _set_cleanup(ctl, report.id, state="running", job_id=created.id)
    return created


def _set_cleanup(
    ctl: Control,
    report_id: str,
    *,
    state: str,
    job_id: str | None = None,
    outcome: CleanupOutcome | None = None,
) -> None:
    for _ in range(5):
        report = ctl.store.get(RecoveryReport, report_id)
        changes: dict[str, Any] = {"cleanup_state": state}
        if job_id:
            changes["cleanup_job_id"] = job_id
        if outcome is not None:
            changes["cleanup"] = outcome
        try:
            ctl.store.update(report.model_copy(update=changes))
            return
        except ConflictError:
            continue
    raise ConflictError(f"report {report_id} kept changing", report_id=report_id)


def job_outcome(result: dict[str, Any]) -> tuple[JobState, str | None]:
    """How a finished recovery or cleanup flow ends its job: succeeded only if every machine
    recovered (or every resource was deleted); the report is kept either way."""
    if "report" in result:
        report = result["report"]
        if report.get("state") == "succeeded":
            return JobState.SUCCEEDED, None
        return JobState.FAILED, f"recovery {report.get('state')}: " + "; ".join(report.get("errors", []))[
            :400
        ]
    failed = result.get("cleanup", {}).get("failed", [])
    if failed:
        return JobState.FAILED, f"{len(failed)} resource(s) could not be deleted"
    return JobState.SUCCEEDED, None


def record_outcome(ctl: Control, job: Job, result: dict[str, Any]) -> list[str]:
    """Store what a finished recovery or cleanup job reported; returns problems to add to the job."""
    problems: list[str] = []
    if job.job_kind in (JobKind.RECOVERY, JobKind.TEST_RECOVERY) and "report" in result:
        try:
            report = RecoveryReport.model_validate(result["report"])
        except ValidationError as exc:
            return [f"the node's recovery report was rejected: {exc.error_count()} invalid fields"]
        if report.id != job.id or report.plan_id != job.plan_id:
            return ["the node's recovery report names another job or plan; not stored"]
        if report.mode is RecoveryMode.TEST and any(m.resources for m in report.machines()):
            report = report.model_copy(update={"cleanup_state": "pending"})
        try:
            ctl.store.create(report.model_copy(update={"revision": 0}))
        except ConflictError:
            pass  # a retried completion
        else:
            measurements.recovery_reported(ctl, report)
    elif job.job_kind is JobKind.CLEANUP and job.params.get("report_id"):
        report_id = str(job.params["report_id"])
        try:
            outcome = CleanupOutcome.model_validate(result.get("cleanup", {}))
        except ValidationError:
            outcome, problems = None, ["the node's cleanup outcome was rejected"]
        cleaned = job.state is JobState.SUCCEEDED and outcome is not None and not outcome.failed
        try:
            _set_cleanup(ctl, report_id, state="cleaned" if cleaned else "cleanup-failed", outcome=outcome)
        except NotFoundError:
            problems.append(f"report {report_id} no longer exists")
    return problems


def report_for(ctl: Control, report_id: str) -> RecoveryReport:
    return ctl.store.get(RecoveryReport, report_id)
