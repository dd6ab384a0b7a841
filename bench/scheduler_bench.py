#!/usr/bin/env python3
"""Scheduler policy at scale: ``due_jobs`` + ``rpo_status`` over 10,000 plans.

    python3 bench/scheduler_bench.py [--plans 10000] [--jobs 500] [--repeat 5] [--json bench/scheduler_results.json]

Builds (untimed) ``--plans`` plans with 1-5 machines each (about 10% paused, 20% with a
replication window), a latest point per machine (5% never replicated, the rest up to
twice the RPO old) and ``--jobs`` non-terminal replication jobs on distinct plans, all
from a fixed seed. Times one ``due_jobs`` and one ``rpo_status`` call per repeat, prints
a Markdown table row with the medians and writes the raw measurements as JSON.
Target (DESIGN.md): well under 2 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.domain.jobs import Job, JobKind, JobState  # noqa: E402
from shared.domain.plans import (  # noqa: E402
    PlanState,
    ProtectedDisk,
    ProtectedMachine,
    ProtectionPlan,
    ReplicationWindow,
)
from shared.policies.scheduling import due_jobs, rpo_status  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "scheduler_results.json"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def build(
    n_plans: int, n_jobs: int, seed: int
) -> tuple[list[ProtectionPlan], dict[tuple[str, str], datetime], list[Job]]:
    rng = random.Random(seed)
    plans: list[ProtectionPlan] = []
    points: dict[tuple[str, str], datetime] = {}
    for i in range(n_plans):
        pid = f"plan-{i:05d}"
        rpo = rng.choice([5, 15, 15, 30, 60, 240, 1440])
        machines = [f"vm-{j}" for j in range(rng.randint(1, 5))]
        window = None
        if rng.random() < 0.2:
            window = ReplicationWindow(start=f"{rng.randrange(24):02d}:00", end=f"{rng.randrange(24):02d}:30")
        plans.append(
            ProtectionPlan(
                id=pid,
                name=pid,
                source_site_id="src",
                target_site_id="dst",
                machines=[
                    ProtectedMachine(
                        machine_id=m, disks=[ProtectedDisk(disk_id=f"{pid}-{m}", source="/dev/sda")]
                    )
                    for m in machines
                ],
                rpo_minutes=rpo,
                window=window,
                state=PlanState.PAUSED if rng.random() < 0.1 else PlanState.ACTIVE,
                created_at=NOW - timedelta(days=rng.randint(0, 60), seconds=rng.randrange(86400)),
            )
        )
        for m in machines:
            if rng.random() >= 0.05:
                points[(pid, m)] = NOW - timedelta(seconds=rng.uniform(0, 2 * rpo * 60))
    jobs = [
        Job(
            id=f"job-{k:04d}",
            job_kind=JobKind.REPLICATION,
            plan_id=plan.id,
            state=rng.choice([JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING]),
            created_at=NOW - timedelta(minutes=rng.randint(0, 120)),
        )
        for k, plan in enumerate(rng.sample(plans, n_jobs))
    ]
    return plans, points, jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plans", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--json", type=Path, default=RESULTS_JSON)
    args = parser.parse_args()

    plans, points, jobs = build(args.plans, args.jobs, args.seed)
    machines = sum(len(p.machines) for p in plans)

    due_s: list[float] = []
    rpo_s: list[float] = []
    total_s: list[float] = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        decisions = due_jobs(plans, points, jobs, NOW)
        t1 = time.perf_counter()
        statuses = rpo_status(plans, points, NOW)
        t2 = time.perf_counter()
        due_s.append(t1 - t0)
        rpo_s.append(t2 - t1)
        total_s.append(t2 - t0)

    n_due = sum(d.due for d in decisions)
    n_alerts = sum(len(s.alerts) for s in statuses)
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "plans": args.plans,
        "machines": machines,
        "points": len(points),
        "active_jobs": len(jobs),
        "repeat": args.repeat,
        "due_jobs_s": {"median": statistics.median(due_s), "all": due_s},
        "rpo_status_s": {"median": statistics.median(rpo_s), "all": rpo_s},
        "total_s": {"median": statistics.median(total_s), "all": total_s},
        "due_plans": n_due,
        "alerts": n_alerts,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"| scheduler policy | {args.plans:,} plans, {machines:,} machines, {len(jobs)} jobs "
        f"| due_jobs {statistics.median(due_s) * 1000:.0f} ms | rpo_status {statistics.median(rpo_s) * 1000:.0f} ms "
        f"| total {statistics.median(total_s) * 1000:.0f} ms (median of {args.repeat}) "
        f"| {n_due:,} due, {n_alerts:,} alerts |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
