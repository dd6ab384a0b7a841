"""Reports over the control plane's records: RPO compliance over a period, recovery
readiness and storage. Reads the store page by page and leaves every decision to the
policies (``shared/policies/rpo_compliance.py``, ``readiness.py``, ``storage_report.py``)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from shared.domain.plans import PlanState, ProtectionPlan
from shared.domain.points import RecoveryPoint
from shared.domain.recovery import RecoveryMode, RecoveryReport
from shared.policies.readiness import DEFAULT_STALE_AFTER, PlanReadiness, readiness
from shared.policies.rpo_compliance import PlanCompliance, ReportPeriod, rpo_compliance
from shared.policies.storage_report import StorageReport, storage_report
from shared.ports.metadata_store import every
from shared.services.context import Control


def _plans(ctl: Control, plan_id: str | None) -> list[ProtectionPlan]:
    """The plans a report covers: one (NotFoundError if absent) or every non-draft plan
    (a draft never protected anything), in creation order."""
    if plan_id is not None:
        return [ctl.store.get(ProtectionPlan, plan_id)]
    return [p for p in every(ctl.store, ProtectionPlan) if p.state is not PlanState.DRAFT]


def compliance(ctl: Control, period: ReportPeriod, plan_id: str | None = None) -> list[PlanCompliance]:
    """RPO compliance of each plan over ``period``, from its recovery-point records."""
    out = []
    for plan in _plans(ctl, plan_id):
        times: dict[str, list[datetime]] = defaultdict(list)
        for point in every(ctl.store, RecoveryPoint, {"plan_id": plan.id}):
            if point.time < period.end:
                times[point.machine_id].append(point.time)
        out.append(rpo_compliance(plan, times, period))
    return out


def readiness_of_plans(
    ctl: Control, *, plan_id: str | None = None, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> list[PlanReadiness]:
    """Recovery readiness of each plan at the control plane's ``now``."""
    now = ctl.now()
    return [
        readiness(
            plan,
            every(ctl.store, RecoveryReport, {"plan_id": plan.id, "mode": str(RecoveryMode.TEST)}),
            now,
            stale_after,
        )
        for plan in _plans(ctl, plan_id)
    ]


def storage(ctl: Control, *, plan_id: str | None = None) -> StorageReport:
    """Storage per disk, machine and repository from every recovery-point record (of one
    plan: a deleted plan's points still take space, so an unknown plan id is not an error)."""
    return storage_report(every(ctl.store, RecoveryPoint, {"plan_id": plan_id} if plan_id else None))
