"""RPO compliance over a period: how often each plan met its RPO, and exactly when it did not.

Pure functions: no clock, no I/O. The model (docs/reports.md says the same to users):

* Compliance is computed **per machine** and the plan is breached whenever **any** of its
  machines is: the plan's breach intervals are the union of its machines' intervals, each
  naming the machines involved. A machine is within target at ``t`` while the age of its
  newest point at ``t`` is at most the RPO (``rpo_status`` calls a lag *over* the RPO a
  breach, so a breach starts at ``last_point + rpo`` and ends at the next point's time, or
  at the period end, where it is flagged ``open``).
* The period is ``[start, end)``. Points before ``start`` count for the state at ``start``
  (the newest one at or before ``start``); points at or after ``end`` are ignored.
* A plan created after ``start`` is judged from its ``created_at`` (the *effective* start).
  A machine with no point at or before the effective start counts from the plan's creation,
  with the same grace ``rpo_status`` gives a never-replicated machine: it is breached from
  ``created_at + rpo`` until its first point. A machine with no point at all is breached
  from then to the period end. A plan created at or after ``end`` has an empty period.
* Achieved-RPO samples of a machine: the gap between each point in the period and the
  point before it (which may be before the period), and the age of the newest point at
  the period end. Percentiles are nearest-rank over the plan's machines' samples pooled:
  ``p``-th = the ``ceil(p * n / 100)``-th smallest sample.
* Every point counts, forward and reverse (a failed-over machine protected back is
  protected). Machines no longer in the plan are not reported.
* ``timeline`` (for charts): the period cut into :data:`TIMELINE_BUCKETS` equal buckets,
  each with the largest age any machine's newest point reached in it (a never-replicated
  machine's age counts from the plan's creation) - the peaks of the sawtooth, bounded in size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.domain.plans import ProtectionPlan

#: the longest period one report covers
MAX_PERIOD = timedelta(days=366)
#: how many buckets the chart timeline has
TIMELINE_BUCKETS = 120
_ZERO = timedelta(0)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReportPeriod(_Model):
    """``[start, end)``, ISO 8601; a time without an offset is UTC. ``start < end`` and at
    most :data:`MAX_PERIOD` long (a ``ValidationError`` otherwise)."""

    start: datetime
    end: datetime

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> ReportPeriod:
        if self.start >= self.end:
            raise ValueError("start must be before end")
        if self.end - self.start > MAX_PERIOD:
            raise ValueError(f"the period may be at most {MAX_PERIOD.days} days long")
        return self


class BreachInterval(_Model):
    start: datetime
    end: datetime
    seconds: float = Field(ge=0)
    open: bool = Field(description="Still breached at the period end (no point has ended it yet).")
    machines: list[str] = Field(description="The machines breached during the interval.")


class AchievedRpo(_Model):
    """Nearest-rank percentiles of the achieved-RPO samples, in seconds (None: no sample)."""

    samples: int = Field(ge=0)
    p50_seconds: float | None = None
    p90_seconds: float | None = None
    p99_seconds: float | None = None
    max_seconds: float | None = None


class TimelineBucket(_Model):
    start: datetime
    max_age_seconds: float = Field(
        ge=0, description="The largest age of a machine's newest point in the bucket."
    )


class MachineCompliance(_Model):
    machine_id: str
    points_in_period: int = Field(ge=0)
    state_at_start_from: datetime | None = Field(
        description="The newest point at or before the effective start (None: counted from the plan's creation)."
    )
    achieved: AchievedRpo
    percent_within_target: float | None
    breached_seconds: float = Field(ge=0)
    breaches: list[BreachInterval]


class PlanCompliance(_Model):
    plan_id: str
    plan_name: str
    plan_state: str
    target_seconds: float
    period_start: datetime = Field(
        description="The effective start: the later of the period start and the plan's creation."
    )
    period_end: datetime
    percent_within_target: float | None = Field(
        description="None for an empty period (plan created after it)."
    )
    breached_seconds: float = Field(ge=0)
    achieved: AchievedRpo
    breaches: list[BreachInterval] = Field(description="When any machine was breached (the union, merged).")
    machines: list[MachineCompliance]
    timeline: list[TimelineBucket] = Field(description="Peaks of the achieved RPO, per bucket of the period.")


def percentile(ordered: Sequence[float], p: int) -> float | None:
    """Nearest-rank ``p``-th percentile (``1 <= p <= 100``) of an ascending sequence."""
    if not ordered:
        return None
    rank = max(1, (p * len(ordered) + 99) // 100)
    return ordered[rank - 1]


def _achieved(samples: Iterable[timedelta]) -> AchievedRpo:
    ordered = sorted(s.total_seconds() for s in samples)
    return AchievedRpo(
        samples=len(ordered),
        p50_seconds=percentile(ordered, 50),
        p90_seconds=percentile(ordered, 90),
        p99_seconds=percentile(ordered, 99),
        max_seconds=ordered[-1] if ordered else None,
    )


def _percent(length: timedelta, breached: timedelta) -> float | None:
    if length <= _ZERO:
        return None
    return 100.0 * (length - breached) / length


def _machine(
    machine_id: str,
    times: Sequence[datetime],
    created: datetime,
    start: datetime,
    end: datetime,
    rpo: timedelta,
) -> tuple[MachineCompliance, list[timedelta], list[tuple[datetime, datetime]]]:
    ordered = sorted({t.astimezone(UTC) for t in times if t.astimezone(UTC) < end})
    before = [t for t in ordered if t <= start]
    inside = [t for t in ordered if t > start]
    prior = before[-1] if before else None
    breaches: list[BreachInterval] = []
    samples: list[timedelta] = []

    def breach(since: datetime, until: datetime, *, open_: bool) -> None:
        lo = max(since + rpo, start)
        if lo < until:
            breaches.append(
                BreachInterval(
                    start=lo,
                    end=until,
                    seconds=(until - lo).total_seconds(),
                    open=open_,
                    machines=[machine_id],
                )
            )

    reference = prior if prior is not None else created  # never replicated: counted from creation
    segments: list[tuple[datetime, datetime]] = []  # (age counted from, until)
    for t in inside:
        if prior is not None:
            samples.append(t - prior)
        breach(reference, t, open_=False)
        segments.append((reference, t))
        reference = prior = t
    segments.append((reference, end))
    if prior is not None:
        samples.append(end - prior)
    breach(reference, end, open_=True)
    breached = sum((b.end - b.start for b in breaches), _ZERO)
    return (
        MachineCompliance(
            machine_id=machine_id,
            points_in_period=len(inside),
            state_at_start_from=before[-1] if before else None,
            achieved=_achieved(samples),
            percent_within_target=_percent(end - start, breached),
            breached_seconds=breached.total_seconds(),
            breaches=breaches,
        ),
        samples,
        segments,
    )


def _timeline(
    segments: Iterable[tuple[datetime, datetime]], start: datetime, end: datetime
) -> list[TimelineBucket]:
    """Per bucket, the largest ``min(until, bucket end) - since`` of the segments overlapping it."""
    if start >= end:
        return []
    width = (end - start) / TIMELINE_BUCKETS
    peaks = [_ZERO] * TIMELINE_BUCKETS
    for since, until in segments:
        lo = max(since, start)
        if until <= lo:
            continue
        first = min(TIMELINE_BUCKETS - 1, int((lo - start) / width))
        last = min(TIMELINE_BUCKETS - 1, int((until - start) / width - 1e-9))
        for k in range(first, last + 1):
            age = min(until, start + width * (k + 1)) - since
            if age > peaks[k]:
                peaks[k] = age
    return [
        TimelineBucket(start=start + width * k, max_age_seconds=peaks[k].total_seconds())
        for k in range(TIMELINE_BUCKETS)
    ]


def _union(intervals: Iterable[BreachInterval], end: datetime) -> list[BreachInterval]:
    """Merge overlapping or touching intervals, naming every machine involved."""
    merged: list[tuple[datetime, datetime, set[str]]] = []
    for b in sorted(intervals, key=lambda b: (b.start, b.end)):
        if merged and b.start <= merged[-1][1]:
            lo, hi, who = merged[-1]
            merged[-1] = (lo, max(hi, b.end), who | set(b.machines))
        else:
            merged.append((b.start, b.end, set(b.machines)))
    return [
        BreachInterval(
            start=lo, end=hi, seconds=(hi - lo).total_seconds(), open=hi >= end, machines=sorted(who)
        )
        for lo, hi, who in merged
    ]


def rpo_compliance(
    plan: ProtectionPlan, point_times: Mapping[str, Sequence[datetime]], period: ReportPeriod
) -> PlanCompliance:
    """The plan's RPO compliance over ``period`` (the rules are in the module docstring).

    ``point_times`` maps each machine id to the times of its recovery points (any order,
    timezone-aware; duplicates count once). Points of machines not in the plan are ignored.
    """
    rpo = timedelta(minutes=plan.rpo_minutes)
    created = plan.created_at.astimezone(UTC)
    start = max(period.start, created)
    end = period.end
    if start >= end:
        start = end
    machines: list[MachineCompliance] = []
    samples: list[timedelta] = []
    segments: list[tuple[datetime, datetime]] = []
    for m in plan.machines:
        if start >= end:
            mc = MachineCompliance(
                machine_id=m.machine_id,
                points_in_period=0,
                state_at_start_from=None,
                achieved=AchievedRpo(samples=0),
                percent_within_target=None,
                breached_seconds=0.0,
                breaches=[],
            )
            machines.append(mc)
            continue
        mc, got, spans = _machine(m.machine_id, point_times.get(m.machine_id, ()), created, start, end, rpo)
        machines.append(mc)
        samples.extend(got)
        segments.extend(spans)
    breaches = _union((b for mc in machines for b in mc.breaches), end)
    breached = sum((b.end - b.start for b in breaches), _ZERO)
    return PlanCompliance(
        plan_id=plan.id,
        plan_name=plan.name,
        plan_state=str(plan.state),
        target_seconds=rpo.total_seconds(),
        period_start=start,
        period_end=end,
        percent_within_target=_percent(end - start, breached),
        breached_seconds=breached.total_seconds(),
        achieved=_achieved(samples),
        breaches=breaches,
        machines=machines,
        timeline=_timeline(segments, start, end),
    )
