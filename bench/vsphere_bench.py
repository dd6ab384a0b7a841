#!/usr/bin/env python3
"""vSphere incremental replication (CBT over the simulator's HTTPS datastore path) against the
same changes through the file source, in one run.

    python3 bench/vsphere_bench.py --size 512M --repeat 3 --out docs/BENCHMARKS.md
                                   [--warmup 1] [--fraction 0.05] [--workdir bench/work/vsphere]
                                   [--json bench/vsphere_results.json]
    python3 bench/vsphere_bench.py --render-only     # re-render the doc section from the JSON

A ``tests/support/make_disk.py create`` image (--size, seed 1) is loaded into a VM disk of
the project's vCenter simulator (``tests.support.vcsim``, HTTPS on 127.0.0.1, its own
self-signed certificate: the endpoint trusts it with ``VCenterTls(insecure=True)``), and CBT
is switched on (un-timed). The local copy of the image is the file source.

1. Full replication: one un-timed warm-up each, then ``--repeat`` timed runs per path,
   interleaved, each into a fresh encrypted repository on a FolderStore (the last one is
   kept): ``VsphereMachine.open()`` (login, snapshot, descriptor) + ``replicate()`` (plan =
   ``QueryChangedDiskAreas("*")``, reads = HTTPS Range GETs of the frozen base) + ``close()``
   (snapshot removal, logout); and ``FileSource`` + ``replicate()`` (plan = SEEK_DATA).
2. Incrementals: ``--warmup`` un-timed rounds, then ``--repeat`` timed rounds. Each round
   mutates the local image (``make_disk.py mutate --fraction F --seed 100+round
   --extents-out``), writes every changed extent into the VM disk through the simulator's
   write hook (the same bytes), then replicates through vSphere CBT (plan =
   ``QueryChangedDiskAreas`` since the last point's changeId) into the vSphere repository and
   through ``FileSource(changed_extents=...)`` into the file repository; the order alternates
   per round.
3. The transport alone: every 1 MiB block of the image's data extents read once through the
   snapshot's ``FlatDisk`` (HTTPS, 1 and 2 threads) and through ``os.pread`` of the local
   image (1 thread), ``--repeat`` times after a warm-up.

Machine limit: ``cat IMG`` (run.py's Runner). Client CPU = this process's
``time.process_time()``; simulator CPU = utime + stime of the vcsim process (/proc). Both
latest points are restored and sha256-checked against the mutated image at the end.
Writes ``--json`` and the section between ``<!-- vsphere:start -->`` and
``<!-- vsphere:end -->`` of ``--out`` (appended at the end if missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import (  # noqa: E402
    MAKE_DISK,
    Runner,
    cpu_and_ram,
    first_line,
    median,
    mib_s,
    replace_section,
    rmtree,
    sha256,
    spread,
    sync,
    table,
)

from node_runtime.recovery.restore import restore  # noqa: E402
from node_runtime.replication.pipeline import (  # noqa: E402
    DEFAULT_BLOCK_SIZE,
    ReplicationOptions,
    replicate,
)
from node_runtime.replication.read_plan import blocks_touched  # noqa: E402
from node_runtime.sources.files import FileSource  # noqa: E402
from node_runtime.sources.port import DiskSource, ReadPlan  # noqa: E402
from node_runtime.sources.vsphere import snapshots  # noqa: E402
from node_runtime.sources.vsphere.connection import Endpoint, connect  # noqa: E402
from node_runtime.sources.vsphere.source import VsphereMachine, find_vm  # noqa: E402
from shared.adapters.local.folder_store import FolderStore  # noqa: E402
from shared.domain.vsphere import VCenterTls, disk_source  # noqa: E402
from shared.repo.keys import KdfParams  # noqa: E402
from shared.repo.points import PointRecord  # noqa: E402
from shared.repo.repository import Repository  # noqa: E402
from tests.support.vcsim import Vcsim, start_vcsim  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "vsphere_results.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- vsphere:start -->", "<!-- vsphere:end -->"
PASSWORD = "lifeboat-bench-passphrase"
KDF = KdfParams(iterations=1, memory_kib=8192, lanes=1)  # KDF cost kept out of the timings
MIB = 1 << 20
DISK_ID = "vm1"
PATHS = ("vsphere", "file")
LABELS = {
    "vsphere": "vSphere: CBT + HTTPS datastore reads (simulator)",
    "file": "file: `FileSource` + extent list (local pread)",
}
FULL_LABELS = {
    "vsphere": 'vSphere: CBT `"*"` + HTTPS datastore reads (simulator)',
    "file": "file: `FileSource` (SEEK_DATA, local pread)",
}
TRANSPORTS = {
    "pread-1": "`os.pread` of the local image, 1 thread",
    "https-1": "`FlatDisk.read` (HTTPS Range GET), 1 thread",
    "https-2": "`FlatDisk.read` (HTTPS Range GET), 2 threads (the pipeline's workers)",
}
T_START = time.perf_counter()
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # insecure=True is asked for on purpose
TICK = os.sysconf("SC_CLK_TCK")


class BenchError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"vsphere bench: {message}")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def loadavg() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


class Meter:
    """Wall time, this process's CPU and the simulator's CPU over a block of work."""

    def __init__(self, sim_pid: int) -> None:
        self.sim_pid = sim_pid

    def start(self) -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), proc_cpu(self.sim_pid)

    def stop(self, t: tuple[float, float, float]) -> dict[str, float]:
        return {
            "seconds": time.perf_counter() - t[0],
            "client_cpu_s": time.process_time() - t[1],
            "sim_cpu_s": proc_cpu(self.sim_pid) - t[2],
        }


def recording_plan(disk: DiskSource, into: dict[str, Any]) -> None:
    """Make ``disk.plan`` note how long planning took and what it asked to read."""
    plan = disk.plan

    def wrapped(parent: PointRecord | None) -> ReadPlan:
        t = time.perf_counter()
        p = plan(parent)
        into["plan_s"] = time.perf_counter() - t
        into["plan_incremental"] = p.incremental
        into["plan_bytes"] = sum(n for _, n in p.extents)
        into["plan_extents"] = len(p.extents)
        return p

    disk.plan = wrapped  # type: ignore[method-assign]


def fresh_repo(path: Path) -> Repository:
    rmtree(path)
    return Repository.init(FolderStore(path), PASSWORD, kdf=KDF)


class Bench:
    def __init__(self, work: Path, size: str, fraction: float) -> None:
        self.work, self.fraction = work, fraction
        self.img = work / "vm1.img"
        self.extents_file = work / "changed.json"
        log(f"creating the {size} image")
        subprocess.run(
            [sys.executable, str(MAKE_DISK), "create", str(self.img), "--size", size, "--seed", "1"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.size = self.img.stat().st_size
        self.allocated = self.img.stat().st_blocks * 512
        self.runner = Runner(work)
        log("starting the vCenter simulator")
        self.sim: Vcsim = start_vcsim(work / "vcsim", vms=1)
        self.meter = Meter(self.sim.process.pid)
        vm = self.sim.vms()[0]
        self.vm_name, self.moref, self.uuid = vm["name"], vm["moref"], vm["uuid"]
        self.key = int(vm["disks"][0]["key"])
        self.source = disk_source(self.key)
        t = time.perf_counter()
        self.sim.load(self.moref, self.key, self.img)
        self.load_s = time.perf_counter() - t
        capacity = int(self.sim.disk(self.moref, self.key)["capacity"])
        if capacity != self.size:
            raise BenchError(f"the VM disk has {capacity} bytes after load, the image {self.size}")
        self.endpoint = Endpoint(
            "bench-vc", self.sim.url, self.sim.username, self.sim.password, VCenterTls(insecure=True)
        )
        session = connect(self.endpoint)  # CBT on (and active) before anything is timed
        try:
            snapshots.ensure_cbt(find_vm(session, self.moref, self.uuid))
        finally:
            session.close()
        self.jobs = 0
        self.repos = {p: work / f"repo-{p}" for p in PATHS}
        self.last_point: dict[str, PointRecord] = {}

    def machine(self) -> VsphereMachine:
        self.jobs += 1
        return VsphereMachine(
            self.endpoint, moref=self.moref, instance_uuid=self.uuid, sources=[self.source],
            node_id="bench", job_id=f"run-{self.jobs}",
        )  # fmt: skip

    # one replication, either path --------------------------------------------------------
    def run_vsphere(self, repo: Repository) -> dict[str, Any]:
        def open_snapshot() -> tuple[DiskSource, Callable[[], None]]:
            snap = self.machine().open()
            return snap.disks[self.source], snap.close

        return self._timed_run(repo, open_snapshot)

    def run_file(self, repo: Repository, extents: list[tuple[int, int]] | None) -> dict[str, Any]:
        def open_file() -> tuple[DiskSource, Callable[[], None]]:
            src = FileSource(self.img, changed_extents=extents)
            return src, src.close

        return self._timed_run(repo, open_file)

    def _timed_run(
        self, repo: Repository, open_source: Callable[[], tuple[DiskSource, Callable[[], None]]]
    ) -> dict[str, Any]:
        """One replication, timed by phase: open (snapshot), plan, replicate, close."""
        out: dict[str, Any] = {}
        t = self.meter.start()
        t_open = time.perf_counter()
        disk, close = open_source()
        out["open_s"] = time.perf_counter() - t_open
        try:
            recording_plan(disk, out)
            t_rep = time.perf_counter()
            point = replicate(repo, DISK_ID, disk, ReplicationOptions())
            out["replicate_s"] = time.perf_counter() - t_rep
        finally:
            t_close = time.perf_counter()
            close()
            out["close_s"] = time.perf_counter() - t_close
        out.update(self.meter.stop(t))
        return self._with_point(out, point)

    def _with_point(self, out: dict[str, Any], point: PointRecord) -> dict[str, Any]:
        out.update(
            bytes_read=point.stats.bytes_read,
            blocks_read=point.stats.blocks_read,
            bytes_new_stored=point.stats.bytes_new_stored,
            pipeline_duration_s=point.stats.duration_s,
            read_tag=point.tags.get("read", ""),
        )
        return out

    def one(self, path: str, repo: Repository, extents: list[tuple[int, int]] | None) -> dict[str, Any]:
        r = self.run_vsphere(repo) if path == "vsphere" else self.run_file(repo, extents)
        sync()  # write-back of the repository outside the timings
        return r

    # 1. full replication -----------------------------------------------------------------
    def full(self, repeat: int) -> dict[str, list[dict[str, Any]]]:
        for p in PATHS:  # warm-up into throw-away repositories
            self.one(p, fresh_repo(self.work / f"warmup-{p}"), None)
            rmtree(self.work / f"warmup-{p}")
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
        for i in range(repeat):
            for p in PATHS if i % 2 == 0 else PATHS[::-1]:
                runs[p].append(self.one(p, fresh_repo(self.repos[p]), None))
        for p in PATHS:
            if runs[p][-1]["read_tag"] != "full":
                raise BenchError(f"{p}: the full replication read {runs[p][-1]['read_tag']!r}")
        return runs

    # 2. incrementals ---------------------------------------------------------------------
    def mutate(self, seed: int) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, str(MAKE_DISK), "mutate", str(self.img), "--fraction", str(self.fraction),
             "--seed", str(seed), "--extents-out", str(self.extents_file)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        info: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        extents = [(int(o), int(n)) for o, n in json.loads(self.extents_file.read_text())]
        t = time.perf_counter()
        with open(self.img, "rb") as f:
            for off, n in extents:
                self.sim.write(self.moref, self.key, off, os.pread(f.fileno(), n, off))
        info["apply_s"] = time.perf_counter() - t
        info["extent_list"] = extents
        return info

    def incrementals(self, warmup: int, repeat: int) -> tuple[dict[str, list[dict[str, Any]]], list[dict]]:
        repos = {p: Repository.open(FolderStore(self.repos[p]), lambda: PASSWORD) for p in PATHS}
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
        mutations = []
        for r in range(warmup + repeat):
            m = self.mutate(100 + r)
            extents = m.pop("extent_list")
            sync()
            got = {p: self.one(p, repos[p], extents) for p in (PATHS if r % 2 == 0 else PATHS[::-1])}
            for p, g in got.items():
                if g["read_tag"] != "changed":
                    raise BenchError(f"{p}: round {r} read {g['read_tag']!r}, not the changed ranges")
            label = "warm-up" if r < warmup else f"round {r - warmup + 1}"
            log(f"  {label}: {m['changed_bytes'] / MIB:.1f} MiB in {m['extents']} extents; vsphere "
                f"{got['vsphere']['seconds']:.2f} s, file {got['file']['seconds']:.2f} s")  # fmt: skip
            if r >= warmup:
                mutations.append(m)
                for p in PATHS:
                    runs[p].append(got[p])
        return runs, mutations

    # 3. transport alone ------------------------------------------------------------------
    def transport(self, repeat: int) -> dict[str, Any]:
        with FileSource(self.img) as src:
            data = src.data_extents()
            n_blocks = -(-self.size // DEFAULT_BLOCK_SIZE)
            blocks = list(blocks_touched(data, DEFAULT_BLOCK_SIZE, n_blocks))
            snap = self.machine().open()
            try:
                reader = snap.disks[self.source].reader  # type: ignore[attr-defined]

                def read_all(read: Callable[[int, int], bytes], threads: int) -> None:
                    def one(i: int) -> None:
                        off = i * DEFAULT_BLOCK_SIZE
                        read(off, min(DEFAULT_BLOCK_SIZE, self.size - off))

                    if threads == 1:
                        for i in blocks:
                            one(i)
                    else:
                        with ThreadPoolExecutor(threads) as pool:
                            list(pool.map(one, blocks))

                variants: dict[str, Callable[[], None]] = {
                    "pread-1": lambda: read_all(src.read, 1),
                    "https-1": lambda: read_all(reader.read, 1),
                    "https-2": lambda: read_all(reader.read, 2),
                }
                for fn in variants.values():
                    fn()
                runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
                for _ in range(repeat):
                    for v, fn in variants.items():
                        t = self.meter.start()
                        fn()
                        runs[v].append(self.meter.stop(t))
            finally:
                snap.close()
        read_bytes = sum(min(DEFAULT_BLOCK_SIZE, self.size - i * DEFAULT_BLOCK_SIZE) for i in blocks)
        return {"blocks": len(blocks), "bytes": read_bytes, "runs": runs}

    def limit(self, repeat: int) -> list[float]:
        self.runner.timed(["cat", str(self.img)])
        return [self.runner.timed(["cat", str(self.img)])["seconds"] for _ in range(repeat)]

    def verify(self) -> dict[str, str]:
        want = sha256(self.img)
        out = {}
        for p in PATHS:
            repo = Repository.open(FolderStore(self.repos[p]), lambda: PASSWORD)
            dest = self.work / f"restored-{p}.img"
            dest.unlink(missing_ok=True)
            restore(repo, repo.resolve_point(DISK_ID, "latest"), str(dest))
            got = sha256(dest)
            if got != want:
                raise BenchError(f"{p}: the latest point restores with sha256 {got}, the image has {want}")
            dest.unlink()
            out[p] = got
        return out


# --------------------------------------------------------------------------- report


def med(runs: list[dict[str, Any]], key: str) -> float:
    return median([r[key] for r in runs])


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    inc, full = res["incremental"], res["full"]
    changed = median([m["changed_bytes"] for m in res["mutations"]])
    s: dict[str, Any] = {"changed_bytes": changed, "incremental": {}, "full": {}, "transport": {}}
    for p in PATHS:
        s["incremental"][p] = {
            k: med(inc[p], k)
            for k in ("seconds", "open_s", "plan_s", "replicate_s", "close_s", "bytes_read", "client_cpu_s",
                      "sim_cpu_s", "plan_bytes")
        }  # fmt: skip
        s["incremental"][p]["changed_mib_s"] = median(
            [m["changed_bytes"] / MIB / r["seconds"] for m, r in zip(res["mutations"], inc[p], strict=True)]
        )
        s["incremental"][p]["changed_mib_s_replicate"] = median(
            [
                m["changed_bytes"] / MIB / r["replicate_s"]
                for m, r in zip(res["mutations"], inc[p], strict=True)
            ]
        )
        s["full"][p] = {k: med(full[p], k) for k in ("seconds", "open_s", "replicate_s", "close_s", "bytes_read",
                                                       "client_cpu_s", "sim_cpu_s")}  # fmt: skip
    iv, ifl = s["incremental"]["vsphere"], s["incremental"]["file"]
    fv, ffl = s["full"]["vsphere"], s["full"]["file"]
    tr = res["transport"]
    for v, runs in tr["runs"].items():
        sec = med(runs, "seconds")
        s["transport"][v] = {"seconds": sec, "mib_s": tr["bytes"] / MIB / sec,
                             "ms_per_block": sec / tr["blocks"] * 1000,
                             "client_cpu_s": med(runs, "client_cpu_s"), "sim_cpu_s": med(runs, "sim_cpu_s")}  # fmt: skip
    s["limit_mib_s"] = mib_s(res["image"]["size_bytes"], median(res["limit_cat_s"]))
    s["ratios"] = {
        "incremental wall time vSphere/file (open + replicate + close)": iv["seconds"] / ifl["seconds"],
        "incremental replicate() time vSphere/file": iv["replicate_s"] / ifl["replicate_s"],
        "incremental changed-data MiB/s vSphere/file (< 1: vSphere slower)": iv["changed_mib_s"]
        / ifl["changed_mib_s"],
        "incremental bytes read vSphere/file": iv["bytes_read"] / ifl["bytes_read"],
        "full wall time vSphere/file": fv["seconds"] / ffl["seconds"],
        "full replicate() time vSphere/file": fv["replicate_s"] / ffl["replicate_s"],
        "transport 1 thread HTTPS/pread (time)": s["transport"]["https-1"]["seconds"]
        / s["transport"]["pread-1"]["seconds"],
        "transport 2 threads HTTPS / 1 thread pread (time)": s["transport"]["https-2"]["seconds"]
        / s["transport"]["pread-1"]["seconds"],
        "incremental vSphere wall / own full wall": iv["seconds"] / fv["seconds"],
        "incremental file wall / own full wall": ifl["seconds"] / ffl["seconds"],
    }
    return s


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def render(res: dict[str, Any]) -> str:
    s, m, img, prm = res["summary"], res["machine"], res["image"], res["params"]
    size, rep = img["size_bytes"], prm["repeat"]
    inc, full, tr = res["incremental"], res["full"], res["transport"]
    si, sf, st, ra = s["incremental"], s["full"], s["transport"], s["ratios"]
    changed = s["changed_bytes"]
    muts = res["mutations"]
    cmd = f"python3 bench/vsphere_bench.py --size {prm['size']} --repeat {rep} --out docs/BENCHMARKS.md"
    if prm["warmup"] != 1 or prm["fraction"] != 0.05:
        cmd += f" --warmup {prm['warmup']} --fraction {prm['fraction']}"
    out = [
        START,
        "## vSphere source",
        "",
        f"Generated by `{cmd}` on {m['date']} at commit `{m['commit']}` (total {prm['total_minutes']:.1f} min); "
        f"rerun with the same command (it rewrites only this section). Raw measurements: `{prm['json']}` "
        ". As everywhere in this document: the machine is small and shared, read the "
        "**medians and ratios**, not single times.",
        "",
        f"Machine: {m['nproc']} cores ({m['CPU']}), {m['RAM']} RAM, kernel {m['kernel']}, work directory on "
        f"{m['workdir filesystem']}; Python {m['python']}, pyvmomi {m['pyvmomi']}, urllib3 {m['urllib3']}, "
        f"{m['go']} (the simulator, `tools/vcsim`, govmomi {m['govmomi']}). Load average (1/5/15 min) at "
        f"the start {m['load_start']}, at the end {m['load_end']}. The simulator runs on the same 2 cores as "
        "the replication.",
        "",
        "### Method",
        "",
        f"- Image: `tests/support/make_disk.py create --size {prm['size']} --seed 1`: {size / MIB:.0f} MiB logical, "
        f"{img['allocated_bytes'] / MIB:.0f} MiB allocated (sparse), loaded into disk {res['vm']['disk_key']} of "
        f"VM `{res['vm']['name']}` with the simulator's `load` hook ({res['vm']['load_s']:.1f} s); CBT switched on "
        "and activated before anything is timed. The local image is the file source. Simulator datastores, "
        f"image and both repositories live in `{prm['workdir']}` on the same file system; nothing is dropped "
        "from the page cache (every read is from RAM, on both paths).",
        '- vSphere path: `VsphereMachine(Endpoint(..., VCenterTls(insecure=True)), sources=["device:KEY"])`: '
        "`open()` (login, find the VM, snapshot, read the VMDK descriptor) → `replicate()` on the snapshot's "
        'disk (plan = `QueryChangedDiskAreas`, `"*"` for the full and since the last point\'s changeId for the '
        "incrementals; reads = HTTPS `Range` GETs of the frozen flat file under the SOAP session cookie) → "
        "`close()` (snapshot removal, logout). File path: `FileSource(IMG)` (full: SEEK_DATA) or "
        "`FileSource(IMG, changed_extents=...)` → `replicate()`. Both with default `ReplicationOptions` "
        "(1 MiB blocks, 2 workers, 4 upload streams) into their own encrypted repository on a FolderStore.",
        f"- Full: one un-timed warm-up per path, then {rep} timed runs per path, interleaved, each into a fresh "
        "repository (the last one is kept for the incrementals).",
        f"- Incrementals: {prm['warmup']} un-timed warm-up round(s), then {rep} timed rounds. Each round: "
        f"`make_disk.py mutate --fraction {prm['fraction']} --seed 100+round --extents-out` on the local image "
        f"(median {changed / MIB:.1f} MiB changed in {median([x['extents'] for x in muts]):.0f} extents), the same "
        "bytes written extent by extent into the VM disk through the simulator's `write` hook (not timed: "
        f"median {median([x['apply_s'] for x in muts]):.2f} s), then one incremental per path, the order "
        "alternating per round. *Wall* = open + replicate + close; MiB/s of changed data = changed bytes / "
        "wall (or / replicate alone). Client CPU = this Python process (`time.process_time`, all threads); "
        "simulator CPU = the vcsim process (utime + stime from /proc).",
        f"- Transport alone: each of the {tr['blocks']} 1 MiB blocks that hold data after the rounds "
        f"({tr['bytes'] / MIB:.0f} MiB; the mutations wrote into some holes) "
        f"read once through the snapshot's `FlatDisk.read` and through `os.pread` of the local image; one "
        f"warm-up, {rep} timed passes. Machine limit: `cat IMG` (bench/run.py's Runner), median "
        f"{median(res['limit_cat_s']):.2f} s = {s['limit_mib_s']:.0f} MiB/s.",
        "- Checked: every full run read `full`, every incremental `changed`; at the end the latest point of "
        "both repositories is restored and sha256-checked against the mutated image "
        f"({'verified' if res['verified'] else 'NOT verified'}).",
        "",
        f"### Incremental ({prm['fraction']:.0%} changed, median of {rep} rounds)",
        "",
        table(
            [
                "Path",
                "Wall s (min-max)",
                "open s",
                "plan s",
                "replicate s",
                "close s",
                "Changed MiB/s (wall)",
                "Changed MiB/s (replicate)",
                "Bytes read",
                "Client CPU s",
                "Simulator CPU s",
            ],
            [
                [
                    LABELS[p],
                    f"{si[p]['seconds']:.2f} ({spread([r['seconds'] for r in inc[p]])})",
                    f"{si[p]['open_s']:.2f}",
                    f"{si[p]['plan_s']:.3f}",
                    f"{si[p]['replicate_s']:.2f}",
                    f"{si[p]['close_s']:.2f}",
                    f"{si[p]['changed_mib_s']:.0f}",
                    f"{si[p]['changed_mib_s_replicate']:.0f}",
                    mib(si[p]["bytes_read"]),
                    f"{si[p]['client_cpu_s']:.2f}",
                    f"{si[p]['sim_cpu_s']:.2f}",
                ]
                for p in PATHS
            ],
        ),
        "",
        "Per round (wall s, vSphere / file):",
        "",
        table(
            [
                "Round",
                "Changed",
                "Extents",
                "CBT-planned bytes",
                "vSphere wall s",
                "file wall s",
                "vSphere/file",
            ],
            [
                [
                    str(i + 1),
                    mib(mu["changed_bytes"]),
                    str(mu["extents"]),
                    mib(v["plan_bytes"]),
                    f"{v['seconds']:.2f}",
                    f"{f['seconds']:.2f}",
                    f"{v['seconds'] / f['seconds']:.2f}x",
                ]
                for i, (mu, v, f) in enumerate(zip(muts, inc["vsphere"], inc["file"], strict=True))
            ],
        ),
        "",
        f"### Full replication (median of {rep})",
        "",
        table(
            [
                "Path",
                "Wall s (min-max)",
                "MiB/s (logical)",
                "open s",
                "replicate s",
                "close s",
                "Bytes read",
                "Client CPU s",
                "Simulator CPU s",
            ],
            [
                [
                    FULL_LABELS[p],
                    f"{sf[p]['seconds']:.2f} ({spread([r['seconds'] for r in full[p]])})",
                    f"{mib_s(size, sf[p]['seconds']):.0f}",
                    f"{sf[p]['open_s']:.2f}",
                    f"{sf[p]['replicate_s']:.2f}",
                    f"{sf[p]['close_s']:.2f}",
                    mib(sf[p]["bytes_read"]),
                    f"{sf[p]['client_cpu_s']:.2f}",
                    f"{sf[p]['sim_cpu_s']:.2f}",
                ]
                for p in PATHS
            ]
            + [
                [
                    "`cat IMG` (machine limit)",
                    f"{median(res['limit_cat_s']):.2f} ({spread(res['limit_cat_s'])})",
                    f"{s['limit_mib_s']:.0f}",
                    "",
                    "",
                    "",
                    mib(size),
                    "",
                    "",
                ]
            ],
        ),
        "",
        f"### The transport alone ({tr['bytes'] / MIB:.0f} MiB in 1 MiB reads, median of {rep})",
        "",
        table(
            ["Read path", "Seconds", "MiB/s", "ms per 1 MiB read", "Client CPU s", "Simulator CPU s"],
            [
                [
                    TRANSPORTS[v],
                    f"{x['seconds']:.2f}",
                    f"{x['mib_s']:.0f}",
                    f"{x['ms_per_block']:.2f}",
                    f"{x['client_cpu_s']:.2f}",
                    f"{x['sim_cpu_s']:.2f}",
                ]
                for v, x in st.items()
            ],
        ),
        "",
        "### Ratios",
        "",
        table(
            ["Ratio (times and bytes: > 1 means vSphere slower / more)", "Value"],
            [[k, f"{v:.2f}"] for k, v in ra.items()],
        ),
        "",
        "### Notes",
        "",
        *[f"- {n}" for n in notes(res)],
        "",
        END,
    ]
    return "\n".join(out)


def notes(res: dict[str, Any]) -> list[str]:
    s = res["summary"]
    si, sf, st, ra = s["incremental"], s["full"], s["transport"], s["ratios"]
    iv, ifl = si["vsphere"], si["file"]
    h1, p1, h2 = st["https-1"], st["pread-1"], st["https-2"]
    cpu_share = (h1["sim_cpu_s"] + h1["client_cpu_s"]) / h1["seconds"]
    two_threads = (
        "do not help"
        if h2["mib_s"] <= h1["mib_s"] * 1.1
        else f"help ({h2['mib_s'] / h1['mib_s']:.2f}x one thread)"
    )
    exact = all(
        v["plan_bytes"] == m["changed_bytes"] and v["bytes_read"] == f["bytes_read"]
        for m, v, f in zip(
            res["mutations"], res["incremental"]["vsphere"], res["incremental"]["file"], strict=True
        )
    )
    same = (
        "CBT reported exactly the mutated ranges (64 KiB grains) in every round, so both paths read the same "
        "1 MiB blocks"
        if exact
        else "CBT's planned bytes or the blocks read differ from the file path's in some round (see the per-round "
        "table), so the paths did not read the same blocks"
    )
    out = [
        f"Same work, different source: {same} (median {mib(iv['bytes_read'])} vSphere, {mib(ifl['bytes_read'])} "
        f"file, for {mib(s['changed_bytes'])} changed); the difference is the transport and the snapshot lifecycle.",
        f"The HTTPS datastore path: one 1 MiB `Range` GET costs {h1['ms_per_block']:.2f} ms against "
        f"{p1['ms_per_block']:.2f} ms for a `pread` of the same block ({ra['transport 1 thread HTTPS/pread (time)']:.1f}x, "
        f"one thread; {h1['mib_s']:.0f} vs {p1['mib_s']:.0f} MiB/s, `pread` being a copy out of the page cache). "
        f"Serving one pass of {res['transport']['bytes'] / MIB:.0f} MiB the simulator (Go, TLS) spent "
        f"{h1['sim_cpu_s']:.2f} CPU s and this process {h1['client_cpu_s']:.2f} CPU s (TLS decryption, urllib3, "
        f"copying the body into `bytes`): {cpu_share:.1f} of the 2 cores busy for the whole pass. On the "
        f"loopback the cost is CPU, not the network. Two threads {two_threads} "
        f"({h2['mib_s']:.0f} MiB/s): client and simulator already share the 2 cores, and in the pipeline the "
        "same cores also hash, compress and encrypt, which is why the incremental's reads run well below this "
        f"pass's rate ({iv['bytes_read'] / MIB / iv['replicate_s']:.0f} MiB/s of blocks read in replicate).",
        f"Where the incremental's time goes on the vSphere path: open {iv['open_s']:.2f} s, replicate "
        f"{iv['replicate_s']:.2f} s (of which the CBT query {iv['plan_s']:.3f} s), close {iv['close_s']:.2f} s; "
        f"the file path needs {ifl['replicate_s']:.2f} s in replicate and nothing around it. replicate() alone is "
        f"{ra['incremental replicate() time vSphere/file']:.2f}x the file path's, the whole run "
        f"{ra['incremental wall time vSphere/file (open + replicate + close)']:.2f}x.",
        f"The simulator's snapshot is not vSphere's: `CreateSnapshot_Task` in tools/vcsim copies every allocated "
        f"grain of the disk into the new delta (a sparse copy of {res['image']['allocated_bytes'] / MIB:.0f} MiB "
        "here) and removal is a rename, where vSphere starts an empty delta disk and consolidates the writes made "
        f"during the run on removal. So `open` here scales with the disk's allocated data (median {iv['open_s']:.2f} s "
        "per incremental) and says nothing about a real vCenter's snapshot latency, which this does not measure. "
        "Both also include the source's task polling (`wait_task` looks again after 0.05 s, then doubles the "
        "wait), which rounds every snapshot task up to the next poll. Read the `replicate` column for the data path.",
        "What this does not measure: a real vCenter/ESXi datastore HTTP service (its own throughput and limits), "
        "a network between node and host, cold datastore reads. The simulator serves the flat file from the "
        "page cache over loopback TLS: the vSphere figures are the best case of this transport on this machine.",
        f"Fulls: vSphere {sf['vsphere']['seconds']:.2f} s ({mib_s(res['image']['size_bytes'], sf['vsphere']['seconds']):.0f} MiB/s) "
        f"against file {sf['file']['seconds']:.2f} s ({mib_s(res['image']['size_bytes'], sf['file']['seconds']):.0f} MiB/s), "
        f'{ra["full wall time vSphere/file"]:.2f}x; both skip the holes (CBT `"*"` reports the non-zero grains, '
        f"the file source SEEK_DATA), reading {mib(sf['vsphere']['bytes_read'])} and {mib(sf['file']['bytes_read'])}.",
    ]
    return out


# --------------------------------------------------------------------------- main


def machine_info(work: Path) -> dict[str, str]:
    model, ram = cpu_and_ram()
    gover = first_line(["go", "version"])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "nproc": first_line(["nproc"]),
        "CPU": model,
        "RAM": ram,
        "kernel": platform.release(),
        "workdir filesystem": first_line(["stat", "-f", "-c", "%T", str(work)]),
        "python": platform.python_version(),
        "pyvmomi": version("pyvmomi"),
        "urllib3": version("urllib3"),
        "go": " ".join(gover.split()[2:3]) or gover,
        "govmomi": first_line(["dpkg-query", "-W", "-f=${Version}", "golang-github-vmware-govmomi-dev"]),
        "load_start": loadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="512M", help="image / VM disk size (make_disk.py syntax: 256M, 1G)")
    p.add_argument("--repeat", type=int, default=3, help="timed full runs and incremental rounds; medians")
    p.add_argument("--warmup", type=int, default=1, help="un-timed incremental rounds before the timed ones")
    p.add_argument("--fraction", type=float, default=0.05, help="share of the disk each round rewrites")
    p.add_argument("--out", type=Path, default=DOC)
    p.add_argument("--json", type=Path, default=RESULTS_JSON)
    p.add_argument("--workdir", type=Path, default=ROOT / "bench" / "work" / "vsphere")
    p.add_argument("--render-only", action="store_true", help="re-render --out from --json; run nothing")
    a = p.parse_args()
    if a.render_only:
        replace_section(a.out, render(json.loads(a.json.read_text())), START, END)
        return
    if a.repeat < 1 or a.warmup < 0:
        raise BenchError("--repeat must be ≥ 1 and --warmup ≥ 0")
    work = a.workdir.resolve()
    rmtree(work)
    work.mkdir(parents=True)
    machine = machine_info(work)
    bench = Bench(work, a.size, a.fraction)
    try:
        log("machine limit (cat)")
        limit = bench.limit(a.repeat)
        log("full replications")
        full = bench.full(a.repeat)
        log("incrementals")
        incremental, mutations = bench.incrementals(a.warmup, a.repeat)
        log("transport alone")
        transport = bench.transport(a.repeat)
        log("verifying the latest points")
        verified = bench.verify()
    finally:
        bench.sim.stop()
    machine["load_end"] = loadavg()
    res: dict[str, Any] = {
        "machine": machine,
        "params": {
            "size": a.size,
            "repeat": a.repeat,
            "warmup": a.warmup,
            "fraction": a.fraction,
            "workdir": os.path.relpath(work, ROOT),
            "json": os.path.relpath(a.json.resolve(), ROOT),
            "total_minutes": (time.perf_counter() - T_START) / 60,
        },
        "image": {"size_bytes": bench.size, "allocated_bytes": bench.allocated},
        "vm": {"name": bench.vm_name, "moref": bench.moref, "disk_key": bench.key, "load_s": bench.load_s},
        "limit_cat_s": limit,
        "full": full,
        "incremental": incremental,
        "mutations": mutations,
        "transport": transport,
        "verified": verified,
    }
    res["summary"] = summarize(res)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=2) + "\n")
    replace_section(a.out, render(res), START, END)
    rmtree(work)
    log(f"wrote {a.out} and {a.json}")
    for k, v in res["summary"]["ratios"].items():
        print(f"  {k}: {v:.2f}")


if __name__ == "__main__":
    main()
