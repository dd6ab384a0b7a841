#!/usr/bin/env python3
"""Control plane at scale: the scheduler tick over 10,000 plans and the points list API, SQLite vs DynamoDB.

    python3 bench/control_plane_bench.py [--plans 10000] [--points 10000] [--repeat 3] [--dynamo-repeat 3]
                                         [--requests 200] [--dynamo-requests 200] [--backends sqlite,dynamodb]
                                         [--json bench/control_plane_results.json] [--out docs/BENCHMARKS.md]
    python3 bench/control_plane_bench.py --render-only     # re-render the doc section from the JSON

Two measures per metadata adapter, each on its own fresh database, through the real
composition: ``Control(store, queue, ...)`` with SQLite (file in a temporary directory,
WAL, ``synchronous=FULL``) + the SQLite job queue, or DynamoDB + SQS, both moto
in-process (``mock_aws``).

1. Scheduler. ``--plans`` active plans (1-3 machines each, 20% with a replication window,
   RPOs 5 min-1 day), one PlanStatus per plan whose machines' last points are at random
   ages (0-2x the RPO; 5% of machines never replicated) and ``--jobs`` queued / running /
   cancelling replication jobs on distinct plans, inserted (timed separately) through
   ``store.create``. Then: ``load_state`` (median of the repeats), the first ``tick`` (run
   once: it creates the due jobs and opens the RPO alerts) and steady-state ticks (same
   clock, so nothing new is due; median of the repeats). Every tick is broken down by
   wrapping the scheduler's own steps (``expire_lost``, ``load_state``, ``due_jobs``,
   ``rpo_status``, ``_sync_alerts``) and the store/queue ports with timers and call
   counters; the application code is not modified. The target is judged on the decision
   part (``due_jobs`` + ``rpo_status`` inside the tick).
2. API list latency. ``--points`` RecoveryPoints over ``--point-plans`` plans (generator of
   bench/metadata_bench.py); ``--requests`` GET /points?plan_id=..&limit=50 (a random plan's
   first page, then its second through the cursor) and as many GET /points?limit=50
   (walking the whole listing through cursors, so deep pages count) through
   ``functions.api.app.resolve`` with a JWT from POST /auth/login (authentication,
   validation and JSON serialisation included). For SQLite also through the embedded HTTP
   server on 127.0.0.1 with a urllib client (one connection per request). 5 untimed
   warm-up requests per shape.

moto emulates DynamoDB in Python and every Query sorts and scans the whole table, so
DynamoDB figures are moto's cost, not AWS's: the request counts are the portable part.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from metadata_bench import make_points  # noqa: E402
from run import replace_section  # noqa: E402

from shared.domain.identity import Role, User  # noqa: E402
from shared.domain.inventory import Site, SiteKind  # noqa: E402
from shared.domain.jobs import Job, JobKind, JobState  # noqa: E402
from shared.domain.plans import (  # noqa: E402
    PlanState,
    ProtectedDisk,
    ProtectedMachine,
    ProtectionPlan,
    ReplicationWindow,
)
from shared.domain.points import MachineStatus, PlanStatus  # noqa: E402
from shared.policies.scheduling import due_jobs, rpo_status  # noqa: E402
from shared.services import auth, scheduler  # noqa: E402
from shared.services import jobs as jobs_service  # noqa: E402
from shared.services.context import Control  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "control_plane_results.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
SCHEDULER_JSON = ROOT / "bench" / "scheduler_results.json"
METADATA_JSON = ROOT / "bench" / "metadata_results.json"
START, END = "<!-- control-plane:start -->", "<!-- control-plane:end -->"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PASSWORD = "bench-password-123"
JWT_SECRET = "bench-secret-" + "x" * 32
DECISION_TARGET_S = 2.0
API_P99_TARGET_MS = 100.0
LIMIT = 50
WARMUP = 5
LABELS = {"sqlite": "SQLite (file, WAL) + SQLite queue", "dynamodb": "DynamoDB + SQS (moto in-process)"}


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


T_START = time.perf_counter()


def percentile(samples: list[float], p: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1]


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
        "all_ms": [round(v, 3) for v in ms],
    }


# --------------------------------------------------------------------------- data


def build_fleet(
    n_plans: int, n_jobs: int, seed: int
) -> tuple[Site, list[ProtectionPlan], list[PlanStatus], list[Job]]:
    """Plans, their PlanStatus (last point per machine) and active jobs, all active plans, fixed seed."""
    rng = random.Random(seed)
    site = Site(
        id="site-dst", name="dst", site_kind=SiteKind.AWS, region="eu-west-1",
        repository_url="s3://bench-bucket/lifeboat", credentials_ref="env:BENCH",
        created_at=NOW - timedelta(days=90),
    )  # fmt: skip
    plans: list[ProtectionPlan] = []
    statuses: list[PlanStatus] = []
    for i in range(n_plans):
        pid = f"plan-{i:05d}"
        rpo = rng.choice([5, 15, 15, 30, 60, 240, 1440])
        machines = [f"vm-{j}" for j in range(rng.randint(1, 3))]
        window = None
        if rng.random() < 0.2:
            window = ReplicationWindow(start=f"{rng.randrange(24):02d}:00", end=f"{rng.randrange(24):02d}:30")
        created = NOW - timedelta(days=rng.randint(1, 60), seconds=rng.randrange(86400))
        plans.append(
            ProtectionPlan(
                id=pid, name=pid, source_site_id="site-src", target_site_id=site.id,
                machines=[ProtectedMachine(machine_id=m, disks=[ProtectedDisk(disk_id=f"{pid}-{m}", source="/dev/sda")])
                          for m in machines],
                rpo_minutes=rpo, window=window, state=PlanState.ACTIVE, created_at=created, updated_at=created,
            )
        )  # fmt: skip
        last: dict[str, MachineStatus] = {}
        for m in machines:
            if rng.random() >= 0.05:
                at = NOW - timedelta(seconds=rng.uniform(0, 2 * rpo * 60))
                last[m] = MachineStatus(last_point_at=at, last_point_id=f"pt-{pid}-{m}")
        statuses.append(PlanStatus(id=pid, machines=last, created_at=created, updated_at=created))
    jobs: list[Job] = []
    for k, plan in enumerate(rng.sample(plans, n_jobs)):
        state = rng.choice([JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING])
        created = NOW - timedelta(minutes=rng.randint(0, 120))
        busy = state is not JobState.QUEUED
        jobs.append(
            Job(
                id=f"job-seed-{k:04d}", job_kind=JobKind.REPLICATION, plan_id=plan.id, state=state,
                reason="seeded", created_at=created, updated_at=created,
                node_id=f"node-{k % 20}" if busy else None,
                lease_until=NOW + timedelta(minutes=rng.randint(1, 5)) if busy else None,
                started_at=created if busy else None, attempts=1 if busy else 0,
            )
        )  # fmt: skip
    return site, plans, statuses, jobs


# --------------------------------------------------------------------------- backends


def _aws_env() -> None:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_SQS", "AWS_PROFILE",
                "AWS_CONFIG_FILE", "AWS_SESSION_TOKEN"):  # fmt: skip
        os.environ.pop(var, None)
    os.environ.update(
        AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench"
    )


@contextmanager
def sqlite_control() -> Iterator[Control]:
    from shared.adapters.local.sqlite_metadata import SqliteMetadataStore
    from shared.adapters.local.sqlite_queue import SqliteJobQueue

    with tempfile.TemporaryDirectory(prefix="lifeboat-cp-bench-") as tmp:
        store = SqliteMetadataStore(Path(tmp) / "metadata.db")
        queue = SqliteJobQueue(Path(tmp) / "queue.db")
        yield Control(store=store, queue=queue, jwt_secret=JWT_SECRET, now=lambda: NOW)
        store.close()


@contextmanager
def dynamodb_control() -> Iterator[Control]:
    import boto3
    from moto import mock_aws

    from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore
    from shared.adapters.aws.sqs_queue import SqsJobQueue, create_queues

    _aws_env()
    with mock_aws():
        store = DynamoMetadataStore.create_table("lifeboat-cp-bench")
        client = boto3.client("sqs", region_name="us-east-1")
        url, dlq = create_queues("lifeboat-cp-bench", 5, client)
        queue = SqsJobQueue(url, dlq_url=dlq, client=client, wait_seconds=0)
        yield Control(store=store, queue=queue, jwt_secret=JWT_SECRET, now=lambda: NOW)


BACKENDS: dict[str, Callable[[], Any]] = {"sqlite": sqlite_control, "dynamodb": dynamodb_control}


# --------------------------------------------------------------------------- instrumentation


class Meter:
    """Seconds and call counts per name; wraps callables without changing what they do."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t
                self.calls[name] += 1

        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


class Metered:
    """A port (store or queue) whose methods report to a Meter as ``<prefix>.<method>``."""

    def __init__(self, inner: Any, prefix: str, meter: Meter) -> None:
        self._inner, self._prefix, self._meter = inner, prefix, meter

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        return self._meter.wrap(f"{self._prefix}.{name}", attr) if callable(attr) else attr


@contextmanager
def instrumented_scheduler(meter: Meter) -> Iterator[None]:
    """Time the scheduler's own steps by wrapping the names ``tick`` looks up at call time."""
    patches = [
        (scheduler, "load_state"), (scheduler, "due_jobs"), (scheduler, "rpo_status"),
        (scheduler, "_sync_alerts"), (jobs_service, "expire_lost"),
    ]  # fmt: skip
    saved = [(mod, name, getattr(mod, name)) for mod, name in patches]
    try:
        for mod, name, fn in saved:
            setattr(mod, name, meter.wrap(f"step.{name}", fn))
        yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


def breakdown(meter: Meter, total: float) -> dict[str, Any]:
    s = meter.seconds
    phases = {
        "expire_lost": s["step.expire_lost"],
        "load_state": s["step.load_state"],
        "due_jobs": s["step.due_jobs"],
        "rpo_status": s["step.rpo_status"],
        "alert_sync_io": s["step._sync_alerts"] - s["step.rpo_status"],
    }
    phases["create_jobs"] = total - sum(phases.values())
    port = {
        k: {"calls": meter.calls[k], "seconds": v} for k, v in sorted(s.items()) if not k.startswith("step.")
    }
    return {
        "total_s": total,
        "decision_s": s["step.due_jobs"] + s["step.rpo_status"],
        "phases_s": phases,
        "port_calls": port,
        "port_seconds": sum(v["seconds"] for v in port.values()),
    }


# --------------------------------------------------------------------------- 1. scheduler


def seed(store: Any, records: list[Any]) -> float:
    t = time.perf_counter()
    for r in records:
        store.create(r)
    return time.perf_counter() - t


def decide(state: scheduler.SchedulerState, *, gc_paused: bool = False) -> float:
    """``due_jobs`` + ``rpo_status`` over a loaded state, as ``tick`` calls them; with
    ``gc_paused`` CPython's cyclic garbage collector is disabled during the call."""
    active = [p for p in state.plans if p.state is not PlanState.DRAFT]
    if gc_paused:
        gc.disable()
    try:
        t = time.perf_counter()
        due_jobs(active, state.last_points, state.active_jobs, NOW)
        rpo_status(active, state.last_points, NOW)
        return time.perf_counter() - t
    finally:
        gc.enable()


def run_scheduler(
    name: str, n_plans: int, n_jobs: int, seed_value: int, repeat: int, ticks: bool
) -> dict[str, Any]:
    site, plans, statuses, jobs = build_fleet(n_plans, n_jobs, seed_value)
    machines = sum(len(p.machines) for p in plans)
    out: dict[str, Any] = {"label": LABELS[name], "adapter": name, "plans": len(plans), "machines": machines,
                           "plan_statuses": len(statuses), "active_jobs_seeded": len(jobs), "repeat": repeat}  # fmt: skip
    with BACKENDS[name]() as raw:
        meter = Meter()
        ctl = Control(store=Metered(raw.store, "store", meter), queue=Metered(raw.queue, "queue", meter),
                      jwt_secret=raw.jwt_secret, now=raw.now)  # fmt: skip
        records = [site, *plans, *statuses, *jobs]
        log(f"{name}: seeding {len(records):,} records ({n_plans:,} plans + statuses, {n_jobs} jobs, a site)")
        seed_s = seed(raw.store, records)
        out.update(seed_records=len(records), seed_s=seed_s, seed_per_s=len(records) / seed_s)
        log(f"{name}: seeded in {seed_s:.1f}s; load_state x{repeat}")

        load_s: list[float] = []
        for _ in range(repeat):
            t = time.perf_counter()
            state = scheduler.load_state(raw)
            load_s.append(time.perf_counter() - t)
        assert len(state.plans) == len(plans) and len(state.active_jobs) == len(jobs), (
            len(state.plans), len(state.active_jobs))  # fmt: skip
        decide_s = [decide(state) for _ in range(3)]
        paused_s = [decide(state, gc_paused=True) for _ in range(3)]
        out["load_state_s"] = {"median": statistics.median(load_s), "all": load_s}
        out["decision_on_loaded_state_s"] = {"median": statistics.median(decide_s), "all": decide_s}
        out["decision_gc_paused_s"] = {"median": statistics.median(paused_s), "all": paused_s}
        log(
            f"{name}: load_state {statistics.median(load_s):.2f}s, decision {statistics.median(decide_s):.2f}s"
        )
        if not ticks:
            return out

        runs: list[dict[str, Any]] = []
        with instrumented_scheduler(meter):
            for i in range(repeat + 1):
                log(f"{name}: tick {i + 1}/{repeat + 1} ({'first' if i == 0 else 'steady state'})")
                meter.reset()
                t = time.perf_counter()
                report = scheduler.tick(ctl)
                total = time.perf_counter() - t
                b = breakdown(meter, total)
                b.update(
                    created=len(report.created), due=sum(d.due for d in report.decisions),
                    decisions=len(report.decisions), alerts_opened=len(report.alerts_opened),
                    alerts_resolved=len(report.alerts_resolved), lost_jobs=len(report.lost_jobs),
                    errors=len(report.errors), error_sample=report.errors[:3],
                )  # fmt: skip
                runs.append(b)
                log(f"{name}:   {total:.2f}s, decision {b['decision_s']:.3f}s, created {b['created']}, "
                    f"alerts opened {b['alerts_opened']}")  # fmt: skip
    first, steady = runs[0], runs[1:]
    assert all(t["created"] == 0 for t in steady), [t["created"] for t in steady]
    out.update(
        first_tick=first,
        steady_ticks=steady,
        steady_tick_s={"median": statistics.median(t["total_s"] for t in steady), "all": [t["total_s"] for t in steady]},
        steady_decision_s={"median": statistics.median(t["decision_s"] for t in steady),
                           "all": [t["decision_s"] for t in steady]},
        median_steady_tick=sorted(steady, key=lambda t: t["total_s"])[(len(steady) - 1) // 2],
    )  # fmt: skip
    return out


# --------------------------------------------------------------------------- 2. API list latency


def _check_page(status: int, body: bytes, plan: str | None) -> str | None:
    assert status == 200, (status, body[:300])
    doc = json.loads(body)
    assert len(doc["items"]) == LIMIT, len(doc["items"])
    if plan:
        assert all(p["plan_id"] == plan for p in doc["items"])
    return doc["next_cursor"]


def _workload(
    call: Callable[[str], tuple[int, bytes]], n_plans: int, requests: int, seed: int
) -> dict[str, Any]:
    """Time ``requests`` filtered and ``requests`` unfiltered list pages through ``call(path)``."""
    rng = random.Random(seed)

    def filtered_paths() -> Generator[tuple[str, str], str | None, None]:
        while True:
            plan = f"plan-{rng.randrange(n_plans):03d}"
            cursor = yield (f"/points?plan_id={plan}&limit={LIMIT}", plan)
            if cursor:
                q = urllib.parse.urlencode({"plan_id": plan, "limit": LIMIT, "cursor": cursor})
                yield (f"/points?{q}", plan)

    def one(path: str, plan: str | None) -> tuple[float, str | None]:
        t = time.perf_counter()
        status, body = call(path)
        elapsed = time.perf_counter() - t
        return elapsed, _check_page(status, body, plan)

    def run_filtered(n: int) -> list[float]:
        out: list[float] = []
        gen = filtered_paths()
        path, plan = next(gen)
        while len(out) < n:
            elapsed, cursor = one(path, plan)
            out.append(elapsed)
            path, plan = gen.send(cursor)
        return out

    def run_unfiltered(n: int) -> list[float]:
        out: list[float] = []
        cursor = None
        while len(out) < n:
            path = f"/points?limit={LIMIT}" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
            elapsed, cursor = one(path, None)
            out.append(elapsed)
        return out

    run_filtered(WARMUP)
    run_unfiltered(WARMUP)
    return {
        "filtered_by_plan": summary_ms(run_filtered(requests)),
        "unfiltered": summary_ms(run_unfiltered(requests)),
    }


def run_api(name: str, args: argparse.Namespace, requests: int) -> dict[str, Any]:
    from functions.api import app as api
    from functions.embedded.http_server import _LambdaContext, make_server, serve_in_thread, to_event

    points = make_points(args.points, args.point_plans)
    with BACKENDS[name]() as ctl:
        api.configure(ctl)
        ctl.store.create(User(id="user-bench", username="bench", password_hash=auth.hash_password(PASSWORD),
                              roles=[Role.VIEWER]))  # fmt: skip
        login = api.resolve(
            to_event("POST", "/auth/login", {"Content-Type": "application/json"},
                     json.dumps({"username": "bench", "password": PASSWORD}).encode(), "127.0.0.1"),
            _LambdaContext(),
        )  # fmt: skip
        assert login["statusCode"] == 200, login
        token = json.loads(login["body"])["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        log(f"{name}: seeding {len(points):,} recovery points over {args.point_plans} plans")
        seed_s = seed(ctl.store, points)
        log(f"{name}: seeded in {seed_s:.1f}s; {requests} + {requests} list requests through resolve")

        def via_resolve(path: str) -> tuple[int, bytes]:
            resp = api.resolve(to_event("GET", path, dict(headers), b"", "127.0.0.1"), _LambdaContext())
            return int(resp["statusCode"]), (resp.get("body") or "").encode()

        result: dict[str, Any] = {
            "label": LABELS[name],
            "points": len(points),
            "plans": args.point_plans,
            "seed_s": seed_s,
            "seed_per_s": len(points) / seed_s,
            "resolve": _workload(via_resolve, args.point_plans, requests, args.seed),
        }
        if name == "sqlite":
            log(f"{name}: {requests} + {requests} list requests through the embedded HTTP server")
            server = make_server(api, "127.0.0.1", 0)
            port = server.server_address[1]
            serve_in_thread(server)
            try:

                def via_http(path: str) -> tuple[int, bytes]:
                    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        return resp.status, resp.read()

                result["http"] = _workload(via_http, args.point_plans, requests, args.seed)
            finally:
                server.shutdown()
                server.server_close()
    return result


# --------------------------------------------------------------------------- machine, targets


def machine_info() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )
    mem = next((int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()
                if ln.startswith("MemTotal")), 0) if Path("/proc/meminfo").exists() else 0  # fmt: skip
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], check=True,
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    try:
        from importlib.metadata import version

        moto_v = version("moto")
    except Exception:
        moto_v = "absent"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": f"{mem / (1 << 20):.1f} GiB",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "moto": moto_v,
        "lifeboat": rev,
    }


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in res.get("scheduler", {}).values():
        if s["plans"] != res["params"]["plans"]:
            continue  # a reduced-size run: reported, not judged
        measured = list(s["decision_on_loaded_state_s"]["all"])
        if "first_tick" in s:
            measured += [s["first_tick"]["decision_s"], *(t["decision_s"] for t in s["steady_ticks"])]
        worst = max(measured)
        where = (
            "worst of in-tick and on the loaded state"
            if "first_tick" in s
            else "worst, on the state loaded from it"
        )
        out.append({
            "target": f"Scheduler decision (due_jobs + rpo_status) for {s['plans']:,} plans < {DECISION_TARGET_S:g} s "
                      f"({s['label']}; {where})",
            "measured": f"{worst:.2f} s", "met": worst < DECISION_TARGET_S,
        })  # fmt: skip
    api = res.get("api", {}).get("sqlite", {})
    if "http" in api:
        worst = max(api["http"]["filtered_by_plan"]["p99_ms"], api["http"]["unfiltered"]["p99_ms"])
        out.append({
            "target": f"p99 GET /points page of {LIMIT} < {API_P99_TARGET_MS:g} ms (embedded HTTP, SQLite; worst shape)",
            "measured": f"{worst:.1f} ms", "met": worst < API_P99_TARGET_MS,
        })  # fmt: skip
    return out


# --------------------------------------------------------------------------- report


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]  # fmt: skip


def _s(v: float) -> str:
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def moto_scale(res: dict[str, Any]) -> list[str]:
    """The Method line on what runs at reduced scale on moto (only when something did)."""
    p = res["params"]
    small = [s for s in res.get("scheduler", {}).values() if s["plans"] < p["plans"]]
    if not small and "dynamodb" not in res.get("api", {}):
        return []
    text = (f"- Less on moto, to keep the run in minutes: {p['dynamo_repeat']} `load_state` run(s) and steady "
            f"tick(s), {p['dynamo_requests']} requests per list shape")  # fmt: skip
    if small:
        s = small[0]
        full = res["scheduler"].get("sqlite", {}).get("first_tick")
        would = f" (at {p['plans']:,} plans the first tick sends {full['created']:,})" if full else ""
        text += (
            f"; its ticks run on a {s['plans']:,}-plan fleet ({s['active_jobs_seeded']} active jobs) while "
            f"`load_state` and the decision run at {p['plans']:,}: moto's SQS SendMessage recounts the whole queue, "
            f"so a send costs O(queue length){would}"
        )
    return [text + "."]


def render_section(res: dict[str, Any]) -> str:
    m, p = res["machine"], res["params"]
    out = [
        START,
        "## Control plane",
        "",
        f"Generated by `python3 bench/control_plane_bench.py --plans {p['plans']} --points {p['points']}` on "
        f"{m['date']} (total {res['total_minutes']:.1f} min). Raw measurements: "
        "[bench/control_plane_results.json](../bench/control_plane_results.json).",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram']} RAM, Python {m['python']}, SQLite {m['sqlite']}, "
        f"moto {m['moto']}, lifeboat `{m['lifeboat']}`.",
        "",
        "### Method",
        "",
        "- Each adapter pair runs on a fresh database: SQLite metadata store + SQLite job queue (files in a temporary "
        "directory, WAL, `synchronous=FULL`), or DynamoDB + SQS, both moto in-process (`mock_aws`). Records are "
        "inserted through `store.create` (timed separately).",
        f"- Scheduler: {p['plans']:,} active plans with 1-3 machines each (20% with a replication window, RPO 5 min-1 "
        f"day), one PlanStatus per plan with each machine's last point 0-2x the RPO old (5% never replicated), "
        f"{p['jobs']} queued/running/cancelling replication jobs on distinct plans; fixed seed {p['seed']}, fixed "
        f"clock. `load_state` is timed alone; then the first `tick` (once: it creates the due jobs and opens the RPO "
        f"alerts) and steady-state ticks (same clock, nothing new due). Tick phases come from wrapping the "
        f"scheduler's steps and the store/queue ports with timers (application code untouched); *decision* = "
        f"`due_jobs` + `rpo_status` inside the tick, the part the target is about; it is also timed alone on the "
        f"state `load_state` returned (median of 3).",
        *moto_scale(res),
        f"- API: {p['points']:,} RecoveryPoints over {p['point_plans']} plans (bench/metadata_bench.py's generator). "
        f"Per shape, {WARMUP} untimed warm-ups, then N requests: `GET /points?plan_id=..&limit={LIMIT}` (random "
        f"plan: first page, then its second page through the cursor) and `GET /points?limit={LIMIT}` (walking the "
        f"whole listing through cursors). Through `functions.api.app.resolve` with a JWT from `POST /auth/login` "
        f"(authentication, validation, serialisation included) and, for SQLite, through the embedded HTTP server "
        f"on 127.0.0.1 (urllib client, a new connection per request).",
        "- moto is DynamoDB emulated in Python: every Query sorts and scans the whole table, so the DynamoDB "
        "columns measure moto, not AWS. The request counts per tick are the portable figure.",
        "",
        "### Targets",
        "",
        *_table(["Target", "Measured", "Met"],
                [[t["target"], t["measured"], "met" if t["met"] else "**not met**"] for t in res["targets"]]),
        "",
    ]  # fmt: skip
    sch = res.get("scheduler", {})
    if sch:
        out += ["### Scheduler tick", ""]
        rows = []
        for s in sch.values():
            f, st = s.get("first_tick"), s.get("median_steady_tick")
            rows.append([
                s["label"], f"{s['plans']:,} / {s['machines']:,} / {s['active_jobs_seeded']}",
                f"{_s(s['load_state_s']['median'])} (x{len(s['load_state_s']['all'])})",
                f"{s['decision_on_loaded_state_s']['median']:.2f} ({min(s['decision_on_loaded_state_s']['all']):.2f}-"
                f"{max(s['decision_on_loaded_state_s']['all']):.2f}); GC paused {s['decision_gc_paused_s']['median']:.2f}",
                f"{_s(f['total_s'])} ({f['created']:,} jobs, {f['alerts_opened']:,} alerts)" if f else "not run",
                f"{_s(s['steady_tick_s']['median'])} (x{len(s['steady_ticks'])})" if st else "not run",
                f"{f['decision_s']:.2f} / {s['steady_decision_s']['median']:.2f}" if f else "-",
                f"{s['seed_per_s']:.0f}",
            ])  # fmt: skip
        out += _table(["Adapters", "plans / machines / active jobs", "load_state s (median)",
                       "decision s on loaded state: median (min-max) of 3", "first tick s", "steady tick s (median)",
                       "in-tick decision s first / steady", "inserts/s (seeding)"], rows)  # fmt: skip
        out += ["", "Where a tick's time goes (seconds; port calls = metadata-store and queue requests):", ""]
        rows = []
        for s in (s for s in sch.values() if "first_tick" in s):
            for label, t in ((f"{s['plans']:,} plans, first", s["first_tick"]),
                             (f"{s['plans']:,} plans, steady (median)", s["median_steady_tick"])):  # fmt: skip
                ph = t["phases_s"]
                calls = ", ".join(f"{k.split('.', 1)[1]} {v['calls']:,}" for k, v in t["port_calls"].items())
                rows.append([
                    f"{s['label']}, {label}", _s(t["total_s"]), _s(ph["expire_lost"]), _s(ph["load_state"]),
                    f"{ph['due_jobs']:.2f}", _s(ph["create_jobs"]), f"{ph['rpo_status']:.2f}", _s(ph["alert_sync_io"]),
                    calls,
                ])  # fmt: skip
        out += _table(["Tick", "total", "expire_lost", "load_state", "due_jobs", "create jobs", "rpo_status",
                       "alert sync", "port calls"], rows)  # fmt: skip
        out.append("")
    api = res.get("api", {})
    if api:
        out += ["### API list latency", ""]
        rows = []
        for a in api.values():
            for path, key in (("`resolve`", "resolve"), ("embedded HTTP", "http")):
                if key in a:
                    f, u = a[key]["filtered_by_plan"], a[key]["unfiltered"]
                    rows.append([
                        f"{a['label']}, {path}", f"{f['p50_ms']:.1f} / {f['p99_ms']:.1f}",
                        f"{u['p50_ms']:.1f} / {u['p99_ms']:.1f}", f"{f['n']} + {u['n']}",
                    ])  # fmt: skip
        out += _table(["Adapters, entry", f"by plan_id, page of {LIMIT}: p50 / p99 ms",
                       f"unfiltered, page of {LIMIT}: p50 / p99 ms", "requests"], rows)  # fmt: skip
        out.append("")
    ctx = []
    if SCHEDULER_JSON.exists():
        d = json.loads(SCHEDULER_JSON.read_text())
        ctx.append(
            f"- Scheduler policy alone (bench/scheduler_bench.py, {d['measured_at'][:10]}): {d['plans']:,} plans, "
            f"{d['machines']:,} machines (1-5 each), {d['active_jobs']} jobs: due_jobs "
            f"{d['due_jobs_s']['median'] * 1000:.0f} ms + rpo_status {d['rpo_status_s']['median'] * 1000:.0f} ms = "
            f"{d['total_s']['median'] * 1000:.0f} ms (median of {d['repeat']})."
        )
    if METADATA_JSON.exists():
        d = json.loads(METADATA_JSON.read_text())
        parts = [
            f"{r['label']} {r['filtered_by_plan']['p50_ms']:.1f} / {r['filtered_by_plan']['p99_ms']:.1f} ms by plan, "
            f"{r['unfiltered']['p50_ms']:.1f} / {r['unfiltered']['p99_ms']:.1f} ms unfiltered"
            for r in d["results"].values()
        ]
        ctx.append(
            f"- Store alone (bench/metadata_bench.py, {d['measured_at'][:10]}): `query` page of {d['limit']} over "
            f"{d['points']:,} points, p50 / p99: " + "; ".join(parts) + "."
        )
    if ctx:
        out += ["### Context: the same layers measured alone", "", *ctx, ""]
    if res.get("notes"):
        out += ["### Notes", "", *(f"- {n}" for n in res["notes"]), ""]
    out.append(END)
    return "\n".join(out)


def notes(res: dict[str, Any]) -> list[str]:
    """Observations computed from the measurements (nothing here is hard-coded)."""
    out = []
    for s in res.get("scheduler", {}).values():
        d, g = s["decision_on_loaded_state_s"]["all"], s["decision_gc_paused_s"]["all"]
        if s["plans"] == res["params"]["plans"]:
            out.append(
                f"{s['label']}, {s['plans']:,} plans: the decision on the loaded state took {min(d):.2f}-{max(d):.2f} s "
                f"over 3 runs, {min(g):.2f}-{max(g):.2f} s with CPython's cyclic GC disabled during the call"
                + (
                    ": the slow runs are GC passes over the large heap of loaded records (the target's margin depends on "
                    "them)."
                    if max(d) > 1.5 * max(g)
                    else "."
                )
            )
    for s in (s for s in res.get("scheduler", {}).values() if "first_tick" in s):
        st = s["median_steady_tick"]
        calls = st["port_calls"]
        gets = calls.get("store.get", {"calls": 0, "seconds": 0.0})
        share = st["phases_s"]["alert_sync_io"] / st["total_s"]
        out.append(
            f"{s['label']}, {s['plans']:,} plans: a steady tick spends {share:.0%} of its {_s(st['total_s'])} s syncing alerts: "
            f"{gets['calls']:,} `store.get` calls ({_s(gets['seconds'])} s), one per wanted RPO alert, though the "
            f"tick also lists the open alerts; load_state is {_s(st['phases_s']['load_state'])} s, the decision "
            f"{st['decision_s']:.2f} s."
        )
        f = s["first_tick"]
        fc = f["port_calls"]
        out.append(
            f"{s['label']}, {s['plans']:,} plans: the first tick created {f['created']:,} jobs and opened {f['alerts_opened']:,} alerts in "
            f"{_s(f['total_s'])} s; {fc.get('store.get', {}).get('calls', 0):,} gets (one Site read per due plan in "
            f"`replication_params`, one per alert), {fc.get('store.create', {}).get('calls', 0):,} creates, "
            f"{fc.get('queue.send', {}).get('calls', 0):,} queue sends."
        )
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--plans", type=int, default=10_000)
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--point-plans", type=int, default=100)
    ap.add_argument("--requests", type=int, default=200, help="timed requests per list shape")
    ap.add_argument("--dynamo-requests", type=int, default=100, help="timed requests per shape on moto")
    ap.add_argument("--repeat", type=int, default=3, help="load_state runs and steady ticks (medians)")
    ap.add_argument("--dynamo-repeat", type=int, default=1, help="the same on moto (slow: default 1)")
    ap.add_argument(
        "--dynamo-tick-plans",
        type=int,
        default=2000,
        help="plans for the ticks on moto (moto's SQS send is O(queue length)); load_state and the "
        "decision still run at --plans",
    )
    ap.add_argument("--backends", default="sqlite,dynamodb")
    ap.add_argument("--parts", default="scheduler,api")
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--json", type=Path, default=RESULTS_JSON)
    ap.add_argument(
        "--out", type=Path, default=DOC, help="Markdown file whose control-plane section is (re)written"
    )
    ap.add_argument("--render-only", action="store_true", help="re-render --out from --json; run nothing")
    args = ap.parse_args()

    if args.render_only:
        replace_section(args.out, render_section(json.loads(args.json.read_text())), START, END)
        return
    backends = [b for b in args.backends.split(",") if b]
    parts = set(args.parts.split(","))
    res: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": {k: getattr(args, k) for k in ("plans", "jobs", "points", "point_plans", "requests",
                                                 "dynamo_requests", "repeat", "dynamo_repeat", "dynamo_tick_plans", "seed")},
        "scheduler": {},
        "api": {},
    }  # fmt: skip
    for name in backends:
        moto = name == "dynamodb"
        repeat = (args.dynamo_repeat or args.repeat) if moto else args.repeat
        requests = (args.dynamo_requests or args.requests) if moto else args.requests
        if "scheduler" in parts:
            small = moto and args.dynamo_tick_plans < args.plans
            res["scheduler"][name] = run_scheduler(
                name, args.plans, args.jobs, args.seed, repeat, ticks=not small
            )
            if small:
                n_jobs = max(1, args.jobs * args.dynamo_tick_plans // args.plans)
                res["scheduler"][f"{name}-ticks"] = run_scheduler(
                    name, args.dynamo_tick_plans, n_jobs, args.seed, repeat, ticks=True
                )
        if "api" in parts:
            res["api"][name] = run_api(name, args, requests)
    res["total_minutes"] = (time.perf_counter() - T_START) / 60
    res["targets"] = targets(res)
    res["notes"] = notes(res)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    replace_section(args.out, render_section(res), START, END)
    log(f"wrote {args.json} and the control-plane section of {args.out}")
    for t in res["targets"]:
        print(f"  {'met    ' if t['met'] else 'NOT MET'}  {t['target']}: {t['measured']}")


if __name__ == "__main__":
    main()
