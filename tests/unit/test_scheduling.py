"""Unit tests for shared.policies.scheduling (hand-worked examples plus properties)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.domain.jobs import TERMINAL, Job, JobKind, JobState
from shared.domain.plans import (
    PlanState,
    ProtectedDisk,
    ProtectedMachine,
    ProtectionPlan,
    ReplicationWindow,
)
from shared.policies.scheduling import (
    AlertSeverity,
    Decision,
    RpoState,
    due_jobs,
    rpo_status,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CREATED = NOW - timedelta(days=30)


def at(text: str) -> datetime:
    """'2026-11-24T17:00' -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ago(minutes: float = 0, seconds: float = 0, *, now: datetime = NOW) -> datetime:
    return now - timedelta(minutes=minutes, seconds=seconds)


def make_plan(
    pid: str = "p1",
    *,
    rpo: int = 15,
    machines: tuple[str, ...] = ("m1",),
    window: tuple[str, str] | None = None,
    paused: bool = False,
    created: datetime = CREATED,
) -> ProtectionPlan:
    return ProtectionPlan(
        id=pid,
        name=f"plan {pid}",
        source_site_id="src",
        target_site_id="dst",
        machines=[
            ProtectedMachine(machine_id=m, disks=[ProtectedDisk(disk_id=f"{pid}-{m}-d0", source="/dev/sda")])
            for m in machines
        ],
        rpo_minutes=rpo,
        window=ReplicationWindow(start=window[0], end=window[1]) if window else None,
        state=PlanState.PAUSED if paused else PlanState.ACTIVE,
        created_at=created,
        updated_at=created,
    )


def make_job(
    jid: str = "j-123",
    plan_id: str = "p1",
    *,
    state: JobState = JobState.RUNNING,
    kind: JobKind = JobKind.REPLICATION,
    created: datetime = CREATED,
) -> Job:
    return Job(id=jid, job_kind=kind, plan_id=plan_id, state=state, created_at=created, updated_at=created)


def one(
    plan: ProtectionPlan,
    points: Mapping[tuple[str, str], datetime],
    *,
    jobs: tuple[Job, ...] = (),
    now: datetime = NOW,
    lead: float = 0.5,
) -> Decision:
    (decision,) = due_jobs([plan], points, jobs, now, lead=lead)
    return decision


# --- staleness -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("age", "due", "next_due_at", "reason"),
    [
        (timedelta(minutes=7, seconds=29), False, NOW + timedelta(seconds=1), "last point 7m29s ago"),
        (timedelta(minutes=7, seconds=30), True, NOW, "last point 7m30s ago"),
        (timedelta(minutes=9), True, NOW - timedelta(minutes=1, seconds=30), "last point 9m ago"),
    ],
)
def test_rpo_15_is_due_once_the_last_point_is_7m30s_old(
    age: timedelta, due: bool, next_due_at: datetime, reason: str
) -> None:
    d = one(make_plan(), {("p1", "m1"): NOW - age})

    assert d.due is due
    assert d.next_due_at == next_due_at
    assert d.reason == f"{reason}, RPO 15m: due at 7m30s"
    assert d.priority == pytest.approx(age / timedelta(minutes=15))
    assert (d.job is not None) is due


def test_lead_is_the_fraction_of_the_rpo_after_which_a_plan_is_due() -> None:
    # RPO 30m, lead 1/3 -> due at 10m; last point 6m ago -> due 4m from now.
    d = one(make_plan(rpo=30), {("p1", "m1"): ago(6)}, lead=1 / 3)

    assert not d.due
    assert d.reason == "last point 6m ago, RPO 30m: due at 10m"
    assert d.next_due_at == NOW + timedelta(minutes=4)


def test_the_oldest_machine_drives_a_multi_machine_plan() -> None:
    plan = make_plan(machines=("m1", "m2", "m3"))
    points = {("p1", "m1"): ago(2), ("p1", "m2"): ago(8), ("p1", "m3"): ago(1)}

    d = one(plan, points)

    assert d.due
    assert d.reason == "last point 8m ago on m2, RPO 15m: due at 7m30s"
    assert d.next_due_at == NOW - timedelta(seconds=30)


def test_multi_machine_plan_not_due_until_its_oldest_machine_is() -> None:
    plan = make_plan(machines=("m1", "m2"))
    d = one(plan, {("p1", "m1"): ago(2), ("p1", "m2"): ago(5)})

    assert not d.due
    assert d.reason == "last point 5m ago on m2, RPO 15m: due at 7m30s"
    assert d.next_due_at == NOW + timedelta(minutes=2, seconds=30)


def test_a_point_newer_than_now_counts_as_zero_minutes_old() -> None:
    d = one(make_plan(), {("p1", "m1"): NOW + timedelta(minutes=1)})

    assert not d.due
    assert d.reason == "last point 0s ago, RPO 15m: due at 7m30s"
    assert d.next_due_at == NOW + timedelta(minutes=8, seconds=30)
    assert d.priority == 0.0


def test_points_of_other_plans_are_not_used() -> None:
    d = one(make_plan(), {("p2", "m1"): ago(1)})
    assert d.due
    assert d.reason == "never replicated"


# --- windows -------------------------------------------------------------------------------------
NIGHT = ("22:00", "06:00")


@pytest.mark.parametrize(
    ("now", "due", "next_due_at"),
    [
        # before midnight, inside: point at 23:21, stale since 23:28:30
        (at("2026-11-24T23:30"), True, at("2026-11-24T23:28:30")),
        # after midnight, last second inside: point at 05:50:59, stale since 05:58:29
        (at("2026-11-25T05:59:59"), True, at("2026-11-25T05:58:29")),
        # just after the window closed: next opening tonight
        (at("2026-11-25T06:00"), False, at("2026-11-25T22:00")),
        # a minute before it opens
        (at("2026-11-24T21:59"), False, at("2026-11-24T22:00")),
        # midday
        (at("2026-11-24T12:00"), False, at("2026-11-24T22:00")),
    ],
)
def test_window_wrapping_midnight_with_a_stale_plan(now: datetime, due: bool, next_due_at: datetime) -> None:
    d = one(make_plan(window=NIGHT), {("p1", "m1"): ago(9, now=now)}, now=now)

    assert d.due is due
    assert d.next_due_at == next_due_at
    if due:
        assert d.reason == "last point 9m ago, RPO 15m: due at 7m30s"
    else:
        assert d.reason == "outside window 22:00-06:00"
        assert d.job is None


def test_plan_stale_since_midday_became_due_when_the_window_opened() -> None:
    now = at("2026-11-24T22:05")
    d = one(make_plan(window=NIGHT), {("p1", "m1"): at("2026-11-24T12:00")}, now=now)

    assert d.due
    assert d.next_due_at == at("2026-11-24T22:00")


@pytest.mark.parametrize(
    ("now", "last", "next_due_at"),
    [
        # stale at 23:05:30, inside the window
        (at("2026-11-24T23:00"), at("2026-11-24T22:58"), at("2026-11-24T23:05:30")),
        # stale at 05:57:30, still inside (after midnight)
        (at("2026-11-25T05:55"), at("2026-11-25T05:50"), at("2026-11-25T05:57:30")),
        # stale at 06:01:30, just after closing: waits for tonight
        (at("2026-11-25T05:55"), at("2026-11-25T05:54"), at("2026-11-25T22:00")),
    ],
)
def test_window_moves_next_due_at_of_a_fresh_plan(
    now: datetime, last: datetime, next_due_at: datetime
) -> None:
    d = one(make_plan(window=NIGHT), {("p1", "m1"): last}, now=now)

    assert not d.due
    assert d.next_due_at == next_due_at
    assert d.reason.startswith("last point ")


@pytest.mark.parametrize(
    ("now", "due", "next_due_at"),
    [
        (at("2026-11-24T08:00"), False, at("2026-11-24T09:00")),
        (at("2026-11-24T09:00"), True, at("2026-11-24T09:00")),
        (at("2026-11-24T16:59"), True, at("2026-11-24T09:00")),
        (at("2026-11-24T17:00"), False, at("2026-11-25T09:00")),
        (at("2026-11-24T18:00"), False, at("2026-11-25T09:00")),
    ],
)
def test_daytime_window(now: datetime, due: bool, next_due_at: datetime) -> None:
    d = one(make_plan(window=("09:00", "17:00")), {("p1", "m1"): at("2026-11-23T20:00")}, now=now)

    assert d.due is due
    assert d.next_due_at == next_due_at


def test_window_with_equal_start_and_end_means_the_whole_day() -> None:
    d = one(make_plan(window=("00:00", "00:00")), {("p1", "m1"): ago(9)})
    assert d.due
    assert d.next_due_at == NOW - timedelta(minutes=1, seconds=30)


# --- paused and jobs -----------------------------------------------------------------------------
def test_paused_plan_is_never_due() -> None:
    d = one(make_plan(paused=True), {("p1", "m1"): ago(9)})

    assert d == Decision(plan_id="p1", due=False, reason="paused", next_due_at=None, priority=0.6)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (JobState.RUNNING, "job j-123 still running"),
        (JobState.QUEUED, "job j-123 still queued"),
        (JobState.CANCELLING, "job j-123 still cancelling"),
    ],
)
def test_a_non_terminal_replication_job_blocks_the_plan(state: JobState, reason: str) -> None:
    d = one(make_plan(), {("p1", "m1"): ago(30)}, jobs=(make_job(state=state),))

    assert not d.due
    assert d.reason == reason
    assert d.next_due_at is None
    assert d.job is None


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_a_terminal_job_does_not_block(state: JobState) -> None:
    d = one(make_plan(), {("p1", "m1"): ago(9)}, jobs=(make_job(state=state),))
    assert d.due


def test_jobs_of_other_kinds_or_plans_do_not_block() -> None:
    jobs = (
        make_job("j-rec", kind=JobKind.RECOVERY),
        make_job("j-test", kind=JobKind.TEST_RECOVERY, state=JobState.QUEUED),
        make_job("j-other", plan_id="p2"),
    )
    d = one(make_plan(), {("p1", "m1"): ago(9)}, jobs=jobs)
    assert d.due


def test_the_oldest_blocking_job_is_named() -> None:
    jobs = (
        make_job("j-new", created=NOW - timedelta(minutes=1)),
        make_job("j-old", state=JobState.QUEUED, created=NOW - timedelta(minutes=5)),
    )
    assert one(make_plan(), {}, jobs=jobs).reason == "job j-old still queued"


def test_paused_wins_over_a_running_job() -> None:
    d = one(make_plan(paused=True), {}, jobs=(make_job(),))
    assert d.reason == "paused"


# --- never replicated ----------------------------------------------------------------------------
def test_never_replicated_plan_is_due_since_its_creation() -> None:
    created = NOW - timedelta(hours=2)
    d = one(make_plan(created=created), {})

    assert d.due
    assert d.reason == "never replicated"
    assert d.next_due_at == created
    assert d.priority == pytest.approx(8.0)  # 120m / 15m
    assert d.job is not None
    assert d.job.reason == "never replicated"


def test_never_replicated_plan_created_after_now_is_due_now() -> None:
    d = one(make_plan(created=NOW + timedelta(minutes=5)), {})

    assert d.due
    assert d.next_due_at == NOW
    assert d.priority == 0.0


def test_one_machine_without_points_makes_the_plan_due() -> None:
    plan = make_plan(machines=("m1", "m2"))
    d = one(plan, {("p1", "m1"): ago(1)})

    assert d.due
    assert d.reason == "machine m2 never replicated"


def test_never_replicated_still_waits_for_the_window() -> None:
    d = one(make_plan(window=NIGHT), {})

    assert not d.due
    assert d.reason == "outside window 22:00-06:00"
    assert d.next_due_at == at("2026-11-24T22:00")


# --- dedup keys ----------------------------------------------------------------------------------
def test_job_spec_of_a_due_plan() -> None:
    d = one(make_plan(rpo=20), {("p1", "m1"): ago(12)})

    assert d.job is not None
    assert d.job.plan_id == "p1"
    assert d.job.job_kind is JobKind.REPLICATION
    assert d.job.reason == d.reason == "last point 12m ago, RPO 20m: due at 10m"
    assert d.job.dedup_key == "p1:20261124T1200Z"


@pytest.mark.parametrize(
    ("now", "key"),
    [
        # RPO 20m, lead 0.5 -> 10-minute slots aligned to the epoch (12:00 is a boundary)
        (at("2026-11-24T12:00"), "p1:20261124T1200Z"),
        (at("2026-11-24T12:09:59.999999"), "p1:20261124T1200Z"),
        (at("2026-11-24T12:10"), "p1:20261124T1210Z"),
        (at("2026-11-24T11:59:59"), "p1:20261124T1150Z"),
    ],
)
def test_dedup_key_is_the_same_within_a_slot_and_changes_in_the_next(now: datetime, key: str) -> None:
    d = one(make_plan(rpo=20), {}, now=now)
    assert d.job is not None
    assert d.job.dedup_key == key


def test_dedup_slot_is_lead_times_rpo_rounded_down_to_whole_minutes() -> None:
    # RPO 15m, lead 0.5 -> 7m30s -> 7-minute slots. 2026-11-24T12:00 is minute 29,925,360
    # since the epoch (20,781 days * 1440 + 720); 29,925,360 mod 7 = 3, so the slot
    # started at 11:57 and the next one starts at 12:04.
    keys = [
        one(make_plan(), {}, now=at(t)).job
        for t in ("2026-11-24T11:57", "2026-11-24T12:03:59", "2026-11-24T12:04")
    ]
    assert [k.dedup_key if k else None for k in keys] == [
        "p1:20261124T1157Z",
        "p1:20261124T1157Z",
        "p1:20261124T1204Z",
    ]


def test_dedup_slot_is_at_least_one_minute() -> None:
    # RPO 1m, lead 0.5 -> 30s, rounded down to 0, raised to 1 minute.
    first = one(make_plan(rpo=1), {}, now=at("2026-11-24T12:00:59")).job
    second = one(make_plan(rpo=1), {}, now=at("2026-11-24T12:01:00")).job
    assert first is not None and second is not None
    assert (first.dedup_key, second.dedup_key) == ("p1:20261124T1200Z", "p1:20261124T1201Z")


# --- ordering ------------------------------------------------------------------------------------
def test_due_plans_come_first_most_overdue_first() -> None:
    plans = [
        make_plan("a", rpo=15),  # 9m / 15m = 0.6, due
        make_plan("b", rpo=60),  # 40m / 60m = 0.667, due
        make_plan("c", rpo=15, created=NOW - timedelta(hours=2)),  # never: 120m / 15m = 8.0, due
        make_plan("d", rpo=15),  # 1m / 15m = 0.067, not due
        make_plan("e", rpo=15, paused=True),  # 30m / 15m = 2.0, paused
        make_plan("f", rpo=15),  # 12m / 15m = 0.8, job running
        make_plan("g", rpo=60),  # 36m / 60m = 0.6, due, ties with a -> by id
    ]
    points = {
        ("a", "m1"): ago(9),
        ("b", "m1"): ago(40),
        ("d", "m1"): ago(1),
        ("e", "m1"): ago(30),
        ("f", "m1"): ago(12),
        ("g", "m1"): ago(36),
    }
    decisions = due_jobs(plans, points, [make_job(plan_id="f")], NOW)

    assert [(d.plan_id, d.due) for d in decisions] == [
        ("c", True),
        ("b", True),
        ("a", True),
        ("g", True),
        ("e", False),
        ("f", False),
        ("d", False),
    ]
    assert [round(d.priority, 3) for d in decisions] == [8.0, 0.667, 0.6, 0.6, 2.0, 0.8, 0.067]
    assert due_jobs(list(reversed(plans)), points, [make_job(plan_id="f")], NOW) == decisions


# --- input validation ----------------------------------------------------------------------------
def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        due_jobs([make_plan()], {}, [], NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="timezone-aware"):
        rpo_status([make_plan()], {}, NOW.replace(tzinfo=None))


def test_naive_point_is_refused() -> None:
    points = {("p1", "m1"): ago(1).replace(tzinfo=None)}
    with pytest.raises(ValueError, match="naive"):
        due_jobs([make_plan()], points, [], NOW)
    with pytest.raises(ValueError, match="naive"):
        rpo_status([make_plan()], points, NOW)


@pytest.mark.parametrize("lead", [0, -0.5, 1.01, float("nan"), float("inf")])
def test_lead_out_of_range_is_refused(lead: float) -> None:
    with pytest.raises(ValueError, match="lead"):
        due_jobs([make_plan()], {}, [], NOW, lead=lead)


def test_duplicate_plan_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate plan id 'p1'"):
        due_jobs([make_plan(), make_plan()], {}, [], NOW)
    with pytest.raises(ValueError, match="duplicate plan id 'p1'"):
        rpo_status([make_plan(), make_plan()], {}, NOW)


# --- RPO status ----------------------------------------------------------------------------------
def test_rpo_status_thresholds_per_machine() -> None:
    lags = {
        "met": timedelta(minutes=10),
        "edge": timedelta(minutes=12),  # exactly 80%: not over, still met
        "warn": timedelta(minutes=12, seconds=1),
        "full": timedelta(minutes=15),  # exactly the RPO: not breached yet
        "late": timedelta(minutes=15, seconds=1),
    }
    plan = make_plan(machines=tuple(lags))
    (status,) = rpo_status([plan], {("p1", m): NOW - lag for m, lag in lags.items()}, NOW)

    assert [(m.machine_id, m.state, m.lag) for m in status.machines] == [
        ("met", RpoState.MET, timedelta(minutes=10)),
        ("edge", RpoState.MET, timedelta(minutes=12)),
        ("warn", RpoState.WARNING, timedelta(minutes=12, seconds=1)),
        ("full", RpoState.WARNING, timedelta(minutes=15)),
        ("late", RpoState.BREACHED, timedelta(minutes=15, seconds=1)),
    ]
    assert status.machines[0].last_point_at == NOW - timedelta(minutes=10)
    assert status.state is RpoState.BREACHED
    assert status.rpo == timedelta(minutes=15)
    assert status.worst_lag == timedelta(minutes=15, seconds=1)
    assert [(a.machine_id, a.severity, a.lag) for a in status.alerts] == [
        ("warn", AlertSeverity.WARNING, timedelta(minutes=12, seconds=1)),
        ("full", AlertSeverity.WARNING, timedelta(minutes=15)),
        ("late", AlertSeverity.BREACH, timedelta(minutes=15, seconds=1)),
    ]
    assert all(a.plan_id == "p1" and a.rpo == timedelta(minutes=15) for a in status.alerts)
    assert (
        status.alerts[0].message
        == "RPO at risk: warn in plan p1 last replicated 12m1s ago, over 80% of RPO 15m"
    )
    assert status.alerts[2].message == "RPO breached: late in plan p1 last replicated 15m1s ago, RPO 15m"


@pytest.mark.parametrize(
    ("lags", "state", "worst"),
    [
        ((3, 5), RpoState.MET, timedelta(minutes=5)),
        ((3, 13), RpoState.WARNING, timedelta(minutes=13)),
        ((13, 16), RpoState.BREACHED, timedelta(minutes=16)),
        ((3, None), RpoState.PENDING, None),
        ((13, None), RpoState.WARNING, None),
    ],
)
def test_plan_state_is_the_worst_machine_state(
    lags: tuple[int | None, ...], state: RpoState, worst: timedelta | None
) -> None:
    plan = make_plan(machines=("m1", "m2"), created=NOW - timedelta(minutes=10))
    points = {("p1", f"m{i}"): ago(lag) for i, lag in enumerate(lags, start=1) if lag is not None}
    (status,) = rpo_status([plan], points, NOW)

    assert status.state is state
    assert status.worst_lag == worst


@pytest.mark.parametrize(("created_ago", "state"), [(10, RpoState.PENDING), (15, RpoState.PENDING)])
def test_never_replicated_young_plan_is_pending_without_alert(created_ago: int, state: RpoState) -> None:
    (status,) = rpo_status([make_plan(created=ago(created_ago))], {}, NOW)

    assert status.state is state
    assert status.machines[0].state is state
    assert status.machines[0].lag is None
    assert status.machines[0].last_point_at is None
    assert status.worst_lag is None
    assert status.alerts == ()


def test_never_replicated_plan_older_than_its_rpo_is_breached() -> None:
    (status,) = rpo_status([make_plan(created=ago(16))], {}, NOW)

    assert status.state is RpoState.BREACHED
    (alert,) = status.alerts
    assert alert.severity is AlertSeverity.BREACH
    assert alert.lag is None
    assert alert.message == (
        "RPO breached: m1 in plan p1 has never been replicated (plan created 16m ago, RPO 15m)"
    )


def test_paused_plan_reports_lags_and_raises_no_alert() -> None:
    plan = make_plan(machines=("m1", "m2"), paused=True)
    (status,) = rpo_status([plan], {("p1", "m1"): ago(40)}, NOW)

    assert status.state is RpoState.PAUSED
    assert [(m.state, m.lag) for m in status.machines] == [
        (RpoState.PAUSED, timedelta(minutes=40)),
        (RpoState.PAUSED, None),
    ]
    assert status.worst_lag is None
    assert status.alerts == ()


def test_rpo_status_future_point_has_zero_lag_and_order_follows_input() -> None:
    plans = [make_plan("z"), make_plan("a", rpo=60)]
    points = {("z", "m1"): NOW + timedelta(seconds=30), ("a", "m1"): ago(50)}
    statuses = rpo_status(plans, points, NOW)

    assert [(s.plan_id, s.state, s.worst_lag) for s in statuses] == [
        ("z", RpoState.MET, timedelta(0)),
        ("a", RpoState.WARNING, timedelta(minutes=50)),  # 50m > 48m = 80% of 1h
    ]


# --- properties ----------------------------------------------------------------------------------
_HHMM = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from([0, 15, 30, 59]))


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[list[ProtectionPlan], dict[tuple[str, str], datetime], list[Job], datetime, float]:
    now = NOW + timedelta(seconds=draw(st.integers(0, 2 * 86400)))
    plans: list[ProtectionPlan] = []
    points: dict[tuple[str, str], datetime] = {}
    for i in range(draw(st.integers(1, 5))):
        pid = f"p{i}"
        machines = tuple(f"m{j}" for j in range(draw(st.integers(1, 3))))
        window = draw(st.none() | st.tuples(_HHMM, _HHMM))
        plans.append(
            make_plan(
                pid,
                rpo=draw(st.sampled_from([1, 5, 15, 60, 240, 1440]) | st.integers(1, 10080)),
                machines=machines,
                window=window,
                paused=draw(st.booleans()),
                created=now - timedelta(seconds=draw(st.integers(-600, 7 * 86400))),
            )
        )
        for m in machines:
            offset = draw(st.none() | st.integers(-600, 3 * 86400))
            if offset is not None:
                points[(pid, m)] = now - timedelta(seconds=offset, microseconds=draw(st.integers(0, 999_999)))
    jobs = [
        make_job(
            f"j-{k}",
            plan_id=f"p{draw(st.integers(0, len(plans) - 1))}",
            state=draw(st.sampled_from(list(JobState))),
            kind=draw(st.sampled_from(list(JobKind))),
        )
        for k in range(draw(st.integers(0, 4)))
    ]
    lead = draw(st.floats(0.05, 1.0))
    return plans, points, jobs, now, lead


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_property_blocked_never_due_and_next_due_at_consistent(
    scenario: tuple[list[ProtectionPlan], dict[tuple[str, str], datetime], list[Job], datetime, float],
) -> None:
    plans, points, jobs, now, lead = scenario
    decisions = due_jobs(plans, points, jobs, now, lead=lead)

    assert sorted(d.plan_id for d in decisions) == sorted(p.id for p in plans)
    blocked = {j.plan_id for j in jobs if j.job_kind is JobKind.REPLICATION and j.state not in TERMINAL}
    by_id = {p.id: p for p in plans}
    for d in decisions:
        if d.plan_id in blocked:
            assert not d.due
        assert (d.job is not None) is d.due
        if d.due:
            assert d.next_due_at is None or d.next_due_at <= now
        else:
            assert d.next_due_at is None or d.next_due_at > now
        if d.next_due_at is not None:
            # with unchanged inputs the plan is due at next_due_at
            again = one(by_id[d.plan_id], points, jobs=tuple(jobs), now=d.next_due_at, lead=lead)
            assert again.due, (d, again)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_property_rpo_status_paused_plans_raise_no_alerts(
    scenario: tuple[list[ProtectionPlan], dict[tuple[str, str], datetime], list[Job], datetime, float],
) -> None:
    plans, points, _, now, _ = scenario
    for plan, status in zip(plans, rpo_status(plans, points, now), strict=True):
        assert status.plan_id == plan.id
        assert len(status.machines) == len(plan.machines)
        if plan.state is PlanState.PAUSED:
            assert status.state is RpoState.PAUSED
            assert status.alerts == ()
        else:
            at_risk = [m for m in status.machines if m.state in (RpoState.WARNING, RpoState.BREACHED)]
            assert [a.machine_id for a in status.alerts] == [m.machine_id for m in at_risk]
