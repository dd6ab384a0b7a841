"""The recovery-flow state handlers: parse the state's model, call the target, answer JSON.

Each handler is ``f(event, ports) -> dict``; :func:`bind` closes them over one
:class:`~functions.recovery.ports.RecoveryPorts` for the local runner, and the Lambda
entry points do the same with ports built from the environment. A handler that fails
after creating something deletes it before raising (the Catch'd cleanup only sees the
results of states that finished).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from functions.recovery.compensate import delete_all as _delete_all
from functions.recovery.models import (
    CleanupMachineInput,
    CleanupMachineOutput,
    CleanupResult,
    CleanupRunState,
    DisksResult,
    InstanceResult,
    MachineState,
    RunChecked,
    RunState,
    StageResult,
    ValidationResult,
)
from functions.recovery.ports import RecoveryPorts
from functions.recovery.prepare_os import prepare_os
from node_runtime.recovery.targets.base import MachineCheck, Target
from shared.domain.recovery import (
    CleanupOutcome,
    DiskArtifact,
    GroupReport,
    Instance,
    InstanceSpec,
    MachineReport,
    RecoveryReport,
    StageTiming,
)
from shared.errors import ServiceUnavailableError, TargetError

Handler = Callable[[dict[str, Any], RecoveryPorts], dict[str, Any]]

#: report name of each stage, in flow order, and the MachineState field holding its result
STAGES: tuple[tuple[str, str], ...] = (
    ("reconstruct", "disks"),
    ("prepare-os", "os"),
    ("create-instance", "instance"),
    ("attach-networks", "network"),
    ("power-on", "power"),
    ("validate-boot", "validation"),
)


def _spec(state: MachineState) -> InstanceSpec:
    m, run = state.machine, state.run
    return InstanceSpec(
        machine_id=m.machine_id, name=m.name, run_id=run.run_id, instance_type=m.instance_type, firmware=m.firmware,
        os_family=state.os.os_family if state.os is not None else "unknown",
        tags={"lifeboat:run": run.run_id, "lifeboat:machine": m.machine_id, "lifeboat:plan": run.plan_id,
              "lifeboat:mode": str(run.mode)},
    )  # fmt: skip


# --- run level ---------------------------------------------------------------------------------
def validate_run(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    """The target can be built, accepts every machine (its preflight) and every chosen point is in the repository."""
    started = ports.now()
    ports.checkpoint()
    state = RunState.model_validate(event)
    target = ports.target_for(state.run.target)
    repo = ports.open_repository(state.run.repository_url, state.run.credentials_ref)
    count = 0
    for group in state.groups:
        for machine in group.machines:
            for disk in machine.disks:
                repo.read_point(disk.disk_id, disk.point_id)  # NotFound/Corrupt name the object
                count += 1
    notes: list[str] = []
    if target.preflight is not None:  # refuse what the platform would refuse before creating anything
        machines = [m for g in state.groups for m in g.machines]
        notes = target.preflight.check([
            MachineCheck(machine_id=m.machine_id, instance_type=m.instance_type, nics=m.nics, disks=len(m.disks))
            for m in machines
        ])  # fmt: skip
    ports.notify(f"checked {count} recovery points; recovering to {target.kind}")
    return RunChecked(
        started_at=started, finished_at=ports.now(), points=count, platform=target.kind, notes=notes
    ).model_dump(mode="json")


# --- machine level -----------------------------------------------------------------------------
def reconstruct_disks(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    started = ports.now()
    ports.checkpoint()
    state = MachineState.model_validate(event)
    target = ports.target_for(state.run.target)
    repo = ports.open_repository(state.run.repository_url, state.run.credentials_ref)
    spec = _spec(state)
    made: list[DiskArtifact] = []
    ports.notify(f"{state.machine.machine_id}: reconstructing {len(state.machine.disks)} disk(s)")
    try:
        with repo.lock(exclusive=False):  # prune must not delete packs under us
            for disk in state.machine.disks:
                point = repo.read_point(disk.disk_id, disk.point_id)
                key = f"{state.machine.machine_id}/{disk.disk_id}"
                progress = functools.partial(ports.progress, key)
                made.append(target.disks.write_disk(repo, point, spec, progress=progress))
                ports.checkpoint()
    except BaseException:
        _delete_all(target.cleaner, [r for a in made for r in a.resources])
        raise
    return DisksResult(started_at=started, finished_at=ports.now(), artifacts=made).model_dump(mode="json")


def _instance_stage(
    event: dict[str, Any], ports: RecoveryPorts, act: Callable[[Target, MachineState], Instance]
) -> dict[str, Any]:
    started = ports.now()
    ports.checkpoint()
    state = MachineState.model_validate(event)
    instance = act(ports.target_for(state.run.target), state)
    return InstanceResult(started_at=started, finished_at=ports.now(), instance=instance).model_dump(
        mode="json"
    )


def create_instance(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    return _instance_stage(event, ports, lambda t, s: t.launcher.create_instance(_spec(s), s.artifacts()))


def attach_networks(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    return _instance_stage(
        event, ports, lambda t, s: t.networks.attach_networks(_instance(s), s.machine.nics)
    )


def power_on(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    def start(target: Target, state: MachineState) -> Instance:
        ports.notify(f"{state.machine.machine_id}: powering on")
        return target.launcher.power_on(_instance(state))

    return _instance_stage(event, ports, start)


def validate_boot(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    """Evidence either way: a machine that fails validation is kept for inspection, not raised."""
    started = ports.now()
    ports.checkpoint()
    state = MachineState.model_validate(event)
    target = ports.target_for(state.run.target)
    evidence = target.validator.validate(_instance(state), state.machine.validation)
    verdict = "validated" if evidence.ok else f"failed validation: {evidence.reason}"
    ports.notify(f"{state.machine.machine_id}: {verdict}")
    return ValidationResult(started_at=started, finished_at=ports.now(), evidence=evidence).model_dump(
        mode="json"
    )


def cleanup_machine(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    """Compensation after a failed state: delete what the machine's finished states created."""
    started = ports.now()
    state = MachineState.model_validate(event)
    target = ports.target_for(state.run.target)
    outcome = _delete_all(target.cleaner, state.resources())
    return CleanupResult(started_at=started, finished_at=ports.now(), outcome=outcome).model_dump(mode="json")


def record_machine(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    """The machine's report (pure: everything is in the state)."""
    state = MachineState.model_validate(event)
    stages: list[StageTiming] = []
    failed_stage = None
    for name, attr in STAGES:
        result: StageResult | None = getattr(state, attr)
        if result is None:
            failed_stage = failed_stage or name
            continue
        ok = not (attr == "validation" and state.validation and not state.validation.evidence.ok)
        stages.append(_timing(name, result.started_at, result.finished_at, ok))
    if state.cleanup is not None:
        stages.append(_timing("cleanup", state.cleanup.started_at, state.cleanup.finished_at,
                              not state.cleanup.outcome.failed))  # fmt: skip
    evidence = state.validation.evidence if state.validation else None
    errors = [e.message() for e in (state.error, state.cleanup_error) if e is not None]
    if state.error is None and evidence is not None and not evidence.ok:
        failed_stage, errors = "validate-boot", [f"boot validation failed: {evidence.reason}"]
    status: Literal["recovered", "validation-failed", "failed"] = (
        "failed"
        if state.error is not None
        else ("recovered" if evidence and evidence.ok else "validation-failed")
    )
    gone = set()
    if state.cleanup is not None:
        gone = {(r.type, r.id) for r in state.cleanup.outcome.deleted + state.cleanup.outcome.already_gone}
    instance = state.latest_instance()
    m = state.machine
    report = MachineReport(
        machine_id=m.machine_id, name=m.name, group=state.group, status=status,
        recovery_point_id=m.recovery_point_id, point_time=m.point_time, stages=stages,
        rto_seconds=(state.validation.finished_at - state.run.started_at).total_seconds()
        if status == "recovered" and state.validation else None,
        instance_id=instance.instance_id if instance else None,
        addresses=instance.addresses if instance else [],
        evidence=evidence,
        os=state.os.model_dump(mode="json", exclude={"artifacts", "started_at", "finished_at"}) if state.os else {},
        failed_stage=failed_stage if status != "recovered" else None,
        error="; ".join(errors) or None,
        resources=[r for r in state.resources() if (r.type, r.id) not in gone],
        cleanup=state.cleanup.outcome if state.cleanup else None,
    )  # fmt: skip
    return report.model_dump(mode="json")


def _timing(stage: str, started: datetime, finished: datetime, ok: bool) -> StageTiming:
    seconds = max(0.0, (finished - started).total_seconds())
    return StageTiming(stage=stage, started_at=started, finished_at=finished, seconds=seconds, ok=ok)


def _instance(state: MachineState) -> Instance:
    instance = state.latest_instance()
    if instance is None:
        raise TargetError(f"machine {state.machine.machine_id} has no instance yet")
    return instance


def write_report(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    """The run's report: boot order, per-machine results, measured RTO; returned as ``{"report": ...}``."""
    state = RunState.model_validate(event)
    run = state.run
    results = state.results or [[] for _ in state.groups]
    groups = []
    for group, machines in zip(state.groups, results, strict=False):
        starts = [s.started_at for m in machines for s in m.stages]
        ends = [s.finished_at for m in machines for s in m.stages]
        groups.append(GroupReport(
            name=group.name, order=group.order, delay_seconds=group.delay_seconds,
            started_at=min(starts) if starts else None, finished_at=max(ends) if ends else None,
            machines=machines,
        ))  # fmt: skip
    machines = [m for g in groups for m in g.machines]
    recovered = [m for m in machines if m.status == "recovered"]
    errors = [state.error.message()] if state.error else []
    errors += [f"{m.machine_id}: {m.error}" for m in machines if m.error]
    outcome: Literal["succeeded", "partial", "failed"]
    if machines and len(recovered) == len(machines) and not state.error:
        outcome = "succeeded"
    elif recovered:
        outcome = "partial"
    else:
        outcome = "failed"
    notes = list(state.notes)
    if state.validated:
        notes.append(f"checked {state.validated.points} recovery point(s) before creating anything")
        notes += state.validated.notes
    report = RecoveryReport(
        id=run.run_id, plan_id=run.plan_id, plan_name=run.plan_name, job_id=run.job_id, mode=run.mode,
        platform=run.target.platform, state=outcome, started_at=run.started_at, finished_at=ports.now(),
        rto_seconds=max(m.rto_seconds or 0.0 for m in recovered) if recovered else None,
        requested_point_time=run.requested_point_time, notes=notes, groups=groups, errors=errors,
    )  # fmt: skip
    return {"report": report.model_dump(mode="json")}


# --- test cleanup ------------------------------------------------------------------------------
def delete_resources(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    ports.checkpoint()
    item = CleanupMachineInput.model_validate(event)
    target: Target = ports.target_for(item.target)
    ports.notify(f"{item.machine.machine_id}: deleting {len(item.machine.resources)} resource(s)")
    outcome = _delete_all(target.cleaner, item.machine.resources)
    return CleanupMachineOutput(machine_id=item.machine.machine_id, outcome=outcome).model_dump(mode="json")


def summarise_cleanup(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    state = CleanupRunState.model_validate(event)
    total = CleanupOutcome()
    for r in state.results or []:
        total.deleted += r.outcome.deleted
        total.already_gone += r.outcome.already_gone
        total.failed += r.outcome.failed
    return {"cleanup": total.model_dump(mode="json")}


def retry_transient(handler: Handler) -> Handler:
    """``handler`` whose transient platform errors (``TargetError`` with ``transient`` and nothing
    left behind) are raised as :class:`ServiceUnavailableError`, which every Task's Retry names:
    the flow retries the state instead of compensating the machine. Resources a failed call
    could not delete make the error final, so a retry never piles up leftovers."""

    @functools.wraps(handler)
    def wrapped(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
        try:
            return handler(event, ports)
        except TargetError as exc:
            if exc.fields.get("transient") and not exc.fields.get("resources"):
                raise ServiceUnavailableError(str(exc), **exc.fields) from exc
            raise

    return wrapped


HANDLERS: dict[str, Handler] = {
    name: retry_transient(h)
    for name, h in {
        "ValidateRun": validate_run,
        "ReconstructDisks": reconstruct_disks,
        "PrepareOS": prepare_os,
        "CreateInstance": create_instance,
        "AttachNetworks": attach_networks,
        "PowerOn": power_on,
        "ValidateBoot": validate_boot,
        "CleanupMachine": cleanup_machine,
        "RecordMachine": record_machine,
        "WriteReport": write_report,
        "DeleteResources": delete_resources,
        "SummariseCleanup": summarise_cleanup,
    }.items()
}


def bind(ports: RecoveryPorts) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    """Handlers closed over ``ports``, keyed by task name."""

    def bound(handler: Handler) -> Callable[[dict[str, Any]], dict[str, Any]]:
        return lambda event: handler(event, ports)

    return {name: bound(h) for name, h in HANDLERS.items()}
