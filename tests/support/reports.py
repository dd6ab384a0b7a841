"""A seeded history for the report tests (API, CLI, console): plans, points and test recoveries.

``web`` (RPO 60 min) has machines ``a`` and ``b`` with the points of
tests/unit/test_report_policies.py (their breach intervals over 2026-01-10 are worked out
there); ``db`` (RPO 15 min) has no point and a failed test; ``draft`` is a draft (no report
covers it). The clock stands at :data:`NOW`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.domain.plans import PlanState, ProtectionPlan
from shared.domain.points import DiskPoint, RecoveryPoint
from shared.domain.recovery import GroupReport, MachineReport, RecoveryMode, RecoveryReport, StageTiming
from shared.ports.metadata_store import MetadataStore

NOW = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)
G = 1 << 30


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 1, day, hh, mm, tzinfo=UTC)


POINTS = {
    "a": [at(9, 10), at(9, 23, 30), at(10, 0, 45), at(10, 1, 30), at(10, 4), at(10, 22), at(11, 0, 10)],
    "b": [at(10, 3), at(10, 4, 30)],
}


def _plan(pid: str, name: str, machines: list[str], rpo: int, state: PlanState) -> ProtectionPlan:
    return ProtectionPlan(
        id=pid,
        name=name,
        source_site_id="local",
        target_site_id="local",
        rpo_minutes=rpo,
        state=state,
        machines=[
            {"machine_id": m, "disks": [{"disk_id": f"{m}-d0", "source": f"/x/{m}.img"}]} for m in machines
        ],
        created_at=at(1, 0),
        updated_at=at(1, 0),
    )


def _report(rid: str, plan_id: str, finished: datetime, state: str) -> RecoveryReport:
    start = finished - timedelta(minutes=10)
    stages = [
        StageTiming(stage="disks", started_at=start, finished_at=start + timedelta(seconds=240), seconds=240),
        StageTiming(
            stage="boot",
            started_at=start + timedelta(seconds=240),
            finished_at=start + timedelta(seconds=420),
            seconds=180,
        ),
    ]
    machine = MachineReport(
        machine_id="a",
        name="a",
        group="g",
        status="recovered",
        recovery_point_id="p",
        point_time=start,
        stages=stages,
    )
    return RecoveryReport(
        id=rid,
        plan_id=plan_id,
        job_id=f"job-{rid}",
        mode=RecoveryMode.TEST,
        platform="qemu",
        state=state,  # type: ignore[arg-type]
        started_at=start,
        finished_at=finished,
        rto_seconds=420.0 if state == "succeeded" else None,
        groups=[GroupReport(name="g", order=0, machines=[machine])],
        created_at=finished,
        updated_at=finished,
    )


def seed(store: MetadataStore) -> None:
    """Write the history into ``store``."""
    store.create(_plan("web", "Web tier", ["a", "b"], 60, PlanState.ACTIVE))
    store.create(_plan("db", "Database", ["db1"], 15, PlanState.ACTIVE))
    store.create(_plan("draft", "Not yet", ["c"], 15, PlanState.DRAFT))
    n = 0
    for machine, times in POINTS.items():
        for i, t in enumerate(times):
            n += 1
            size = 10 * G if machine == "a" else 4 * G
            first = i == 0
            store.create(
                RecoveryPoint(
                    id=f"pt-{n}",
                    plan_id="web",
                    machine_id=machine,
                    run_id=f"run-{n}",
                    time=t,
                    site_id="local",
                    created_at=t,
                    updated_at=t,
                    disks=[
                        DiskPoint(
                            disk_id=f"{machine}-d0",
                            point_id=f"p{n}",
                            disk_size=size,
                            bytes_new=size // 2 if first else 64 << 20,
                            bytes_stored=size // 4 if first else 32 << 20,
                        )
                    ],
                )
            )
    store.create(_report("rep-web-1", "web", NOW - timedelta(days=1), "succeeded"))
    store.create(_report("rep-db-1", "db", NOW - timedelta(days=2), "failed"))
