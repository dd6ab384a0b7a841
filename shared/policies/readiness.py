"""Recovery readiness: has each plan proved, recently, that it recovers?

Pure functions taking ``now``. Only **test** recoveries count (a failover is not a
rehearsal). A report's outcome is its ``state``: ``succeeded`` is a success; ``partial``
(some machine did not come up) and ``failed`` are failures. Reports are ordered by
``finished_at``. The state, first match wins:

* ``failed``: the newest test recovery did not succeed;
* ``never-tested``: no test recovery succeeded (and none failed, see above);
* ``stale``: the last successful test finished more than ``stale_after`` before ``now``;
* ``ready``: otherwise.

The last measured RTO comes from the last successful test: its total ``rto_seconds`` and,
per stage, the stage's span across the run's machines (earliest start to latest finish),
in the order the stages first started.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.plans import ProtectionPlan
from shared.domain.recovery import RecoveryMode, RecoveryReport

#: a successful test older than this makes a plan ``stale`` unless the caller says otherwise
DEFAULT_STALE_AFTER = timedelta(days=30)


class ReadinessState(StrEnum):
    READY = "ready"
    STALE = "stale"
    NEVER_TESTED = "never-tested"
    FAILED = "failed"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecoveryTestRun(_Model):
    report_id: str
    job_id: str
    state: str
    finished_at: datetime
    age_seconds: float
    rto_seconds: float | None = None


class StageRto(_Model):
    stage: str
    seconds: float = Field(ge=0, description="Earliest start to latest finish of the stage across machines.")


class PlanReadiness(_Model):
    plan_id: str
    plan_name: str
    state: ReadinessState
    reason: str
    tests: int = Field(ge=0, description="Test recoveries on record.")
    last_success: RecoveryTestRun | None = None
    last_failure: RecoveryTestRun | None = Field(
        default=None, description="Set only when newer than the last success."
    )
    rto_seconds: float | None = Field(default=None, description="Total RTO of the last successful test.")
    stages: list[StageRto] = Field(default_factory=list)


def _run(report: RecoveryReport, now: datetime) -> RecoveryTestRun:
    return RecoveryTestRun(
        report_id=report.id,
        job_id=report.job_id,
        state=report.state,
        finished_at=report.finished_at,
        age_seconds=max(0.0, (now - report.finished_at).total_seconds()),
        rto_seconds=report.rto_seconds,
    )


def stage_spans(report: RecoveryReport) -> list[StageRto]:
    """Per stage, earliest start to latest finish across the report's machines."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for machine in report.machines():
        for s in machine.stages:
            lo, hi = spans.get(s.stage, (s.started_at, s.finished_at))
            spans[s.stage] = (min(lo, s.started_at), max(hi, s.finished_at))
    ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
    return [StageRto(stage=name, seconds=max(0.0, (hi - lo).total_seconds())) for name, (lo, hi) in ordered]


def readiness(
    plan: ProtectionPlan,
    reports: Iterable[RecoveryReport],
    now: datetime,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
) -> PlanReadiness:
    """The plan's readiness at ``now`` from its recovery reports (others' and non-test ones are ignored)."""
    tests = sorted(
        (r for r in reports if r.plan_id == plan.id and r.mode is RecoveryMode.TEST),
        key=lambda r: (r.finished_at, r.id),
    )
    successes = [r for r in tests if r.state == "succeeded"]
    success = successes[-1] if successes else None
    newest = tests[-1] if tests else None
    failure = newest if newest is not None and newest.state != "succeeded" else None
    state, reason = ReadinessState.READY, "the last test recovery succeeded"
    if failure is not None:
        state = ReadinessState.FAILED
        reason = f"the last test recovery ({failure.id}) {failure.state}" + (
            "" if success else "; none has succeeded"
        )
    elif success is None:
        state, reason = ReadinessState.NEVER_TESTED, "no test recovery on record"
    elif (age := now - success.finished_at) > stale_after:
        state = ReadinessState.STALE
        reason = f"the last successful test is {age.days} days old (stale after {stale_after.days} days)"
    return PlanReadiness(
        plan_id=plan.id,
        plan_name=plan.name,
        state=state,
        reason=reason,
        tests=len(tests),
        last_success=_run(success, now) if success else None,
        last_failure=_run(failure, now) if failure else None,
        rto_seconds=success.rto_seconds if success else None,
        stages=stage_spans(success) if success else [],
    )
