"""The failback cycle of a plan: failover -> reverse protection -> failback -> protected.

* A **failover** that succeeds (into QEMU) puts the plan in ``failed-over`` and records,
  in its :class:`Failback`, the recovered machines' QMP sockets and, per disk, the
  failed-over point a reverse lineage starts from and the origin image failback writes.
* **Reverse protection** replicates the recovered machines (the KVM source, reading their
  dirty bitmaps over NBD) into the repository as lineages ``<disk>.r<cycle>`` whose first
  parent is the failed-over point: only what the recovered machines changed is stored.
  The scheduler runs it every RPO while the plan is ``reverse-protecting``.
* **Failback** pauses the recovered machines, takes a final reverse incremental, writes
  into each origin disk only the blocks that differ (node_runtime/recovery/failback.py),
  commits forward points the origin now holds, removes the recovered machines, and the
  plan is ``active`` again: forward protection resumes incrementally.

Every action is an audited API call; a failed step leaves the plan where it was, with the
error on the Failback record.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from shared.domain.failback import Failback, FailbackStep, Phase, ReverseDisk, ReverseMachine
from shared.domain.inventory import Site, SiteKind
from shared.domain.jobs import TERMINAL, Job, JobKind, JobState
from shared.domain.kvm import kvm_moref
from shared.domain.plans import PlanState, ProtectedMachine, ProtectionPlan
from shared.domain.points import RecoveryPoint
from shared.domain.recovery import FlowInput, RecoveryMode, RecoveryReport
from shared.domain.vsphere import InventoryVm, device_key, inventory_id
from shared.errors import ConflictError, InvalidStateError, NotFoundError
from shared.ports.metadata_store import every
from shared.services import jobs
from shared.services.context import Control
from shared.services.plans import set_state

FAILBACK_KINDS = frozenset({JobKind.REVERSE_REPLICATION, JobKind.FAILBACK})


def get(ctl: Control, plan_id: str) -> Failback:
    try:
        return ctl.store.get(Failback, plan_id)
    except NotFoundError:
        raise NotFoundError(f"plan {plan_id} has not failed over: there is nothing to fail back",
                            plan_id=plan_id) from None  # fmt: skip


# --- failover ------------------------------------------------------------------------------
def _origin(ctl: Control, plan: ProtectionPlan, machine: ProtectedMachine, index: int) -> str:
    """The image a disk of the plan was read from, where failback writes ('' when unknown)."""
    disk = machine.disks[index]
    if machine.vm is None:
        return disk.source
    key = device_key(disk.source)
    try:
        vm = ctl.store.get(InventoryVm, machine.vm.inventory_id or inventory_id(plan.source_site_id, machine.vm.moref))
    except NotFoundError:
        return ""
    return next((d.file for d in vm.disks if d.key == key), "")


def _unsupported(ctl: Control, plan: ProtectionPlan, report: RecoveryReport) -> str | None:
    if report.platform != "qemu":
        return (f"reverse protection reads recovered QEMU machines; machines recovered into {report.platform} "
                "(EBS snapshots, page blobs) cannot be protected in reverse yet")  # fmt: skip
    source = ctl.store.get(Site, plan.source_site_id) if any(m.vm for m in plan.machines) else None
    if source is not None and source.site_kind is not SiteKind.KVM:
        return f"failback writes KVM or image origins; the origin site {source.id} is a {source.site_kind} site"
    return None


def on_failover(ctl: Control, job: Job, report: RecoveryReport) -> Failback | None:
    """A failover succeeded: start the plan's failback cycle (``failed-over``)."""
    if report.mode is not RecoveryMode.FAILOVER or report.state != "succeeded" or not job.plan_id:
        return None
    plan = ctl.store.get(ProtectionPlan, job.plan_id)
    flow = FlowInput.model_validate(job.params["flow"])
    runs = {m.machine_id: m for g in flow.groups for m in g.machines}
    previous = ctl.store.get(Failback, plan.id) if _exists(ctl, plan.id) else None
    cycle = previous.cycle + 1 if previous else 1
    unsupported = _unsupported(ctl, plan, report)
    machines: list[ReverseMachine] = []
    by_id = {m.machine_id: m for m in plan.machines}
    for m in report.machines():
        vm = next((r for r in m.resources if r.type == "qemu-vm" and r.detail.get("qmp_socket")), None)
        if vm is None or m.machine_id not in by_id:
            unsupported = unsupported or f"machine {m.machine_id} was recovered without a QMP socket"
            continue
        disks = [ReverseDisk(disk_id=d.disk_id, reverse_disk_id=f"{d.disk_id}.r{cycle}"[:128], seed_point_id=d.point_id,
                             source=f"device:{i}", origin=_origin(ctl, plan, by_id[m.machine_id], i))
                 for i, d in enumerate(runs[m.machine_id].disks)]  # fmt: skip
        machines.append(ReverseMachine(machine_id=m.machine_id, instance_id=m.instance_id or "",
                                       qmp_socket=vm.detail["qmp_socket"], vm_uuid=vm.detail.get("uuid", ""),
                                       disks=disks))  # fmt: skip
    record = Failback(
        id=plan.id, plan_id=plan.id, cycle=cycle, platform=report.platform, target_site_id=plan.target_site_id,
        failover_job_id=job.id, machines=machines, unsupported=unsupported,
        history=[FailbackStep(phase="failed-over", at=ctl.now(), actor=job.created_by, job_id=job.id,
                              note=unsupported or "")],
    )  # fmt: skip
    if previous is None:
        ctl.store.create(record)
    else:
        ctl.store.update(record.model_copy(update={"revision": previous.revision, "created_at": previous.created_at}))
    set_state(ctl, plan.id, PlanState.FAILED_OVER, allowed_from={PlanState.PAUSED, PlanState.ACTIVE})
    return record


def _exists(ctl: Control, plan_id: str) -> bool:
    try:
        ctl.store.get(Failback, plan_id)
        return True
    except NotFoundError:
        return False


# --- reverse protection --------------------------------------------------------------------
def reverse_params(ctl: Control, plan: ProtectionPlan, fb: Failback) -> dict[str, Any]:
    """A replication job's params reading the recovered machines (the KVM source)."""
    site = ctl.store.get(Site, fb.target_site_id)
    return {
        "plan_id": plan.id,
        "target_site_id": site.id,
        "repository_url": site.repository_url,
        "credentials_ref": site.credentials_ref,
        "bandwidth_limit_mbps": plan.bandwidth_limit_mbps,
        "machines": [
            {"machine_id": m.machine_id, "vm": {"moref": kvm_moref("", m.vm_uuid), "instance_uuid": m.vm_uuid},
             "disks": [{"disk_id": d.reverse_disk_id, "source": d.source, "seed_parent": [d.disk_id, d.seed_point_id]}
                       for d in m.disks]}
            for m in fb.machines
        ],
        "source": {"kind": "kvm", "site_id": site.id, "kvm": {"qmp_sockets": [m.qmp_socket for m in fb.machines]}},
    }  # fmt: skip


def _refuse_open_jobs(ctl: Control, plan_id: str) -> None:
    for job in every(ctl.store, Job, {"plan_id": plan_id}):
        if job.state not in TERMINAL and job.job_kind is not JobKind.REPLICATION:
            raise ConflictError(f"plan {plan_id} has {job.job_kind} job {job.id} ({job.state}); wait for it",
                                job_id=job.id)  # fmt: skip


def _step(ctl: Control, fb: Failback, phase: Phase, *, actor: str, job_id: str | None = None, note: str = "",
          **changes: Any) -> Failback:  # fmt: skip
    for _ in range(5):
        try:
            history = [*fb.history, FailbackStep(phase=phase, at=ctl.now(), actor=actor, job_id=job_id, note=note[:1000])]
            return ctl.store.update(fb.model_copy(update={"phase": phase, "history": history[-200:], **changes}))
        except ConflictError:
            fb = ctl.store.get(Failback, fb.id)
    raise ConflictError(f"failback record {fb.id} kept changing; try again")


def start_reverse(ctl: Control, plan_id: str, *, actor: str, reason: str = "") -> Job:
    """Queue a reverse replication; the first one moves the plan to ``reverse-protecting``."""
    fb = get(ctl, plan_id)
    if fb.unsupported:
        raise InvalidStateError(f"plan {plan_id} cannot be protected in reverse: {fb.unsupported}", plan_id=plan_id)
    plan = ctl.store.get(ProtectionPlan, plan_id)
    if plan.state not in (PlanState.FAILED_OVER, PlanState.REVERSE_PROTECTING):
        raise InvalidStateError(f"plan {plan_id} is {plan.state}; reverse protection starts after a failover",
                                plan_id=plan_id)  # fmt: skip
    _refuse_open_jobs(ctl, plan_id)
    job = jobs.new_job(JobKind.REVERSE_REPLICATION, plan_id=plan_id, reason=reason or f"reverse protection by {actor}",
                       created_by=actor, params=reverse_params(ctl, plan, fb))  # fmt: skip
    created, _ = jobs.submit(ctl, job)
    if plan.state is PlanState.FAILED_OVER:
        set_state(ctl, plan_id, PlanState.REVERSE_PROTECTING, allowed_from={PlanState.FAILED_OVER})
        _step(ctl, fb, "reverse-protecting", actor=actor, job_id=created.id, reverse_job_id=created.id)
    else:
        ctl.store.update(fb.model_copy(update={"reverse_job_id": created.id}))
    return created


def due_reverse(ctl: Control, now: datetime) -> list[Job]:
    """Reverse replications due: every RPO while a plan is reverse-protecting."""
    out: list[Job] = []
    for fb in every(ctl.store, Failback, {"phase": "reverse-protecting"}):
        plan = ctl.store.get(ProtectionPlan, fb.plan_id)
        if plan.state is not PlanState.REVERSE_PROTECTING:
            continue
        if fb.last_reverse_at is not None and now - fb.last_reverse_at < timedelta(minutes=plan.rpo_minutes):
            continue
        if fb.reverse_job_id:
            with contextlib.suppress(NotFoundError):
                if not ctl.store.get(Job, fb.reverse_job_id).terminal:
                    continue
        with contextlib.suppress(ConflictError):
            out.append(start_reverse(ctl, plan.id, actor="scheduler", reason="scheduled reverse protection"))
    return out


# --- failback ------------------------------------------------------------------------------
def start_failback(ctl: Control, plan_id: str, *, verify: bool, actor: str) -> Job:
    """Queue the failback: final reverse incremental, origin writes, forward points, cleanup."""
    fb = get(ctl, plan_id)
    plan = ctl.store.get(ProtectionPlan, plan_id)
    if plan.state is not PlanState.REVERSE_PROTECTING:
        raise InvalidStateError(f"plan {plan_id} is {plan.state}; fail back a plan that is reverse-protecting "
                                "(start reverse protection first)", plan_id=plan_id)  # fmt: skip
    missing = [d.disk_id for m in fb.machines for d in m.disks if not d.origin]
    if missing:
        raise InvalidStateError(f"plan {plan_id}: the origin of disk(s) {', '.join(missing)} is unknown "
                                "(their VM is gone from the inventory); sync the origin site's inventory first",
                                plan_id=plan_id)  # fmt: skip
    _refuse_open_jobs(ctl, plan_id)
    report = ctl.store.get(RecoveryReport, fb.failover_job_id)
    target = ctl.store.get(Site, fb.target_site_id).recovery_target
    by_id = {m.machine_id: m for m in plan.machines}
    params = {
        "plan_id": plan.id, "target_site_id": fb.target_site_id, "verify": verify,
        "origin_site_id": plan.source_site_id,
        "final_replication": reverse_params(ctl, plan, fb),
        "pause": [m.qmp_socket for m in fb.machines],
        "machines": [{"machine_id": m.machine_id, "vm": by_id[m.machine_id].vm is not None,
                      "disks": [{"disk_id": d.disk_id, "reverse_disk_id": d.reverse_disk_id, "origin": d.origin}
                                for d in m.disks]} for m in fb.machines],
        "cleanup": {"target": target.model_dump(mode="json") if target else None,
                    "machines": [{"machine_id": m.machine_id, "resources": [r.model_dump(mode="json") for r in m.resources]}
                                 for m in report.machines() if m.resources]},
    }  # fmt: skip
    job = jobs.new_job(JobKind.FAILBACK, plan_id=plan_id, reason=f"failback by {actor}" + (" (verified)" if verify else ""),
                       created_by=actor, params=params)  # fmt: skip
    created, _ = jobs.submit(ctl, job)
    set_state(ctl, plan_id, PlanState.FAILING_BACK, allowed_from={PlanState.REVERSE_PROTECTING})
    _step(ctl, fb, "failing-back", actor=actor, job_id=created.id, failback_job_id=created.id, last_error=None)
    return created


def resume_forward(ctl: Control, plan_id: str, *, actor: str) -> ProtectionPlan:
    """Resume forward replication of a paused plan, or of a failed-over one whose origin came
    back without a failback (the recovered machines stay; the cycle is closed in its history)."""
    plan = ctl.store.get(ProtectionPlan, plan_id)
    if plan.state is not PlanState.FAILED_OVER:
        return set_state(ctl, plan_id, PlanState.ACTIVE, allowed_from={PlanState.PAUSED})
    resumed = set_state(ctl, plan_id, PlanState.ACTIVE, allowed_from={PlanState.FAILED_OVER})
    with contextlib.suppress(NotFoundError):
        _step(ctl, ctl.store.get(Failback, plan_id), "protected", actor=actor,
              note="forward protection resumed without failback; the recovered machines were left as they are")  # fmt: skip
    return resumed


# --- job completions -----------------------------------------------------------------------
def job_finished(ctl: Control, job: Job, result: dict[str, Any]) -> None:
    """Advance the cycle when one of its jobs ends (called by the completion use case)."""
    if job.plan_id is None or job.job_kind not in FAILBACK_KINDS:
        return
    try:
        fb = ctl.store.get(Failback, job.plan_id)
    except NotFoundError:
        return
    if job.job_kind is JobKind.REVERSE_REPLICATION:
        if job.state is JobState.SUCCEEDED:
            _step(ctl, fb, fb.phase, actor="node", job_id=job.id, note="reverse point recorded",
                  last_reverse_at=job.finished_at, last_error=None)  # fmt: skip
        elif job.state is JobState.FAILED:
            ctl.store.update(fb.model_copy(update={"last_error": (job.errors[-1] if job.errors else "failed")[:2000]}))
        return
    if job.state is JobState.SUCCEEDED:
        set_state(ctl, job.plan_id, PlanState.ACTIVE, allowed_from={PlanState.FAILING_BACK})
        moved = sum(int(d.get("written_bytes", 0)) for d in result.get("failback", {}).get("written", []))
        _step(ctl, fb, "protected", actor="node", job_id=job.id,
              note=f"origin disks written back ({moved} bytes); forward protection resumes")  # fmt: skip
    elif job.state in (JobState.FAILED, JobState.CANCELLED):
        error = (job.errors[-1] if job.errors else str(job.state))[:2000]
        set_state(ctl, job.plan_id, PlanState.REVERSE_PROTECTING, allowed_from={PlanState.FAILING_BACK})
        _step(ctl, fb, "reverse-protecting", actor="node", job_id=job.id, note=f"failback failed: {error}",
              last_error=error)  # fmt: skip


def reverse_points(ctl: Control, plan_id: str) -> list[RecoveryPoint]:
    return [p for p in every(ctl.store, RecoveryPoint, {"plan_id": plan_id}) if p.direction == "reverse"]
