"""The report policies on seeded histories whose answers are worked out by hand.

RPO compliance: plan ``web`` (RPO 60 min, created 2026-01-01) over the day
[2026-01-10 00:00, 2026-01-11 00:00), times below are on 2026-01-10 unless said:

* machine ``a``: 01-09 10:00 and 01-09 23:30 (before: the latter is the state at the
  start), 00:45, 01:30, 04:00, 22:00, and 01-11 00:10 (after the end: ignored).
  Breaches: [00:30, 00:45), [02:30, 04:00), [05:00, 22:00), [23:00, 24:00) open
  = 15 + 90 + 1020 + 60 = 1185 min. Samples: 75, 45, 150, 1080 and the age at the end 120.
* machine ``b``: 03:00 and 04:30, nothing before the period: counted from the plan's
  creation, so breached from the start. Breaches: [00:00, 03:00), [04:00, 04:30),
  [05:30, 24:00) open = 180 + 30 + 1110 = 1320 min. Samples: 90 and the age at the end 1170.
* the plan: the union, [00:00, 04:30) (a and b; touching intervals merge) and
  [05:00, 24:00) open (a and b) = 270 + 1140 = 1410 min; 30 of 1440 minutes within target.
  Pooled samples 45 75 90 120 150 1080 1170: p50 (4th) 120, p90 and p99 (7th) 1170.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from shared.domain.plans import PlanState, ProtectionPlan
from shared.domain.points import DiskPoint, RecoveryPoint
from shared.domain.recovery import GroupReport, MachineReport, RecoveryMode, RecoveryReport, StageTiming
from shared.policies.readiness import ReadinessState, readiness
from shared.policies.rpo_compliance import ReportPeriod, percentile, rpo_compliance
from shared.policies.storage_report import storage_report

pytestmark = pytest.mark.ops
MIN = 60.0


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 1, day, hh, mm, tzinfo=UTC)


def plan(
    machines: tuple[str, ...] = ("a", "b"), rpo: int = 60, created: datetime | None = None
) -> ProtectionPlan:
    return ProtectionPlan(
        id="web",
        name="Web",
        source_site_id="s",
        target_site_id="t",
        rpo_minutes=rpo,
        state=PlanState.ACTIVE,
        machines=[
            {"machine_id": m, "disks": [{"disk_id": f"{m}-d0", "source": f"/x/{m}.img"}]} for m in machines
        ],
        created_at=created or at(1, 0),
    )


DAY = ReportPeriod(start=at(10, 0), end=at(11, 0))
HISTORY = {
    "a": [at(9, 10), at(9, 23, 30), at(10, 0, 45), at(10, 1, 30), at(10, 4), at(10, 22), at(11, 0, 10)],
    "b": [at(10, 4, 30), at(10, 3)],  # any order
    "gone": [at(10, 1)],  # a machine no longer in the plan
}


def spans(breaches) -> list[tuple[datetime, datetime, bool]]:
    return [(b.start, b.end, b.open) for b in breaches]


def test_breach_intervals_per_machine_are_exact() -> None:
    report = rpo_compliance(plan(), HISTORY, DAY)
    a, b = report.machines
    assert a.machine_id == "a" and a.state_at_start_from == at(9, 23, 30) and a.points_in_period == 4
    assert spans(a.breaches) == [
        (at(10, 0, 30), at(10, 0, 45), False),
        (at(10, 2, 30), at(10, 4), False),
        (at(10, 5), at(10, 22), False),
        (at(10, 23), at(11, 0), True),
    ]
    assert a.breached_seconds == 1185 * MIN
    assert a.percent_within_target == pytest.approx(100 * 255 / 1440)
    assert (a.achieved.samples, a.achieved.p50_seconds, a.achieved.p90_seconds, a.achieved.max_seconds) == (
        5,
        120 * MIN,
        1080 * MIN,
        1080 * MIN,
    )
    assert b.state_at_start_from is None and b.points_in_period == 2
    assert spans(b.breaches) == [
        (at(10, 0), at(10, 3), False),
        (at(10, 4), at(10, 4, 30), False),
        (at(10, 5, 30), at(11, 0), True),
    ]
    assert (
        b.breached_seconds == 1320 * MIN and b.achieved.samples == 2 and b.achieved.max_seconds == 1170 * MIN
    )


def test_plan_breaches_are_the_union_of_its_machines() -> None:
    report = rpo_compliance(plan(), HISTORY, DAY)
    assert [m.machine_id for m in report.machines] == ["a", "b"]
    assert spans(report.breaches) == [(at(10, 0), at(10, 4, 30), False), (at(10, 5), at(11, 0), True)]
    assert [b.machines for b in report.breaches] == [["a", "b"], ["a", "b"]]
    assert report.breached_seconds == 1410 * MIN and report.breaches[1].seconds == 1140 * MIN
    assert report.percent_within_target == pytest.approx(100 * 30 / 1440)
    assert (
        report.target_seconds == 3600 and report.period_start == at(10, 0) and report.period_end == at(11, 0)
    )
    got = report.achieved
    assert (got.samples, got.p50_seconds, got.p90_seconds, got.p99_seconds, got.max_seconds) == (
        7,
        120 * MIN,
        1170 * MIN,
        1170 * MIN,
        1170 * MIN,
    )


def test_a_gap_of_exactly_the_rpo_is_no_breach_and_a_point_at_the_start_counts_before_it() -> None:
    history = {"a": [at(10, 0), at(10, 1), at(10, 2), at(10, 3)]}
    report = rpo_compliance(plan(("a",)), history, ReportPeriod(start=at(10, 0), end=at(10, 4)))
    assert report.machines[0].state_at_start_from == at(10, 0) and report.machines[0].points_in_period == 3
    assert report.breaches == [] and report.percent_within_target == 100.0
    assert report.achieved.samples == 4 and report.achieved.max_seconds == 60 * MIN


def test_no_points_at_all_is_breached_the_whole_period() -> None:
    report = rpo_compliance(plan(("a",)), {}, DAY)
    assert spans(report.breaches) == [(at(10, 0), at(11, 0), True)]
    assert report.percent_within_target == 0.0 and report.achieved.samples == 0
    assert report.achieved.p50_seconds is None and report.machines[0].state_at_start_from is None


def test_a_plan_created_in_the_period_is_judged_from_its_creation_with_one_rpo_of_grace() -> None:
    created = at(10, 6)
    report = rpo_compliance(plan(("a",), created=created), {}, DAY)
    assert report.period_start == created
    assert spans(report.breaches) == [(at(10, 7), at(11, 0), True)]
    assert report.percent_within_target == pytest.approx(100 * 60 / 1080)
    # its first point ends the breach; no sample for the time before it (there was no point)
    report = rpo_compliance(plan(("a",), created=created), {"a": [at(10, 9)]}, DAY)
    assert spans(report.breaches) == [(at(10, 7), at(10, 9), False), (at(10, 10), at(11, 0), True)]
    assert report.achieved.samples == 1 and report.achieved.max_seconds == 15 * 60 * MIN


def test_a_plan_created_after_the_period_has_an_empty_one() -> None:
    report = rpo_compliance(plan(("a",), created=at(12, 0)), {"a": [at(12, 1)]}, DAY)
    assert report.percent_within_target is None and report.breaches == [] and report.breached_seconds == 0
    assert report.period_start == report.period_end == at(11, 0)


def test_nearest_rank_percentiles_on_known_data() -> None:
    ten = [float(x) for x in range(1, 11)]
    assert [percentile(ten, p) for p in (50, 90, 99, 100)] == [5.0, 9.0, 10.0, 10.0]
    hundred = [float(x) for x in range(1, 101)]
    assert [percentile(hundred, p) for p in (50, 90, 99)] == [50.0, 90.0, 99.0]
    assert percentile([7.0], 50) == 7.0 and percentile([], 90) is None


def test_report_period_validation() -> None:
    naive = ReportPeriod(start=datetime(2026, 1, 1), end=datetime(2026, 1, 2))
    assert naive.start == at(1, 0) and naive.end.tzinfo is UTC
    for start, end, why in [
        (at(2, 0), at(1, 0), "before end"),
        (at(1, 0), at(1, 0), "before end"),
        (at(1, 0), at(1, 0) + timedelta(days=367), "366 days"),
    ]:
        with pytest.raises(ValidationError, match=why):
            ReportPeriod(start=start, end=end)
    assert ReportPeriod(start=at(1, 0), end=at(1, 0) + timedelta(days=366)).end.year == 2027


# --- readiness ---------------------------------------------------------------------------------
NOW = at(20, 12)


def report(
    rid: str,
    finished: datetime,
    state: str = "succeeded",
    mode: RecoveryMode = RecoveryMode.TEST,
    plan_id: str = "web",
) -> RecoveryReport:
    start = finished - timedelta(minutes=10)

    def stage(name: str, lo: int, hi: int) -> StageTiming:
        return StageTiming(
            stage=name,
            started_at=start + timedelta(seconds=lo),
            finished_at=start + timedelta(seconds=hi),
            seconds=hi - lo,
        )

    machines = [
        MachineReport(
            machine_id=m,
            name=m,
            group="g",
            status="recovered",
            recovery_point_id="p",
            point_time=start,
            stages=[stage("disks", lo, lo + 100), stage("boot", lo + 100, lo + 160 + lo)],
        )
        for m, lo in (("a", 0), ("b", 20))
    ]
    return RecoveryReport(
        id=rid,
        plan_id=plan_id,
        job_id=f"job-{rid}",
        mode=mode,
        platform="qemu",
        state=state,  # type: ignore[arg-type]
        started_at=start,
        finished_at=finished,
        rto_seconds=600.0,
        groups=[GroupReport(name="g", order=0, machines=machines)],
    )


def test_readiness_states() -> None:
    p = plan()
    never = readiness(p, [report("f1", at(19, 0), mode=RecoveryMode.FAILOVER)], NOW)
    assert never.state is ReadinessState.NEVER_TESTED and never.tests == 0 and never.last_success is None

    ready = readiness(
        p, [report("t1", at(5, 0)), report("t2", at(19, 12)), report("x", at(19, 13), plan_id="other")], NOW
    )
    assert ready.state is ReadinessState.READY and ready.tests == 2
    assert ready.last_success is not None and ready.last_success.report_id == "t2"
    assert ready.last_success.age_seconds == 86400 and ready.last_failure is None and ready.rto_seconds == 600
    # a's disks 0-100 s, b's 20-120 s; a's boot 100-160, b's 120-200: spans 120 s and 100 s
    assert [(s.stage, s.seconds) for s in ready.stages] == [("disks", 120.0), ("boot", 100.0)]

    old = [report("t1", datetime(2025, 12, 1, tzinfo=UTC))]
    stale = readiness(p, old, NOW)
    assert stale.state is ReadinessState.STALE and "50 days old" in stale.reason
    assert readiness(p, old, NOW, timedelta(days=60)).state is ReadinessState.READY

    failed = readiness(p, [report("t1", at(18, 0)), report("t2", at(19, 0), state="partial")], NOW)
    assert failed.state is ReadinessState.FAILED and failed.last_failure is not None
    assert failed.last_failure.report_id == "t2" and failed.last_success is not None
    assert failed.last_success.report_id == "t1" and failed.rto_seconds == 600

    recovered = readiness(p, [report("t1", at(18, 0), state="failed"), report("t2", at(19, 0))], NOW)
    assert recovered.state is ReadinessState.READY and recovered.last_failure is None


# --- storage -----------------------------------------------------------------------------------
def point(
    pid: str,
    machine: str,
    t: datetime,
    disks: list[tuple[str, int, int, int | None]],
    site: str = "t",
    plan_id: str = "web",
) -> RecoveryPoint:
    return RecoveryPoint(
        id=pid,
        plan_id=plan_id,
        machine_id=machine,
        run_id=f"run-{pid}",
        time=t,
        site_id=site,
        disks=[
            DiskPoint(disk_id=d, point_id="p" * 8, disk_size=size, bytes_new=new, bytes_stored=stored)
            for d, size, new, stored in disks
        ],
    )


def test_storage_per_disk_machine_repository_and_total() -> None:
    G = 1 << 30
    points = [
        point(
            "1", "a", at(1, 0), [("a-d0", 10 * G, 4 * G, None), ("a-d1", 2 * G, G, 500 << 20)]
        ),  # an old node
        point("2", "a", at(2, 0), [("a-d0", 12 * G, G, G // 2), ("a-d1", 2 * G, 0, 0)]),  # a-d0 grew
        point("3", "b", at(2, 0), [("b-d0", 8 * G, 2 * G, G)], site="other"),
    ]
    got = storage_report(points)
    by_disk = {d.disk_id: d for d in got.disks}
    a0 = by_disk["a-d0"]
    assert (
        a0.points,
        a0.protected_bytes,
        a0.logical_bytes,
        a0.new_bytes,
        a0.stored_bytes,
        a0.unrecorded_points,
    ) == (
        2,
        12 * G,
        22 * G,
        5 * G,
        G // 2,
        1,
    )
    assert a0.reduction_ratio == 44.0 and a0.compression_ratio == 2.0 and a0.newest_point_at == at(2, 0)
    a1 = by_disk["a-d1"]
    assert (a1.stored_bytes, a1.reduction_ratio, a1.compression_ratio) == (
        500 << 20,
        4 * G / (500 << 20),
        G / (500 << 20),
    )
    machines = {m.machine_id: m for m in got.machines}
    assert machines["a"].points == 2 and machines["a"].disks == 2 and machines["a"].protected_bytes == 14 * G
    assert machines["a"].stored_bytes == G // 2 + (500 << 20)
    assert [(r.site_id, r.points, r.stored_bytes) for r in got.repositories] == [
        ("other", 1, G),
        ("t", 2, G // 2 + (500 << 20)),
    ]
    assert got.total.points == 3 and got.total.protected_bytes == 22 * G and got.total.logical_bytes == 34 * G
    assert got.total.unrecorded_points == 1
    empty = storage_report([])
    assert empty.disks == [] and empty.total.points == 0 and empty.total.reduction_ratio is None


def test_the_timeline_holds_the_peak_age_of_each_bucket() -> None:
    timeline = rpo_compliance(plan(("a",)), HISTORY, DAY).timeline
    assert len(timeline) == 120 and timeline[0].start == at(10, 0) and timeline[1].start == at(10, 0, 12)
    peaks = [b.max_age_seconds / MIN for b in timeline]
    # bucket 0 [00:00, 00:12): the point of 23:30 is 42 min old at 00:12; bucket 3 [00:36, 00:48): 75 min at 00:45
    assert (peaks[0], peaks[3], peaks[4]) == (42, 75, 15)
    assert (peaks[109], peaks[110], peaks[119]) == (1080, 12, 120)  # 04:00 -> 22:00; then 22:00 -> the end
    assert rpo_compliance(plan(("a",), created=at(12, 0)), {}, DAY).timeline == []


def test_csv_quotes_per_rfc_4180_and_defuses_formulas() -> None:
    import csv
    import io

    from functions.api.report_csv import readiness_csv

    evil = plan().model_copy(update={"name": '=HYPERLINK("http://x","a, b")'})
    text = readiness_csv([readiness(evil, [], NOW)])
    assert text.splitlines()[0].startswith("plan_id,plan_name,state,reason") and text.endswith("\r\n")
    (row,) = list(csv.DictReader(io.StringIO(text, newline="")))
    assert row["plan_name"] == "'" + '=HYPERLINK("http://x","a, b")' and row["state"] == "never-tested"
    assert row["last_success_at"] == "" and row["tests"] == "0"
