#!/usr/bin/env python3
"""MetadataStore listing latency at 10,000 recovery points: SQLite vs DynamoDB (moto).

    python3 bench/metadata_bench.py [--points 10000] [--plans 100] [--pages 200] [--limit 50]
                                    [--backends sqlite,dynamodb] [--json bench/metadata_results.json]

Inserts (timed separately, through ``create``) ``--points`` RecoveryPoints spread evenly
over ``--plans`` plans and 5 machines per plan, one minute apart, from a fixed seed. Then
times ``--pages`` ``query`` calls of ``--limit`` items, newest first like the API's
``GET /points``: half filtered by ``plan_id`` (a random plan's first page, then the next
page through its cursor), half unfiltered (walking the whole listing page after page
through cursors, so deep pages are included). Prints a Markdown table of p50/p99 per
adapter and query shape and writes the raw figures as JSON.

SQLite runs on a file in a temporary directory (WAL, ``synchronous=FULL``: inserts pay an
fsync each). DynamoDB is moto in-process, so its figures measure the adapter plus moto's
Python emulation, not the service's network latency; they show the adapter's request
pattern (one Query per page) costs no more than its peers, not what AWS would answer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.domain.points import DiskPoint, RecoveryPoint  # noqa: E402
from shared.ports.metadata_store import MetadataStore  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "metadata_results.json"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MACHINES_PER_PLAN = 5


def make_points(n_points: int, n_plans: int) -> list[RecoveryPoint]:
    points = []
    for i in range(n_points):
        plan = i % n_plans
        machine = (i // n_plans) % MACHINES_PER_PLAN
        at = T0 + timedelta(minutes=i)
        points.append(
            RecoveryPoint(
                id=f"pt-{i:06d}",
                plan_id=f"plan-{plan:03d}",
                machine_id=f"vm-{plan:03d}-{machine}",
                run_id=f"job-{i // n_plans:05d}-{plan:03d}",
                time=at,
                created_at=at,
                updated_at=at,
                site_id="site-aws",
                disks=[
                    DiskPoint(disk_id=f"d-{plan:03d}-{machine}-{d}", point_id=f"{i:064x}", disk_size=50 << 30)
                    for d in range(2)
                ],
            )
        )
    return points


@contextmanager
def sqlite_store() -> Iterator[MetadataStore]:
    from shared.adapters.local.sqlite_metadata import SqliteMetadataStore

    with tempfile.TemporaryDirectory(prefix="lifeboat-metadata-bench-") as tmp:
        store = SqliteMetadataStore(Path(tmp) / "metadata.db")
        yield store
        store.close()


@contextmanager
def dynamodb_store() -> Iterator[MetadataStore]:
    from moto import mock_aws

    from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        os.environ.pop(var, None)
    os.environ.update(
        AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench"
    )
    with mock_aws():
        yield DynamoMetadataStore.create_table("lifeboat-metadata-bench")


BACKENDS: dict[str, Callable[[], Any]] = {"sqlite": sqlite_store, "dynamodb": dynamodb_store}
LABELS = {"sqlite": "SQLite (file, WAL)", "dynamodb": "DynamoDB (moto in-process)"}


def percentile(samples: list[float], p: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1]


def run_backend(
    name: str, points: list[RecoveryPoint], n_plans: int, pages: int, limit: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    with BACKENDS[name]() as store:
        start = time.perf_counter()
        for point in points:
            store.create(point)
        insert_s = time.perf_counter() - start

        filtered: list[float] = []
        while len(filtered) < pages // 2:
            where = {"plan_id": f"plan-{rng.randrange(n_plans):03d}"}
            cursor = None
            for _ in range(2):  # first page, then its continuation
                t = time.perf_counter()
                page = store.query(RecoveryPoint, where=where, descending=True, limit=limit, cursor=cursor)
                filtered.append(time.perf_counter() - t)
                assert len(page.items) == min(limit, len(points) // n_plans), len(page.items)
                assert all(p.plan_id == where["plan_id"] for p in page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break

        unfiltered: list[float] = []
        cursor = None
        while len(unfiltered) < pages - pages // 2:
            t = time.perf_counter()
            page = store.query(RecoveryPoint, descending=True, limit=limit, cursor=cursor)
            unfiltered.append(time.perf_counter() - t)
            cursor = page.next_cursor  # at the end, None starts the walk again

    def summary(samples: list[float]) -> dict[str, Any]:
        ms = [s * 1000 for s in samples]
        return {
            "n": len(ms),
            "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99),
            "mean_ms": statistics.fmean(ms),
            "all_ms": [round(v, 3) for v in ms],
        }

    return {
        "label": LABELS[name],
        "insert_s": insert_s,
        "inserts_per_s": len(points) / insert_s,
        "filtered_by_plan": summary(filtered),
        "unfiltered": summary(unfiltered),
    }


def table(results: dict[str, dict[str, Any]], limit: int) -> str:
    lines = [
        f"| adapter | page of {limit}, by plan_id: p50 / p99 ms | page of {limit}, unfiltered: p50 / p99 ms | inserts/s |",
        "|---|---:|---:|---:|",
    ]
    for r in results.values():
        f, u = r["filtered_by_plan"], r["unfiltered"]
        lines.append(
            f"| {r['label']} | {f['p50_ms']:.2f} / {f['p99_ms']:.2f} | {u['p50_ms']:.2f} / {u['p99_ms']:.2f}"
            f" | {r['inserts_per_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--plans", type=int, default=100)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--backends", default="sqlite,dynamodb")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=RESULTS_JSON)
    args = ap.parse_args()

    points = make_points(args.points, args.plans)
    results: dict[str, dict[str, Any]] = {}
    for name in args.backends.split(","):
        print(
            f"{name}: inserting {len(points)} points, then {args.pages} pages...", file=sys.stderr, flush=True
        )
        results[name] = run_backend(name, points, args.plans, args.pages, args.limit, args.seed)

    print(table(results, args.limit))
    doc = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "points": args.points,
        "plans": args.plans,
        "pages": args.pages,
        "limit": args.limit,
        "results": results,
    }
    args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
