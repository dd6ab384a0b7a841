#!/usr/bin/env python3
"""The sharded, compacted index (FORMAT.md §6.2) at scale, on a real S3 server (SeaweedFS).

    python -m bench.index_scale [--parts scale,tiny,concurrent] [--entries 10000000]
                                [--objects 5000] [--leftover 20] [--reps 3] [--disk-mib 64]
                                [--runs 1000] [--tiny-minutes 40] [--writers 4]
                                [--writer-disk-mib 256] [--json bench/index_scale_results.json]
                                [--out docs/BENCHMARKS.md] [--workdir bench/work/index_scale]
    python -m bench.index_scale --smoke          # tiny sizes; leaves the JSON and the doc alone
    python -m bench.index_scale --render-only    # re-render the doc section from the JSON

Each part starts its own ``weed mini`` (tests/servers.py ``start_seaweedfs``, loopback, S3
auth on) and stops it in a finally. Every repository is encrypted with the default Argon2id
cost (what ``lifeboat repo init`` does). Every measured command is the real CLI in a child
process, ``python -m bench.s3count COUNTS -- <lifeboat args>`` (the CLI run in-process with
a botocore ``before-call.s3`` hook counting API calls by operation), under
``/usr/bin/time -f %M`` (peak RSS); wall time is taken around the child. The CLI finds the
server through ``AWS_ENDPOINT_URL`` and ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``; the
node cache through ``LIFEBOAT_CACHE_DIR``.

1. ``scale``: ``--entries`` synthetic index entries (random 32-byte ids, each delta object's
   entries pointing at one fake pack) written as ``--objects`` delta objects with
   ``Repository.write_index`` (2 processes x 8 threads of puts), then ``lifeboat repo
   compact`` (one generation), then ``--leftover`` more deltas written after it (uncovered).
   An empty repository sits next to it in the same bucket. Into each, the same 64 MiB
   ``make_disk`` image (seed 11): one full replication, then ``--reps`` incrementals of
   64 KiB each (a fresh ``LIFEBOAT_CACHE_DIR`` per run, the two repositories interleaved),
   then one more with the last run's (warm) cache. Same mutations on both image copies.
2. ``tiny``: one repository, one 64 MiB disk: a full replication then ``--runs``
   incrementals of one 4 KiB change each (``--changed-extents``; one node cache kept across
   runs, as a node would; auto-compaction on, the pipeline's default), stopping early after
   ``--tiny-minutes``. A run whose S3 calls include more than two DeleteObject did compact.
3. ``concurrent``: ``--writers`` images (``--writer-disk-mib``, seeds 21..), replicated all
   at once as separate processes into one fresh repository, vs the first image alone into
   another fresh repository; ``--reps`` times. Then, in the last shared repository, one
   concurrent incremental round (5% of each image changed), and every point (full and
   incremental of every disk) restored with ``lifeboat restore`` and compared by sha256
   with the image as it was, and ``lifeboat check --read-data``.

Writes ``--json`` (parts not run keep their previous results) and the section between
``<!-- index-scale:start -->`` and ``<!-- index-scale:end -->`` of ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    MAKE_DISK,
    copy_sparse,
    machine_info,
    median,
    replace_section,
    rmtree,
    sha256,
)
from shared.adapters.aws.s3_store import S3Store  # noqa: E402
from shared.repo.codec import IndexEntry  # noqa: E402
from shared.repo.repository import Repository  # noqa: E402
from tests.servers import SeaweedFS, start_seaweedfs  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "index_scale_results.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- index-scale:start -->", "<!-- index-scale:end -->"
PASSWORD = "lifeboat-bench-passphrase"
BUCKET = "lifeboat-bench"
MIB = 1 << 20
KIB = 1 << 10
TIME = "/usr/bin/time"
T_START = time.perf_counter()
TINY_MARKS = (1, 10, 100, 250, 500, 750, 1000)


class BenchError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"index bench: {message}")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --------------------------------------------------------------------------- the CLI, measured


class Cli:
    """``lifeboat`` in a child process against one SeaweedFS: wall, peak RSS, S3 calls."""

    def __init__(self, weed: SeaweedFS, work: Path) -> None:
        self.weed = weed
        self.work = work
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LIFEBOAT_"))}
        self.env.update(
            AWS_ACCESS_KEY_ID=weed.access_key,
            AWS_SECRET_ACCESS_KEY=weed.secret_key,
            AWS_REGION=weed.region,
            AWS_ENDPOINT_URL=weed.endpoint,
            LIFEBOAT_PASSWORD=PASSWORD,
            PYTHONPATH=str(ROOT),
        )
        self.n = 0

    def url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def run(self, args: Sequence[str], *, cache: Path | str, check: bool = True) -> dict[str, Any]:
        self.n += 1
        tag = f"{os.getpid()}-{self.n}"
        counts, rss = self.work / f".s3count-{tag}.json", self.work / f".rss-{tag}"
        cmd = [TIME, "-f", "%M", "-o", str(rss), sys.executable, "-m", "bench.s3count", str(counts), *args]
        env = dict(self.env, LIFEBOAT_CACHE_DIR=str(cache))
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if check and proc.returncode != 0:
            raise BenchError(
                f"lifeboat {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        out: dict[str, Any] = {"seconds": seconds, "rc": proc.returncode}
        out["rss_kib"] = int(rss.read_text().split()[-1]) if rss.exists() else None
        out["s3"] = json.loads(counts.read_text()) if counts.exists() else {}
        out["stdout"], out["stderr"] = proc.stdout, proc.stderr
        counts.unlink(missing_ok=True)
        rss.unlink(missing_ok=True)
        return out

    def start(
        self, args: Sequence[str], *, cache: Path | str
    ) -> tuple[subprocess.Popen[str], dict[str, Any]]:
        """Start one measured child; ``finish`` waits for it (for concurrent writers)."""
        self.n += 1
        tag = f"{os.getpid()}-{self.n}"
        counts, rss = self.work / f".s3count-{tag}.json", self.work / f".rss-{tag}"
        cmd = [TIME, "-f", "%M", "-o", str(rss), sys.executable, "-m", "bench.s3count", str(counts), *args]
        env = dict(self.env, LIFEBOAT_CACHE_DIR=str(cache))
        ctx = {"counts": counts, "rss": rss, "start": time.perf_counter(), "args": list(args)}
        proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        return proc, ctx

    def finish(self, proc: subprocess.Popen[str], ctx: dict[str, Any]) -> dict[str, Any]:
        stdout, stderr = proc.communicate()
        seconds = time.perf_counter() - ctx["start"]
        if proc.returncode != 0:
            raise BenchError(
                f"lifeboat {' '.join(ctx['args'])} failed (exit {proc.returncode}):\n{stderr[-3000:]}"
            )
        out = {"seconds": seconds, "end": time.perf_counter(), "rc": proc.returncode, "stdout": stdout}
        out["rss_kib"] = int(ctx["rss"].read_text().split()[-1])
        out["s3"] = json.loads(ctx["counts"].read_text())
        ctx["counts"].unlink(missing_ok=True)
        ctx["rss"].unlink(missing_ok=True)
        return out


def replicated(res: dict[str, Any]) -> dict[str, Any]:
    """A replicate run's record: the point's id and stats out of ``--json`` output."""
    text = res["stdout"].strip()
    point_id = text.splitlines()[-1].strip()
    doc = json.loads(text[: text.rfind("\n")])
    st = doc["stats"]
    return {
        "point": point_id,
        "seconds": round(res["seconds"], 3),
        "rss_kib": res["rss_kib"],
        "s3": res["s3"],
        "pipeline_s": st["duration_s"],
        "bytes_read": st["bytes_read"],
        "blocks_new": st["blocks_new"],
    }


def compacted(rec: dict[str, Any]) -> bool:
    """A run that also compacted: it deleted more than its own lock object."""
    return calls(rec, "DeleteObject") > 2


def calls(rec: dict[str, Any], op: str) -> int:
    return int(rec["s3"].get("calls", {}).get(op, 0))


def make_image(out: Path, size_mib: int, seed: int) -> None:
    subprocess.run(
        [sys.executable, str(MAKE_DISK), "create", str(out), "--size", f"{size_mib}M", "--seed", str(seed)],
        check=True,
    )


def write_change(images: Sequence[Path], extents: Path, offset: int, length: int, seed: int) -> None:
    """Overwrite ``length`` bytes at ``offset`` of every image with the same random bytes."""
    data = random.Random(seed).randbytes(length)
    for img in images:
        with open(img, "r+b") as f:
            f.seek(offset)
            f.write(data)
    extents.write_text(json.dumps([[offset, length]]))


def new_repo(weed: SeaweedFS, prefix: str) -> Repository:
    return Repository.init(weed.store(prefix, bucket=BUCKET), PASSWORD)


# --------------------------------------------------------------------------- 1. scale

_worker_repo: Repository | None = None


def _worker_init(endpoint: str, access: str, secret: str, region: str, prefix: str) -> None:
    import boto3

    from shared.adapters.aws.s3_store import default_config

    global _worker_repo
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=default_config(),
    )
    _worker_repo = Repository.open(S3Store(BUCKET, prefix, client=client), lambda: PASSWORD)


def synthetic_rows(n: int) -> list[tuple[bytes, IndexEntry]]:
    """``n`` random ids in one fake pack, laid out one after the other as 1 MiB blocks."""
    pack = os.urandom(32)
    ids = os.urandom(32 * n)
    rows = []
    offset = 0
    for i in range(n):
        length = 300_000 + (i * 7919) % 600_000
        rows.append((ids[32 * i : 32 * i + 32], IndexEntry(pack, offset, length, MIB)))
        offset += length
    return rows


def _write_deltas(count: int, per_object: int) -> tuple[int, int]:
    repo = _worker_repo
    assert repo is not None

    def one(_: int) -> int:
        return 1 if repo.write_index(synthetic_rows(per_object)) else 0

    with ThreadPoolExecutor(8) as pool:
        written = sum(pool.map(one, range(count)))
    return written, written * per_object


def build_index(weed: SeaweedFS, prefix: str, objects: int, per_object: int, procs: int) -> dict[str, Any]:
    batch = 50
    batches = [min(batch, objects - i) for i in range(0, objects, batch)]
    start = time.perf_counter()
    done_objects = done_entries = 0
    initargs = (weed.endpoint, weed.access_key, weed.secret_key, weed.region, prefix)
    with ProcessPoolExecutor(procs, initializer=_worker_init, initargs=initargs) as pool:
        for k, (o, e) in enumerate(pool.map(_write_deltas, batches, [per_object] * len(batches))):
            done_objects += o
            done_entries += e
            if k % 20 == 19:
                el = time.perf_counter() - start
                log(
                    f"  {done_objects} delta objects, {done_entries:,} entries, {done_entries / el:,.0f} entries/s"
                )
    seconds = time.perf_counter() - start
    return {
        "objects": done_objects,
        "entries": done_entries,
        "seconds": seconds,
        "entries_per_s": done_entries / seconds,
        "processes": procs,
        "threads_per_process": 8,
    }


def part_scale(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    weed = start_seaweedfs(work / "seaweedfs", bucket=BUCKET)
    try:
        cli = Cli(weed, work)
        big_repo = new_repo(weed, "big")
        new_repo(weed, "empty")
        per_object = -(-a.entries // a.objects)
        log(f"building {a.objects} delta objects x {per_object} entries")
        build = build_index(weed, "big", a.objects, per_object, 2)
        log(f"built in {build['seconds']:.0f}s; compacting (lifeboat repo compact)")
        res = cli.run(["repo", "compact", "--json", cli.url("big")], cache=work / "cache-compact")
        compact_report = json.loads(res["stdout"])
        compaction = {
            "seconds": res["seconds"],
            "rss_kib": res["rss_kib"],
            "s3": res["s3"],
            "report": compact_report,
        }
        rmtree(work / "cache-compact")
        log(f"compacted in {res['seconds']:.0f}s, peak RSS {res['rss_kib'] / KIB:.0f} MiB: {compact_report}")
        t = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: big_repo.write_index(synthetic_rows(per_object)), range(a.leftover)))
        leftover_s = time.perf_counter() - t
        listed = len(big_repo.index_names())
        log(f"{a.leftover} uncovered deltas written ({listed} delta objects listed)")

        images = {name: work / f"{name}.img" for name in ("big", "empty")}
        make_image(images["big"], a.disk_mib, 11)
        copy_sparse(images["big"], images["empty"])
        size = a.disk_mib * MIB
        runs: dict[str, dict[str, Any]] = {"big": {}, "empty": {}}
        order = ["big", "empty"]
        for name in order:
            log(f"full replication into {name}")
            r = cli.run(
                ["replicate", "--json", str(images[name]), "-r", cli.url(name), "-d", "disk0"],
                cache=work / f"cache-full-{name}",
            )
            runs[name]["full"] = replicated(r)
        rng = random.Random(99)
        extents = work / "changed.json"
        last_cache: dict[str, Path] = {}
        for rep in range(a.reps + 1):
            warm = rep == a.reps
            offset = rng.randrange(0, size // (64 * KIB)) * 64 * KIB
            write_change(list(images.values()), extents, offset, 64 * KIB, 1000 + rep)
            for name in order if rep % 2 == 0 else order[::-1]:
                cache = last_cache[name] if warm else work / f"cache-{name}-{rep}"
                r = cli.run(
                    [
                        "replicate",
                        "--json",
                        str(images[name]),
                        "-r",
                        cli.url(name),
                        "-d",
                        "disk0",
                        "--changed-extents",
                        str(extents),
                    ],
                    cache=cache,
                )
                rec = replicated(r)
                last_cache[name] = cache
                runs[name].setdefault("warm" if warm else "cold", []).append(rec)
                log(
                    f"  {name} {'warm' if warm else 'cold'} #{rep}: {rec['seconds']:.2f}s, "
                    f"{rec['rss_kib'] / KIB:.0f} MiB, calls {rec['s3'].get('calls')}"
                )
        log("index open, in process, warm node cache (big, empty)")
        opens = {name: open_breakdown(weed, name, work / f"cache-open-{name}") for name in order}
        log(f"  {opens}")
        # Steady state: the uncovered deltas (leftover + the runs above) merged into the big
        # generation, as auto-compaction would; then the same incrementals with none uncovered.
        log("second compaction (the uncovered deltas into the 10M generation)")
        res = cli.run(["repo", "compact", "--json", cli.url("big")], cache=work / "cache-compact2")
        compaction2 = {
            "seconds": res["seconds"],
            "rss_kib": res["rss_kib"],
            "s3": res["s3"],
            "report": json.loads(res["stdout"]),
        }
        log(f"  {res['seconds']:.0f}s, peak RSS {res['rss_kib'] / KIB:.0f} MiB: {compaction2['report']}")
        for rep in range(a.reps):
            offset = rng.randrange(0, size // (64 * KIB)) * 64 * KIB
            write_change(list(images.values()), extents, offset, 64 * KIB, 2000 + rep)
            for name in order if rep % 2 == 0 else order[::-1]:
                r = cli.run(
                    [
                        "replicate",
                        "--json",
                        str(images[name]),
                        "-r",
                        cli.url(name),
                        "-d",
                        "disk0",
                        "--changed-extents",
                        str(extents),
                    ],
                    cache=work / f"cache-{name}-compacted-{rep}",
                )
                rec = replicated(r)
                runs[name].setdefault("cold_compacted", []).append(rec)
                log(
                    f"  {name} cold, after compaction #{rep}: {rec['seconds']:.2f}s, {rec['rss_kib'] / KIB:.0f} MiB, "
                    f"calls {rec['s3'].get('calls')}"
                )
        log(f"full replications of new {a.full_mib} MiB disks (cold cache), big vs empty")
        for rep in range(a.reps):
            img = work / f"new-{rep}.img"
            make_image(img, a.full_mib, 13 + rep)
            for name in order if rep % 2 == 0 else order[::-1]:
                r = cli.run(
                    ["replicate", "--json", str(img), "-r", cli.url(name), "-d", f"new{rep}"],
                    cache=work / f"cache-new-{name}-{rep}",
                )
                rec = replicated(r)
                runs[name].setdefault("full_new", []).append(rec)
                log(
                    f"  {name} full {a.full_mib} MiB #{rep}: {rec['seconds']:.2f}s (pipeline {rec['pipeline_s']:.2f}s), "
                    f"{rec['rss_kib'] / KIB:.0f} MiB, GET {calls(rec, 'GetObject')}"
                )
            img.unlink()
        opens["big_compacted"] = open_breakdown(weed, "big", work / "cache-open-big2")
        log(f"  {opens['big_compacted']}")
        info = big_repo_info(big_repo)
        return {
            "build": build,
            "compaction": compaction,
            "compaction2": compaction2,
            "index_open": opens,
            "leftover": {"deltas": a.leftover, "entries": a.leftover * per_object, "seconds": leftover_s},
            "big_repo": info,
            "disk_mib": a.disk_mib,
            "full_mib": a.full_mib,
            "change_bytes": 64 * KIB,
            "reps": a.reps,
            "runs": runs,
        }
    finally:
        weed.stop()


def open_breakdown(weed: SeaweedFS, prefix: str, cache_dir: Path, n: int = 5) -> dict[str, Any]:
    """Where opening an IndexView goes, in process, once the node cache is warm: the whole
    ``IndexView.open``, the generation manifest decode, the uncovered deltas' decode, one
    lookup of an absent id (its shard fetched from the cache and decoded); medians of ``n``."""
    from shared.repo.index import IndexView, generation_ids, read_generation
    from shared.repo.object_cache import ObjectCache

    repo = Repository.open(weed.store(prefix, bucket=BUCKET), lambda: PASSWORD)
    repo.cache = ObjectCache(cache_dir)
    view = IndexView.open(repo)
    view.get(os.urandom(32))
    times: dict[str, list[float]] = {"open": [], "generation": [], "deltas": [], "lookup": []}
    for _ in range(n):
        t = time.perf_counter()
        view = IndexView.open(repo)
        times["open"].append(time.perf_counter() - t)
        gens = generation_ids(repo)
        t = time.perf_counter()
        if gens:
            read_generation(repo, gens[-1])
        times["generation"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for name in view.delta_names:
            repo.read_index_object(name)
        times["deltas"].append(time.perf_counter() - t)
        probe = os.urandom(32)
        if view.generation is not None:  # an id whose shard exists
            while (
                view.generation.shards[int.from_bytes(probe[:2], "big") >> (16 - view.generation.prefix_bits)]
                is None
            ):
                probe = os.urandom(32)
        t = time.perf_counter()
        view.get(probe)
        times["lookup"].append(time.perf_counter() - t)
    out: dict[str, Any] = {k: med(v) for k, v in times.items()}
    out["deltas_uncovered"] = len(view.delta_names)
    out["delta_entries"] = view.stats.delta_entries
    rmtree(cache_dir)
    return out


def big_repo_info(repo: Repository) -> dict[str, Any]:
    from shared.repo.index import generation_ids, read_generation

    gens = generation_ids(repo)
    gen = read_generation(repo, gens[-1]) if gens else None
    return {
        "generations": len(gens),
        "generation_entries": gen.entries if gen else 0,
        "prefix_bits": gen.prefix_bits if gen else 0,
        "shards": sum(1 for s in gen.shards if s) if gen else 0,
        "deltas_listed": len(repo.index_names()),
        "shard_objects": sum(1 for _ in repo.store.list("shards/")),
    }


# --------------------------------------------------------------------------- 2. tiny incrementals


def part_tiny(a: argparse.Namespace, work: Path, json_path: Path | None) -> dict[str, Any]:
    weed = start_seaweedfs(work / "seaweedfs", bucket=BUCKET)
    try:
        cli = Cli(weed, work)
        new_repo(weed, "tiny")
        img = work / "tiny.img"
        make_image(img, a.disk_mib, 12)
        size = a.disk_mib * MIB
        cache = work / "cache-tiny"
        full = replicated(
            cli.run(["replicate", "--json", str(img), "-r", cli.url("tiny"), "-d", "disk0"], cache=cache)
        )
        log(
            f"tiny: full {full['seconds']:.2f}s; {a.runs} incrementals of 4 KiB (budget {a.tiny_minutes} min)"
        )
        rng = random.Random(7)
        extents = work / "changed.json"
        runs: list[dict[str, Any]] = []
        started = time.perf_counter()
        stopped = ""
        for i in range(1, a.runs + 1):
            if time.perf_counter() - started > a.tiny_minutes * 60:
                stopped = f"time budget of {a.tiny_minutes} min reached after {i - 1} runs"
                log(stopped)
                break
            offset = rng.randrange(0, size // (4 * KIB)) * 4 * KIB
            write_change([img], extents, offset, 4 * KIB, i)
            r = cli.run(
                [
                    "replicate",
                    "--json",
                    str(img),
                    "-r",
                    cli.url("tiny"),
                    "-d",
                    "disk0",
                    "--changed-extents",
                    str(extents),
                ],
                cache=cache,
            )
            rec = replicated(r)
            rec["run"] = i
            rec["compacted"] = compacted(rec)
            del rec["point"]
            runs.append(rec)
            if i % 50 == 0:
                el = time.perf_counter() - started
                recent = runs[-50:]
                log(
                    f"  run {i}: median of last 50 {median([x['seconds'] for x in recent]):.2f}s, "
                    f"RSS {median([x['rss_kib'] for x in recent]) / KIB:.0f} MiB, {el / 60:.1f} min"
                )
            if json_path is not None and i % 100 == 0:
                save_partial(json_path, "tiny", {"full": full, "runs": runs, "partial": True})
        repo = Repository.open(weed.store("tiny", bucket=BUCKET), lambda: PASSWORD)
        info = big_repo_info(repo)
        return {
            "disk_mib": a.disk_mib,
            "requested_runs": a.runs,
            "stopped": stopped,
            "minutes": (time.perf_counter() - started) / 60,
            "full": full,
            "runs": runs,
            "repo": info,
            "cache_bytes": sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()),
        }
    finally:
        weed.stop()


# --------------------------------------------------------------------------- 3. concurrent writers


def part_concurrent(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    weed = start_seaweedfs(work / "seaweedfs", bucket=BUCKET)
    try:
        cli = Cli(weed, work)
        images = [work / f"w{k}.img" for k in range(a.writers)]
        for k, img in enumerate(images):
            make_image(img, a.writer_disk_mib, 21 + k)
        size = a.writer_disk_mib * MIB
        reps: list[dict[str, Any]] = []
        shared_prefix = ""
        for rep in range(a.reps):
            single_prefix, shared_prefix = f"single-{rep}", f"shared-{rep}"
            new_repo(weed, single_prefix)
            new_repo(weed, shared_prefix)
            order = ("single", "multi") if rep % 2 == 0 else ("multi", "single")
            rec: dict[str, Any] = {}
            for what in order:
                if what == "single":
                    r = cli.run(
                        ["replicate", "--json", str(images[0]), "-r", cli.url(single_prefix), "-d", "disk0"],
                        cache=work / f"cache-single-{rep}",
                    )
                    rec["single"] = replicated(r)
                else:
                    t0 = time.perf_counter()
                    started = [
                        cli.start(
                            ["replicate", "--json", str(img), "-r", cli.url(shared_prefix), "-d", f"disk{k}"],
                            cache=work / f"cache-multi-{rep}-{k}",
                        )
                        for k, img in enumerate(images)
                    ]
                    done = [cli.finish(p, ctx) for p, ctx in started]
                    wall = max(d["end"] for d in done) - t0
                    rec["multi"] = {"wall": wall, "writers": [replicated(d) for d in done]}
            rec["single_mb_s"] = size / 1e6 / rec["single"]["seconds"]
            rec["multi_mb_s"] = a.writers * size / 1e6 / rec["multi"]["wall"]
            log(
                f"  rep {rep}: single {rec['single']['seconds']:.1f}s ({rec['single_mb_s']:.1f} MB/s), "
                f"{a.writers} writers {rec['multi']['wall']:.1f}s ({rec['multi_mb_s']:.1f} MB/s)"
            )
            reps.append(rec)

        # one concurrent incremental round in the last shared repository, then verify all points
        fulls = [w["point"] for w in reps[-1]["multi"]["writers"]]
        keep = [work / f"w{k}-full.img" for k in range(a.writers)]
        for img, kept in zip(images, keep, strict=True):
            copy_sparse(img, kept)
        extents = []
        for k, img in enumerate(images):
            ext = work / f"w{k}-changed.json"
            subprocess.run(
                [
                    sys.executable,
                    str(MAKE_DISK),
                    "mutate",
                    str(img),
                    "--fraction",
                    "0.05",
                    "--seed",
                    str(70 + k),
                    "--extents-out",
                    str(ext),
                ],
                check=True,
                capture_output=True,
            )
            extents.append(ext)
        t0 = time.perf_counter()
        started = [
            cli.start(
                [
                    "replicate",
                    "--json",
                    str(img),
                    "-r",
                    cli.url(shared_prefix),
                    "-d",
                    f"disk{k}",
                    "--changed-extents",
                    str(extents[k]),
                ],
                cache=work / f"cache-inc-{k}",
            )
            for k, img in enumerate(images)
        ]
        incs = [replicated(cli.finish(p, ctx)) for p, ctx in started]
        inc_wall = time.perf_counter() - t0
        log(f"  concurrent incremental round: {inc_wall:.1f}s; verifying {2 * a.writers} points")
        verified = []
        target = work / "restored.img"
        for k in range(a.writers):
            for point, model in ((fulls[k], keep[k]), (incs[k]["point"], images[k])):
                target.unlink(missing_ok=True)
                r = cli.run(
                    [
                        "restore",
                        str(target),
                        "-r",
                        cli.url(shared_prefix),
                        "-d",
                        f"disk{k}",
                        "--point",
                        point,
                    ],
                    cache=work / "cache-verify",
                )
                same = sha256(target) == sha256(model)
                verified.append(
                    {"disk": f"disk{k}", "point": point, "identical": same, "seconds": r["seconds"]}
                )
                if not same:
                    log(f"  MISMATCH: disk{k} point {point}")
        target.unlink(missing_ok=True)
        chk = cli.run(
            ["check", "--read-data", "--json", "-r", cli.url(shared_prefix)], cache="off", check=False
        )
        log(f"  check --read-data: exit {chk['rc']}")
        try:
            check_doc: Any = json.loads(chk["stdout"])
        except ValueError:
            check_doc = chk["stdout"][-2000:]
        return {
            "writers": a.writers,
            "disk_mib": a.writer_disk_mib,
            "reps": reps,
            "incremental_round": {"wall": inc_wall, "writers": incs},
            "verified": verified,
            "check": {
                "rc": chk["rc"],
                "seconds": chk["seconds"],
                "rss_kib": chk["rss_kib"],
                "output": check_doc,
                "stderr": chk["stderr"][-2000:],
            },
        }
    finally:
        weed.stop()


# --------------------------------------------------------------------------- report


def save_partial(json_path: Path, part: str, value: dict[str, Any]) -> None:
    doc = json.loads(json_path.read_text()) if json_path.exists() else {}
    doc[part] = value
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1) + "\n")


def med(xs: Sequence[float]) -> float:
    return median(list(xs))


def mib(kib: float) -> str:
    return f"{kib / KIB:.0f} MiB"


def fmt_calls(recs: Sequence[dict[str, Any]], op: str) -> str:
    vals = [calls(r, op) for r in recs]
    lo, hi = min(vals), max(vals)
    return f"{med(vals):g}" if lo == hi else f"{med(vals):g} ({lo}-{hi})"


def secs(recs: Sequence[dict[str, Any]], key: str = "seconds") -> str:
    vals = [r[key] for r in recs]
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{med(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})"


def ok(flag: bool) -> str:
    return "met" if flag else "**not met**"


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sc = res.get("scale")
    if sc:
        b, e = sc["runs"]["big"], sc["runs"]["empty"]
        cold_ratio = med([r["seconds"] for r in b["cold"]]) / med([r["seconds"] for r in e["cold"]])
        warm_ratio = med([r["seconds"] for r in b["warm"]]) / med([r["seconds"] for r in e["warm"]])
        pipe_ratio = med([r["pipeline_s"] for r in b["cold"]]) / med([r["pipeline_s"] for r in e["cold"]])
        rss_big = max(r["rss_kib"] for r in b["cold"] + b["warm"])
        if "cold_compacted" in b:
            extra = {
                "wall_ratio_cold_compacted": med([r["seconds"] for r in b["cold_compacted"]])
                / med([r["seconds"] for r in e["cold_compacted"]]),
                "pipeline_ratio_cold_compacted": med([r["pipeline_s"] for r in b["cold_compacted"]])
                / med([r["pipeline_s"] for r in e["cold_compacted"]]),
            }
        else:
            extra = {}
        out["scale"] = {
            **extra,
            "wall_ratio_cold": cold_ratio,
            "wall_ratio_warm": warm_ratio,
            "pipeline_ratio_cold": pipe_ratio,
            "rss_big_max_kib": rss_big,
            "wall_target_met": cold_ratio <= 1.2,
            "rss_target_met": rss_big <= 300 * KIB,
        }
    ti = res.get("tiny")
    if ti and ti.get("runs"):
        runs = ti["runs"]
        plain = [r for r in runs if not r["compacted"]]
        out["tiny"] = {
            "runs": len(runs),
            "compactions": sum(1 for r in runs if r["compacted"]),
            "slope_ms_per_100": 100e3 * slope([r["run"] for r in plain], [r["seconds"] for r in plain]),
            "rss_slope_kib_per_100": 100 * slope([r["run"] for r in runs], [r["rss_kib"] for r in runs]),
            "get_slope_per_100": 100
            * slope([r["run"] for r in plain], [calls(r, "GetObject") for r in plain]),
        }
    co = res.get("concurrent")
    if co:
        single = med([r["single_mb_s"] for r in co["reps"]])
        multi = med([r["multi_mb_s"] for r in co["reps"]])
        out["concurrent"] = {
            "single_mb_s": single,
            "multi_mb_s": multi,
            "ratio": multi / single,
            "verified": sum(1 for v in co["verified"] if v["identical"]),
            "points": len(co["verified"]),
            "check_rc": co["check"]["rc"],
        }
    return out


def render(res: dict[str, Any]) -> str:
    s = summarize(res)
    p = res.get("params", {})
    m = res.get("machine", {})
    lines = [
        START,
        "## Index at scale",
        "",
        "Generated by "
        + "; ".join(
            f"{k}: `python3 -m bench.index_scale{p.get(k, {}).get('argv', '')}` ({p.get('minutes', {}).get(k, 0):.0f} min)"
            for k in ("scale", "tiny", "concurrent")
            if k in res
        )
        + f"; last run {m.get('date', '?')}. Raw measurements: "
        "[bench/index_scale_results.json](../bench/index_scale_results.json). "
        f"Machine: {m.get('nproc', '?')} CPUs ({m.get('CPU', '?')}), {m.get('RAM', '?')}, shared and noisy: "
        "read the medians and the ratios. Every figure is the real `lifeboat` CLI in a child process "
        "against a real S3 server, SeaweedFS `weed mini` on loopback (one per part, started by the script); "
        "peak RSS is GNU time's `%M`; S3 requests are counted inside the child by a botocore `before-call.s3` "
        "hook (`bench/s3count.py`), per API operation. Repositories are encrypted (default Argon2id cost, "
        "paid once per CLI run), 1 MiB blocks, default options.",
        "",
    ]
    sc = res.get("scale")
    if sc:
        b, e = sc["runs"]["big"], sc["runs"]["empty"]
        bi, cp, bld = sc["big_repo"], sc["compaction"], sc["build"]
        rep = cp["report"]
        ss = s["scale"]
        lines += [
            f"### 64 KiB incremental into a repository of {bld['entries'] + sc['leftover']['entries']:,} index "
            "entries vs an empty one",
            "",
            f"- **Big repository.** {bld['entries']:,} synthetic entries (random ids, one fake pack per object) "
            f"written as {bld['objects']:,} delta objects with `Repository.write_index` in "
            f"{bld['seconds']:.0f} s ({bld['entries_per_s']:,.0f} entries/s, {bld['processes']} processes x "
            f"{bld['threads_per_process']} put threads); `lifeboat repo compact` merged them in "
            f"{cp['seconds']:.0f} s (peak RSS {mib(cp['rss_kib'])}): generation of {rep['entries']:,} entries, "
            f"{rep['prefix_bits']} prefix bits, {rep['shards_total']:,} shards written, "
            f"{rep['deltas_deleted']:,} deltas deleted; S3 calls {cp['s3'].get('calls')}. Then "
            f"{sc['leftover']['deltas']} more deltas ({sc['leftover']['entries']:,} entries) left uncovered. "
            f"After the runs below: {bi['generations']} generation(s), {bi['deltas_listed']} delta objects listed.",
            f"- **Disk.** `make_disk.py create --size {sc['disk_mib']}M --seed 11`, one copy per repository, same "
            f"mutations: one full replication each, then {sc['reps']} incrementals of one 64 KiB change "
            "(`--changed-extents`), each with a fresh empty `LIFEBOAT_CACHE_DIR` (cold node cache), the two "
            "repositories interleaved; then one more with the previous run's cache (warm).",
            "",
            "| step | repository | wall s, median (min-max) | in-pipeline s | peak RSS | GET | LIST | PUT | HEAD |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for step, key in (
            ("full 64 MiB", "full"),
            ("64 KiB incr., cold cache", "cold"),
            ("64 KiB incr., warm cache", "warm"),
            ("64 KiB incr., cold, after 2nd compaction", "cold_compacted"),
            (f"full {sc.get('full_mib', '?')} MiB, new disk, cold", "full_new"),
        ):
            if key not in b:
                continue
            for name, runs in (("big", b), ("empty", e)):
                recs = runs[key] if isinstance(runs[key], list) else [runs[key]]
                mark = f" ({sum(map(compacted, recs))} compacted)" if any(map(compacted, recs)) else ""
                lines.append(
                    f"| {step}{mark} | {name} | {secs(recs)} | {secs(recs, 'pipeline_s')} | "
                    f"{mib(max(r['rss_kib'] for r in recs))} | {fmt_calls(recs, 'GetObject')} | "
                    f"{fmt_calls(recs, 'ListObjectsV2')} | {fmt_calls(recs, 'PutObject')} | {fmt_calls(recs, 'HeadObject')} |"
                )
        lines += [
            "",
            f"- Wall time big/empty, cold cache: **{ss['wall_ratio_cold']:.2f}x** (target ≤ 1.2x: "
            f"{ok(ss['wall_target_met'])}); warm cache: {ss['wall_ratio_warm']:.2f}x; inside the pipeline "
            f"(the point's `duration_s`, no interpreter start or key derivation): {ss['pipeline_ratio_cold']:.2f}x.",
            f"- Peak RSS in the big repository: at most **{mib(ss['rss_big_max_kib'])}** (target ≤ 300 MiB: "
            f"{ok(ss['rss_target_met'])}).",
            "",
        ]
        if "wall_ratio_cold_compacted" in ss:
            lines[-1:-1] = [
                f"- After the second compaction (no uncovered delta left in the big repository), cold cache: wall "
                f"{ss['wall_ratio_cold_compacted']:.2f}x, in-pipeline {ss['pipeline_ratio_cold_compacted']:.2f}x.",
            ]
        cp2 = sc.get("compaction2")
        if cp2:
            r2 = cp2["report"]
            lines[-1:-1] = [
                f"- Second compaction (`lifeboat repo compact`, steady state): merged {r2['deltas_merged']} deltas "
                f"({r2['entries_merged']:,} entries) into the {bld['entries']:,}-entry generation in "
                f"{cp2['seconds']:.0f} s, peak RSS {mib(cp2['rss_kib'])}, rewrote **{r2['shards_written']:,} of "
                f"{r2['shards_total']:,} shards**; S3 calls {cp2['s3'].get('calls')}.",
            ]
        ops = sc.get("index_open")
        if ops:
            lines += [
                "Opening the index in process with a warm node cache (no S3 GET of an immutable object; the two "
                "LISTs remain), median of 5, ms:",
                "",
                "| repository | uncovered deltas (entries) | `IndexView.open` | generation manifest decode | "
                "uncovered deltas decode | one lookup (shard from cache, decoded) |",
                "|---|---|---|---|---|---|",
            ]
            names = {"big": "big", "empty": "empty", "big_compacted": "big, after 2nd compaction"}
            for key, o in ops.items():
                lines.append(
                    f"| {names.get(key, key)} | {o['deltas_uncovered']} ({o['delta_entries']:,}) | "
                    f"{1e3 * o['open']:.0f} | {1e3 * o['generation']:.1f} | {1e3 * o['deltas']:.0f} | "
                    f"{1e3 * o['lookup']:.1f} |"
                )
            lines.append("")
    ti = res.get("tiny")
    if ti and ti.get("runs"):
        st = s["tiny"]
        runs = ti["runs"]
        by_run = {r["run"]: r for r in runs}
        lines += [
            f"### {st['runs']:,} tiny incrementals into one repository",
            "",
            f"`make_disk.py create --size {ti['disk_mib']}M --seed 12`, one full replication "
            f"({ti['full']['seconds']:.2f} s), then {st['runs']:,} runs each after one 4 KiB write at a random "
            "4 KiB-aligned offset (`--changed-extents`), one node cache kept across runs; auto-compaction on "
            f"(the default: after a run that saw ≥ 32 uncovered deltas). {st['compactions']} runs compacted. "
            + (f"Requested {ti['requested_runs']:,}: {ti['stopped']}. " if ti.get("stopped") else "")
            + f"Took {ti['minutes']:.0f} min. At the end: {ti['repo']['generations']} generation(s), "
            f"{ti['repo']['shards']} shard(s), {ti['repo']['deltas_listed']} delta objects; node cache "
            f"{ti['cache_bytes'] / KIB:,.0f} KiB.",
            "",
            "| run | wall s | peak RSS | GET | LIST | PUT | compacted |",
            "|---|---|---|---|---|---|---|",
        ]
        for k in TINY_MARKS:
            r = by_run.get(k)
            if r:
                lines.append(
                    f"| {k} | {r['seconds']:.2f} | {mib(r['rss_kib'])} | {calls(r, 'GetObject')} | "
                    f"{calls(r, 'ListObjectsV2')} | {calls(r, 'PutObject')} | {'yes' if r['compacted'] else 'no'} |"
                )
        lines += [
            "",
            "| runs | median wall s | max wall s | median peak RSS | max peak RSS | median GET | compactions |",
            "|---|---|---|---|---|---|---|",
        ]
        for lo in range(1, st["runs"] + 1, 100):
            grp = [r for r in runs if lo <= r["run"] < lo + 100]
            lines.append(
                f"| {lo}-{grp[-1]['run']} | {med([r['seconds'] for r in grp]):.2f} | "
                f"{max(r['seconds'] for r in grp):.2f} | {mib(med([r['rss_kib'] for r in grp]))} | "
                f"{mib(max(r['rss_kib'] for r in grp))} | {med([calls(r, 'GetObject') for r in grp]):g} | "
                f"{sum(1 for r in grp if r['compacted'])} |"
            )
        lines += [
            "",
            f"- Slope (least squares over the runs that did not compact): **{st['slope_ms_per_100']:+.1f} ms per "
            f"100 runs** of wall time, {st['get_slope_per_100']:+.2f} GETs per 100 runs; peak RSS "
            f"{st['rss_slope_kib_per_100']:+.0f} KiB per 100 runs (all runs).",
            "",
        ]
    co = res.get("concurrent")
    if co:
        sc3 = s["concurrent"]
        size = co["disk_mib"]
        lines += [
            f"### {co['writers']} concurrent writers into one repository",
            "",
            f"{co['writers']} images (`make_disk.py create --size {size}M`, seeds 21-{20 + co['writers']}), each "
            f"replicated by its own `lifeboat replicate` process, all started at once into one fresh repository, "
            f"vs the first image alone into another fresh repository; {len(co['reps'])} repeats, alternating "
            "which goes first. Throughput = logical image bytes (holes included) / wall time (for the writers: "
            "from the start to the last one's exit).",
            "",
            "| | wall s, median (min-max) | MB/s (median) | peak RSS per process (max) |",
            "|---|---|---|---|",
            f"| 1 writer, 1 disk | {secs([r['single'] for r in co['reps']])} | {sc3['single_mb_s']:.1f} | "
            f"{mib(max(r['single']['rss_kib'] for r in co['reps']))} |",
            f"| {co['writers']} writers, {co['writers']} disks | "
            f"{secs([{'seconds': r['multi']['wall']} for r in co['reps']])} | {sc3['multi_mb_s']:.1f} | "
            f"{mib(max(w['rss_kib'] for r in co['reps'] for w in r['multi']['writers']))} |",
            "",
            f"- Aggregate / single-writer throughput: **{sc3['ratio']:.2f}x** (2 CPUs shared by the writers and "
            "the S3 server).",
            f"- Then a concurrent incremental round (5% of each image, `make_disk.py mutate`, `--changed-extents`) in "
            f"{co['incremental_round']['wall']:.1f} s. Restored with `lifeboat restore` and compared by sha256: "
            f"**{sc3['verified']}/{sc3['points']} points byte-identical**. `lifeboat check --read-data`: exit "
            f"{co['check']['rc']} ({'clean' if co['check']['rc'] == 0 else 'NOT clean'}, "
            f"{co['check']['seconds']:.0f} s).",
            "",
        ]
    lines += notes(res)
    lines.append(END)
    return "\n".join(lines)


def notes(res: dict[str, Any]) -> list[str]:
    extra = res.get("notes") or []
    if not extra:
        return []
    return ["### Notes", "", *[f"- {n}" for n in extra], ""]


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--parts", default="scale,tiny,concurrent", help="comma-separated: scale, tiny, concurrent"
    )
    p.add_argument("--entries", type=int, default=10_000_000, help="synthetic index entries (scale)")
    p.add_argument("--objects", type=int, default=5000, help="delta objects they are written as (scale)")
    p.add_argument("--leftover", type=int, default=20, help="uncovered deltas written after compaction")
    p.add_argument("--reps", type=int, default=3, help="repeats of each measured step (medians)")
    p.add_argument("--disk-mib", type=int, default=64, help="disk of the scale and tiny parts")
    p.add_argument("--full-mib", type=int, default=512, help="new disks fully replicated into both (scale)")
    p.add_argument("--runs", type=int, default=1000, help="tiny incrementals")
    p.add_argument("--tiny-minutes", type=float, default=40.0, help="stop the tiny runs after this long")
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--writer-disk-mib", type=int, default=256)
    p.add_argument("--smoke", action="store_true", help="tiny sizes; writes bench/work JSON only")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--workdir", type=Path, default=ROOT / "bench" / "work" / "index_scale")
    p.add_argument("--render-only", action="store_true")
    a = p.parse_args()
    if a.smoke:
        a.entries, a.objects, a.leftover, a.reps, a.runs = 20_000, 40, 3, 1, 40
        a.writer_disk_mib = a.full_mib = 32
    json_path = (
        a.json or (a.workdir.parent / "index_scale_smoke.json" if a.smoke else RESULTS_JSON)
    ).resolve()
    out_doc = a.out if a.out is not None else (None if a.smoke else DOC)
    if a.render_only:
        replace_section(out_doc or DOC, render(json.loads(json_path.read_text())), START, END)
        return
    parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    if not set(parts) <= {"scale", "tiny", "concurrent"}:
        raise BenchError(f"unknown part in {a.parts!r}")
    work = a.workdir.resolve()
    res: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    res["machine"] = machine_info(work.parent if work.parent.exists() else ROOT)
    params = res.setdefault("params", {})
    params["argv"] = "".join(f" {x}" for x in sys.argv[1:])
    params.setdefault("minutes", {})
    for part in parts:
        log(f"part {part}")
        t = time.perf_counter()
        rmtree(work)
        work.mkdir(parents=True)
        if part == "scale":
            res["scale"] = part_scale(a, work)
        elif part == "tiny":
            res["tiny"] = part_tiny(a, work, json_path)
        else:
            res["concurrent"] = part_concurrent(a, work)
        params["minutes"][part] = (time.perf_counter() - t) / 60
        params[part] = {k: v for k, v in vars(a).items() if not isinstance(v, Path)}
        params[part]["argv"] = params["argv"]
        res["machine"]["load_end"] = loadavg()
        save_partial(json_path, part, res[part])
        doc = json.loads(json_path.read_text())
        doc.update(machine=res["machine"], params=params)
        json_path.write_text(json.dumps(doc, indent=1) + "\n")
        rmtree(work)
    res["summary"] = summarize(res)
    json_path.write_text(json.dumps(res, indent=1) + "\n")
    section = render(res)
    if out_doc is not None:
        replace_section(out_doc, section, START, END)
        log(f"wrote {out_doc} and {json_path}")
    else:
        print(section)
        log(f"wrote {json_path}")
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
