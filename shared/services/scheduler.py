"""One scheduler tick: read plans, points and jobs; create the due jobs; raise RPO alerts;
deliver the notification outbox (:mod:`shared.services.notify`).

Runs every minute (EventBridge -> Lambda in AWS; a loop in ``lifeboat up``). Two ticks
racing are harmless: due jobs get ids derived from the policy's dedup key, so the second
create fails and no second job exists; alerts have deterministic ids too.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from shared.domain.audit import Alert
from shared.domain.inventory import Site
from shared.domain.jobs import Job, JobKind, JobState
from shared.domain.notifications import NotificationChannel, NotificationEvent
from shared.domain.plans import PlanState, ProtectionPlan
from shared.domain.points import PlanStatus
from shared.errors import ConflictError, LifeboatError
from shared.policies.scheduling import AlertSeverity, Decision, due_jobs, rpo_status
from shared.ports.metadata_store import every
from shared.services import failback, inventory, jobs, measurements, notify
from shared.services.context import Control
from shared.services.plans import replication_params


@contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class SchedulerState:
    plans: list[ProtectionPlan]
    last_points: dict[tuple[str, str], datetime]
    active_jobs: list[Job]


def load_state(ctl: Control) -> SchedulerState:
    plans = list(every(ctl.store, ProtectionPlan))
    last: dict[tuple[str, str], datetime] = {}
    for status in every(ctl.store, PlanStatus):
        for machine_id, m in status.machines.items():
            if m.last_point_at is not None:
                last[(status.id, machine_id)] = m.last_point_at
    active = [
        j
        for s in (JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING)
        for j in every(ctl.store, Job, {"state": s})
    ]
    return SchedulerState(plans, last, active)


@dataclass
class TickReport:
    decisions: list[Decision] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    alerts_opened: list[str] = field(default_factory=list)
    alerts_resolved: list[str] = field(default_factory=list)
    lost_jobs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notifications: notify.DispatchReport = field(default_factory=notify.DispatchReport)


def tick(ctl: Control) -> TickReport:
    """Create due replication jobs and keep RPO alerts in step with reality."""
    report = TickReport()
    now = ctl.now()
    lost = jobs.expire_lost(ctl)
    report.lost_jobs = [j.id for j in lost]
    for job in lost:  # only the tick whose write failed the job sees it here: one event each
        notify.node_lost(ctl, job)
        notify.job_failed(ctl, job)
    state = load_state(ctl)
    by_id = {p.id: p for p in state.plans}
    active_plans = [p for p in state.plans if p.state is not PlanState.DRAFT]
    with _gc_paused():  # the loaded records make cyclic-GC passes cost more than the decision
        report.decisions = due_jobs(active_plans, state.last_points, state.active_jobs, now)
    sites = {site.id: site for site in every(ctl.store, Site)}  # read once, not once per due plan
    for decision in report.decisions:
        if not decision.due or decision.job is None:
            continue
        plan = by_id[decision.plan_id]
        try:
            job = jobs.new_job(JobKind.REPLICATION, plan_id=plan.id, reason=decision.reason, created_by="scheduler",
                               params=replication_params(ctl, plan, sites))  # fmt: skip
            created, fresh = jobs.submit(ctl, job, dedup_key=decision.job.dedup_key)
            if fresh:
                report.created.append(created.id)
        except LifeboatError as exc:
            report.errors.append(f"plan {plan.id}: {exc}")
    _sync_alerts(ctl, active_plans, state, now, report, notify.load_channels(ctl))
    try:
        report.created += [j.id for j in inventory.due_syncs(ctl, now) if j.created_at >= now]
    except LifeboatError as exc:
        report.errors.append(f"inventory sync: {exc}")
    try:
        report.created += [j.id for j in failback.due_reverse(ctl, now)]
    except LifeboatError as exc:
        report.errors.append(f"reverse protection: {exc}")
    measurements.tick_counted(ctl, len(report.created), len(report.alerts_opened))
    try:  # after the events this tick wrote; a delivery problem never fails the tick
        report.notifications = notify.dispatch(ctl)
    except Exception as exc:  # a bug in a sender must not stop the scheduler loop
        report.errors.append(f"notifications: {type(exc).__name__}: {exc}")
    return report


def _sync_alerts(
    ctl: Control, plans: list[ProtectionPlan], state: SchedulerState, now: datetime, report: TickReport,
    channels: list[NotificationChannel],
) -> None:  # fmt: skip
    sites = {p.id: {p.source_site_id, p.target_site_id} for p in plans}
    wanted: dict[str, Alert] = {}
    with _gc_paused():
        statuses = rpo_status(plans, state.last_points, now)
    measurements.rpo_measured(ctl, statuses)
    for status in statuses:
        for a in status.alerts:
            alert_id = f"rpo-{a.plan_id}-{a.machine_id}"[:128]
            wanted[alert_id] = Alert(
                id=alert_id, alert_kind=f"rpo-{a.severity}", plan_id=a.plan_id, machine_id=a.machine_id,
                severity="critical" if a.severity is AlertSeverity.BREACH else "warning", message=a.message,
                raised_at=now,
            )  # fmt: skip
    known = {a.id: a for a in every(ctl.store, Alert)}  # one listing, not one read per alert
    for alert_id, alert in wanted.items():
        existing = known.get(alert_id)
        try:
            if existing is None:
                ctl.store.create(alert)
                report.alerts_opened.append(alert_id)
            elif existing.state == "resolved" or existing.severity != alert.severity:
                ctl.store.update(existing.model_copy(update={
                    "state": "open", "severity": alert.severity, "alert_kind": alert.alert_kind,
                    "message": alert.message, "raised_at": now, "resolved_at": None}))  # fmt: skip
                report.alerts_opened.append(alert_id)
            else:
                continue
        except ConflictError:
            continue  # another tick did it
        if alert.severity == "critical":  # this tick's write opened (or escalated) it: one event
            _alert_event(ctl, NotificationEvent.RPO_BREACH, alert, now, channels, sites)
    for existing in known.values():
        if existing.state == "open" and existing.id.startswith("rpo-") and existing.id not in wanted:
            try:
                ctl.store.update(existing.model_copy(update={"state": "resolved", "resolved_at": now}))
                report.alerts_resolved.append(existing.id)
            except ConflictError:
                continue
            if existing.severity == "critical":
                _alert_event(ctl, NotificationEvent.RPO_RESOLVED, existing, now, channels, sites)


def _alert_event(
    ctl: Control, event: NotificationEvent, alert: Alert, now: datetime, channels: list[NotificationChannel],
    sites: dict[str, set[str]],
) -> None:  # fmt: skip
    if not channels:
        return
    summary = alert.message if event is NotificationEvent.RPO_BREACH else f"resolved: {alert.message}"
    notify.emit(ctl, event, key=f"{alert.id}@{now.isoformat()}", summary=summary, plan_id=alert.plan_id,
                site_ids=sites.get(alert.plan_id or "", ()), channels=channels,
                details={"alert_id": alert.id, "machine_id": alert.machine_id})  # fmt: skip
