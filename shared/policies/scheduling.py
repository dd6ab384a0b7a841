"""Scheduling and RPO status: which plans to replicate now, and how far behind each one is.

Pure functions in the style of :mod:`shared.policies.retention`: no clock, no I/O. The
scheduler passes the plans, the time of each machine's latest recovery point, the jobs
that are not finished yet and ``now``; it gets one decision per plan with a reason the
UI can show. Creating the jobs, and refusing a duplicate ``dedup_key``, is the caller's
job (the metadata store's conditional writes).

One replication job covers a whole plan run (every machine of the plan), so the points
of one run are grouped and crash-consistent across machines. Decisions are therefore
per plan, driven by the plan's *oldest* machine.

Scheduling rules (:func:`due_jobs`), checked in this order; the first one that fails
is the reason the plan is not due:

1. ``paused`` - a paused plan is never due.
2. ``job <id> still <state>`` - a replication job of the plan that is not terminal
   (queued, running, cancelling) blocks the plan. Jobs of other kinds never block.
3. ``outside window HH:MM-HH:MM`` - a plan with a replication window is due only while
   ``now`` is inside ``[start, end)`` (UTC; ``start > end`` wraps midnight, ``start ==
   end`` means the whole day: a zero-length window would never replicate).
4. Staleness - the plan is due once its oldest machine's latest point is at least
   ``lead * rpo`` old (``lead=0.5``: replicate at half the RPO so the RPO is met with
   margin). A machine with no point at all makes the plan due at once, with reason
   ``"never replicated"``.

Invariants (MUST):

- One decision per input plan; a decision has a :class:`JobSpec` iff it is due.
- A plan with a non-terminal replication job is never due.
- ``due`` implies ``next_due_at <= now``; not due implies ``next_due_at`` is ``None``
  (never, unless something changes: paused, or a job is still running) or ``> now``.
  Evaluating again at ``next_due_at`` with the same inputs gives ``due``.
- ``dedup_key`` depends only on the plan, its RPO, ``lead`` and the slot of ``now``:
  schedulers evaluating within one slot build the same key, so at most one job per
  plan and slot is created. Slots are ``lead * rpo`` rounded down to whole minutes
  (at least one minute), aligned to the Unix epoch. A side effect worth knowing: a job
  that fails within its slot is retried in the next slot at the earliest.
- Points newer than ``now`` (clock skew) count as zero minutes old.

Cost: O(plans + machines + jobs); no pairwise loops.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache

from shared.domain.jobs import TERMINAL, Job, JobKind
from shared.domain.plans import PlanState, ProtectionPlan, ReplicationWindow

__all__ = [
    "WARNING_FRACTION",
    "AlertSeverity",
    "Decision",
    "JobSpec",
    "MachineRpo",
    "RpoAlert",
    "RpoState",
    "RpoStatus",
    "due_jobs",
    "rpo_status",
]

REASON_PAUSED = "paused"
REASON_NEVER = "never replicated"

#: ``rpo_status`` warns once a machine's lag exceeds this fraction of the RPO.
WARNING_FRACTION = 0.8

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = timedelta(days=1)
_ZERO = timedelta(0)
_SECOND = timedelta(seconds=1)
_MINUTE = timedelta(minutes=1)

PointKey = tuple[str, str]


# --- models ------------------------------------------------------------------------------------
#: Results are frozen slotted dataclasses rather than pydantic models: they are built by
#: this module, never parsed from input, and at 10,000 plans validation was half the run
#: time. Pydantic serialises them as they are (``TypeAdapter(list[Decision])``).


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """What job to create for a due plan. Callers MUST refuse to create a second job with
    the same ``dedup_key`` (two schedulers racing in one slot produce the same key)."""

    plan_id: str
    job_kind: JobKind = JobKind.REPLICATION
    reason: str
    dedup_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The scheduling verdict for one plan.

    ``priority`` is how far behind the plan is, in RPOs: the age of the oldest
    machine's latest point divided by the RPO (``0.6`` = 60% of the RPO used; a machine
    never replicated counts from the plan's ``created_at``). It is computed for every
    plan, paused or blocked ones included, so the UI can show it; higher is more urgent.
    ``next_due_at`` is when the plan becomes (or became) due if nothing changes, ``None``
    for never (paused, or blocked by a job). ``job`` is set iff ``due``.
    """

    plan_id: str
    due: bool
    reason: str
    next_due_at: datetime | None
    priority: float
    job: JobSpec | None = None


class RpoState(StrEnum):
    MET = "met"
    WARNING = "warning"  # lag > WARNING_FRACTION * rpo, still within the RPO
    BREACHED = "breached"
    PENDING = "pending"  # never replicated, plan younger than its RPO
    PAUSED = "paused"


class AlertSeverity(StrEnum):
    WARNING = "warning"
    BREACH = "breach"


@dataclass(frozen=True, slots=True, kw_only=True)
class RpoAlert:
    """One machine at risk of (``warning``) or past (``breach``) its plan's RPO.
    ``lag`` is ``None`` for a machine that was never replicated."""

    plan_id: str
    machine_id: str
    severity: AlertSeverity
    lag: timedelta | None
    rpo: timedelta
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MachineRpo:
    machine_id: str
    state: RpoState
    last_point_at: datetime | None
    lag: timedelta | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RpoStatus:
    """RPO compliance of one plan.

    ``state`` is the worst machine state (breached > warning > pending > met), or
    ``paused``. ``worst_lag`` is the largest machine lag, ``None`` when any machine
    was never replicated (there is no finite worst lag then).
    """

    plan_id: str
    state: RpoState
    rpo: timedelta
    worst_lag: timedelta | None
    machines: tuple[MachineRpo, ...]
    alerts: tuple[RpoAlert, ...]


# --- helpers -----------------------------------------------------------------------------------
def _require_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive datetime {value.isoformat()}")
    return value.astimezone(UTC)


def _human(value: timedelta) -> str:
    """``timedelta`` as ``"2d3h"``, ``"7m30s"``, ``"0s"``: whole seconds, rounded down."""
    seconds = value.days * 86400 + value.seconds
    if seconds <= 0:
        return "0s"
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return (
        (f"{days}d" if days else "")
        + (f"{hours}h" if hours else "")
        + (f"{minutes}m" if minutes else "")
        + (f"{seconds}s" if seconds else "")
    )


@lru_cache(maxsize=1024)
def _human_cached(value: timedelta) -> str:
    """:func:`_human` for the few distinct RPOs and intervals a fleet uses."""
    return _human(value)


def _created(plan: ProtectionPlan) -> datetime:
    """``plan.created_at`` as aware UTC (a naive value from a store is taken as UTC)."""
    t = plan.created_at
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _hhmm(text: str) -> time:
    return time(int(text[:2]), int(text[3:5]))


class _Window:
    """A replication window as minutes of the UTC day; boundaries are whole minutes."""

    __slots__ = ("end", "label", "start", "whole_day")

    def __init__(self, window: ReplicationWindow) -> None:
        self.start = _hhmm(window.start)
        self.end = _hhmm(window.end)
        self.whole_day = self.start == self.end
        self.label = f"{window.start}-{window.end}"

    def contains(self, t: datetime) -> bool:
        if self.whole_day:
            return True
        tod = t.time().replace(second=0, microsecond=0)  # boundaries are whole minutes
        if self.start < self.end:
            return self.start <= tod < self.end
        return tod >= self.start or tod < self.end

    def next_start_after(self, t: datetime) -> datetime:
        """First opening strictly after ``t`` (``t`` is outside the window)."""
        candidate = datetime.combine(t.date(), self.start, UTC)
        return candidate if candidate > t else candidate + _DAY

    def current_start(self, t: datetime) -> datetime:
        """When the opening that contains ``t`` began."""
        candidate = datetime.combine(t.date(), self.start, UTC)
        return candidate if candidate <= t else candidate - _DAY


def _due_at(stale_at: datetime, now: datetime, window: _Window | None) -> datetime:
    """When the plan becomes (or became) due, given when it goes stale and its window."""
    if window is None or window.whole_day:
        return stale_at
    if stale_at <= now:
        if window.contains(now):
            return max(stale_at, window.current_start(now))
        return window.next_start_after(now)
    return stale_at if window.contains(stale_at) else window.next_start_after(stale_at)


def _dedup_key(plan_id: str, interval: timedelta, now: datetime) -> str:
    return f"{plan_id}:{_slot(max(1, interval // _MINUTE), now)}"


@lru_cache(maxsize=1024)
def _slot(minutes: int, now: datetime) -> str:
    """Start of the ``minutes``-long, epoch-aligned slot holding ``now``, as ``YYYYmmddTHHMMZ``."""
    slot_seconds = minutes * 60
    elapsed = (now - _EPOCH) // _SECOND
    slot_start = _EPOCH + timedelta(seconds=elapsed - elapsed % slot_seconds)
    return f"{slot_start:%Y%m%dT%H%MZ}"


def _check_unique(plans: Sequence[ProtectionPlan]) -> None:
    ids = {p.id for p in plans}
    if len(ids) != len(plans):
        seen: set[str] = set()
        for p in plans:
            if p.id in seen:
                raise ValueError(f"duplicate plan id {p.id!r}")
            seen.add(p.id)


class _Oldest:
    """The plan's oldest machine: its latest point time (or the plan's creation for a
    machine never replicated), the machine, and how many machines have no point."""

    __slots__ = ("at", "machine_id", "never", "never_machine_id")

    def __init__(self, plan: ProtectionPlan, last_points: Mapping[PointKey, datetime]) -> None:
        self.at: datetime | None = None
        self.machine_id = ""
        self.never = 0
        self.never_machine_id = ""
        for machine in plan.machines:
            t = last_points.get((plan.id, machine.machine_id))
            if t is None:
                if not self.never:
                    self.never_machine_id = machine.machine_id
                self.never += 1
                continue
            if t.tzinfo is None:
                raise ValueError(f"last point of {plan.id}/{machine.machine_id} is a naive datetime")
            if self.at is None or t < self.at:
                self.at, self.machine_id = t, machine.machine_id

    def reference(self, plan: ProtectionPlan) -> datetime:
        """The time the plan's lag is measured from."""
        if self.never or self.at is None:
            return _created(plan)
        return self.at


# --- scheduling --------------------------------------------------------------------------------
def due_jobs(
    plans: Sequence[ProtectionPlan],
    last_points: Mapping[PointKey, datetime],
    active_jobs: Iterable[Job],
    now: datetime,
    *,
    lead: float = 0.5,
) -> list[Decision]:
    """Decide, for each plan, whether a replication run should start at ``now``.

    ``last_points`` maps ``(plan_id, machine_id)`` to the time of that machine's latest
    recovery point; machines missing from it were never replicated. ``active_jobs``
    SHOULD hold only non-terminal jobs; terminal ones and jobs of other kinds are
    ignored, so passing extra jobs is harmless. ``lead`` (``0 < lead <= 1``) is the
    fraction of the RPO after which a plan is due.

    Returns one :class:`Decision` per plan, due plans first, each group ordered by
    ``priority`` descending, then ``plan_id``. See the module docstring for the rules.

    Raises ``ValueError`` for a naive ``now`` or point time, a ``lead`` out of range,
    or two plans with the same id.
    """
    now = _require_utc(now, "now")
    if not (isinstance(lead, int | float) and math.isfinite(lead) and 0 < lead <= 1):
        raise ValueError(f"lead must be in (0, 1], got {lead!r}")
    _check_unique(plans)

    blocking: dict[str, Job] = {}
    for job in active_jobs:
        if job.job_kind is not JobKind.REPLICATION or job.plan_id is None or job.state in TERMINAL:
            continue
        held = blocking.get(job.plan_id)
        if held is None or (job.created_at, job.id) < (held.created_at, held.id):
            blocking[job.plan_id] = job

    decisions = [_decide(plan, last_points, blocking.get(plan.id), now, lead) for plan in plans]
    decisions.sort(key=lambda d: (not d.due, -d.priority, d.plan_id))
    return decisions


def _decide(
    plan: ProtectionPlan,
    last_points: Mapping[PointKey, datetime],
    job: Job | None,
    now: datetime,
    lead: float,
) -> Decision:
    rpo = timedelta(minutes=plan.rpo_minutes)
    interval = rpo * lead
    oldest = _Oldest(plan, last_points)
    reference = oldest.reference(plan)
    age = max(_ZERO, now - reference)
    priority = age / rpo

    if not plan.state.replicates_forward:
        reason = REASON_PAUSED if plan.state is PlanState.PAUSED else str(plan.state)  # failback states too
        return Decision(plan_id=plan.id, due=False, reason=reason, next_due_at=None, priority=priority)
    if job is not None:
        return Decision(
            plan_id=plan.id,
            due=False,
            reason=f"job {job.id} still {job.state}",
            next_due_at=None,
            priority=priority,
        )

    if oldest.never:
        stale_at = min(_created(plan), now)
        if oldest.never == len(plan.machines):
            stale_reason = REASON_NEVER
        else:
            stale_reason = f"machine {oldest.never_machine_id} {REASON_NEVER}"
    else:
        stale_at = reference + interval
        where = f" on {oldest.machine_id}" if len(plan.machines) > 1 else ""
        stale_reason = (
            f"last point {_human(age)} ago{where}, RPO {_human_cached(rpo)}: due at {_human_cached(interval)}"
        )

    window = _Window(plan.window) if plan.window is not None else None
    next_due_at = _due_at(stale_at, now, window)
    if window is not None and not window.contains(now):
        return Decision(
            plan_id=plan.id,
            due=False,
            reason=f"outside window {window.label}",
            next_due_at=next_due_at,
            priority=priority,
        )
    if stale_at > now:
        return Decision(
            plan_id=plan.id, due=False, reason=stale_reason, next_due_at=next_due_at, priority=priority
        )
    spec = JobSpec(plan_id=plan.id, reason=stale_reason, dedup_key=_dedup_key(plan.id, interval, now))
    return Decision(
        plan_id=plan.id, due=True, reason=stale_reason, next_due_at=next_due_at, priority=priority, job=spec
    )


# --- RPO status --------------------------------------------------------------------------------
_SEVERITY_ORDER = {RpoState.MET: 0, RpoState.PENDING: 1, RpoState.WARNING: 2, RpoState.BREACHED: 3}


def rpo_status(
    plans: Sequence[ProtectionPlan],
    last_points: Mapping[PointKey, datetime],
    now: datetime,
) -> list[RpoStatus]:
    """Report, per plan and machine, how far behind the latest point is at ``now``.

    A machine's ``lag`` is ``now - last point`` (zero for a point newer than ``now``,
    ``None`` if it was never replicated). Its state is ``breached`` when ``lag > rpo``,
    ``warning`` when ``lag > WARNING_FRACTION * rpo``, else ``met``. A machine never
    replicated is ``pending`` while ``now - plan.created_at <= rpo`` and ``breached``
    after that. Each ``warning`` or ``breached`` machine raises one :class:`RpoAlert`;
    pending machines raise none.

    Paused plans report state ``paused`` for the plan and every machine (lags are
    still computed for display) and raise no alert.

    Returns one :class:`RpoStatus` per plan, in input order. Raises ``ValueError`` for
    a naive ``now`` or point time, or two plans with the same id.
    """
    now = _require_utc(now, "now")
    _check_unique(plans)
    return [_plan_status(plan, last_points, now) for plan in plans]


def _plan_status(plan: ProtectionPlan, last_points: Mapping[PointKey, datetime], now: datetime) -> RpoStatus:
    rpo = timedelta(minutes=plan.rpo_minutes)
    warn_after = rpo * WARNING_FRACTION
    paused = not plan.state.replicates_forward
    plan_age = now - _created(plan)
    rpo_text = _human_cached(rpo)

    machines: list[MachineRpo] = []
    alerts: list[RpoAlert] = []
    worst_lag: timedelta | None = _ZERO
    plan_state = RpoState.MET
    for machine in plan.machines:
        mid = machine.machine_id
        t = last_points.get((plan.id, mid))
        lag: timedelta | None
        if t is None:
            lag = None
            worst_lag = None
            state = RpoState.PENDING if plan_age <= rpo else RpoState.BREACHED
        else:
            if t.tzinfo is None:
                raise ValueError(f"last point of {plan.id}/{mid} is a naive datetime")
            lag = max(_ZERO, now - t)
            if worst_lag is not None and lag > worst_lag:
                worst_lag = lag
            if lag > rpo:
                state = RpoState.BREACHED
            elif lag > warn_after:
                state = RpoState.WARNING
            else:
                state = RpoState.MET

        if paused:
            machines.append(MachineRpo(machine_id=mid, state=RpoState.PAUSED, last_point_at=t, lag=lag))
            continue
        machines.append(MachineRpo(machine_id=mid, state=state, last_point_at=t, lag=lag))
        if _SEVERITY_ORDER[state] > _SEVERITY_ORDER[plan_state]:
            plan_state = state
        if state is RpoState.BREACHED:
            if lag is None:
                message = (
                    f"RPO breached: {mid} in plan {plan.id} has never been replicated "
                    f"(plan created {_human(plan_age)} ago, RPO {rpo_text})"
                )
            else:
                message = (
                    f"RPO breached: {mid} in plan {plan.id} last replicated {_human(lag)} ago, RPO {rpo_text}"
                )
            alerts.append(
                RpoAlert(
                    plan_id=plan.id,
                    machine_id=mid,
                    severity=AlertSeverity.BREACH,
                    lag=lag,
                    rpo=rpo,
                    message=message,
                )
            )
        elif state is RpoState.WARNING:
            alerts.append(
                RpoAlert(
                    plan_id=plan.id,
                    machine_id=mid,
                    severity=AlertSeverity.WARNING,
                    lag=lag,
                    rpo=rpo,
                    message=(
                        f"RPO at risk: {mid} in plan {plan.id} last replicated {_human(lag or _ZERO)} ago, "
                        f"over {WARNING_FRACTION:.0%} of RPO {rpo_text}"
                    ),
                )
            )

    return RpoStatus(
        plan_id=plan.id,
        state=RpoState.PAUSED if paused else plan_state,
        rpo=rpo,
        worst_lag=worst_lag,
        machines=tuple(machines),
        alerts=tuple(alerts),
    )
