#!/usr/bin/env python3
"""KVM incremental replication of a running VM (dirty bitmaps + fleecing + NBD) and failback
of one disk (only the blocks that differ), against a full re-read and a full copy, in one run.

    python -m bench.kvm_bench [--size-mib 1024] [--runs 3] [--warmup 1] [--fraction 0.05]
                              [--json bench/kvm_results.json] [--out docs/BENCHMARKS.md]
                              [--workdir bench/work/kvm]
    python -m bench.kvm_bench --smoke         # 64 MiB, 1 run, no warm-up; leaves the doc alone
    python -m bench.kvm_bench --render-only   # re-render the doc section from the JSON

Every repository is encrypted, on a FolderStore with fsync on (as a real run), default
``ReplicationOptions`` (1 MiB blocks, 2 workers, 4 upload streams).

1. Incremental of a running VM. A ``tests/support/make_disk.py create`` image (--size-mib,
   seed 1) becomes the qcow2 data disk of ``qemu-system-x86_64 -accel tcg`` (``--accel kvm``
   to use /dev/kvm; no guest OS:
   the firmware idles); a raw copy of it is the byte model. Two lineages of the same disk,
   each with its own ``KvmMachine`` and repository: ``vm1`` (the incremental) and
   ``vm1-fullread`` (whose dirty bitmap is removed through QMP before each of its runs, so
   the source falls back to a full read deduplicated against the parent: the same
   incremental without changed-block tracking). Both start with one full replication.
   Then ``--warmup`` un-timed rounds and ``--runs`` timed rounds; each round writes about
   ``--fraction`` of the disk in scattered 64 KiB-1 MiB writes (4 KiB-aligned, make_disk
   data kinds) into the *running* drive through QMP ``human-monitor-command`` ``qemu-io``
   (timed apart, not in the figures; mirrored into the model), then one ``vm1`` incremental
   and one ``vm1-fullread`` run (order alternating), then one more ``vm1`` incremental with
   nothing changed (the fixed per-run overhead). A run = ``open()`` (QMP freeze
   transaction: bitmap rotation + fleecing ``blockdev-backup sync=none`` + NBD export) +
   ``replicate()`` (plan from the frozen bitmap, reads over libnbd) + ``committed()`` +
   ``close()`` (tear-down, old generations dropped).
   The transport alone: every 1 MiB block holding data read once through the frozen NBD
   export (1 and 2 threads) and with ``os.pread`` of the model; machine limit ``cat`` and
   ``zstd -1 -T2`` of the model (bench/run.py's Runner). Both latest points are restored
   and sha256-checked against the model.
2. Failback. An origin qcow2 (make_disk, seed 3) is protected through ``OfflineMachine``
   (forward point, persistent bitmap); its point is restored into a "recovered" qcow2
   (restore to raw + ``qemu-img convert``). For each failback fraction (1% and 5%) the
   recovered image gets scattered writes (``qemu-io``), is replicated as the reverse
   lineage ``app-d0.r1`` (``seed_parent=("app-d0", forward)``), and then, ``--runs`` times on
   a fresh copy of the origin (and of the repository): ``failback_disk(verify=False)``,
   ``failback_disk(verify=True)`` and the full copy ``qemu-img convert -n`` of the
   recovered image into the origin, each followed by a timed ``sync``; every result is
   checked with ``qemu-img compare`` against the recovered image.

Writes ``--json`` and the section between ``<!-- kvm:start -->`` and ``<!-- kvm:end -->`` of
``--out`` (appended at the end if missing). Every QEMU started here is stopped in a finally.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    MAKE_DISK,
    Runner,
    copy_sparse,
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
from node_runtime.recovery.failback import failback_disk  # noqa: E402
from node_runtime.recovery.restore import restore  # noqa: E402
from node_runtime.replication.pipeline import (  # noqa: E402
    DEFAULT_BLOCK_SIZE,
    ReplicationOptions,
    replicate,
)
from node_runtime.replication.read_plan import blocks_touched  # noqa: E402
from node_runtime.sources.kvm.offline import OfflineMachine  # noqa: E402
from node_runtime.sources.kvm.qmp import Qmp  # noqa: E402
from node_runtime.sources.kvm.source import DiskRef, KvmMachine  # noqa: E402
from node_runtime.sources.port import DiskSource, ReadPlan  # noqa: E402
from shared.adapters.local.folder_store import FolderStore  # noqa: E402
from shared.repo.keys import KdfParams  # noqa: E402
from shared.repo.points import PointRecord  # noqa: E402
from shared.repo.repository import Repository  # noqa: E402
from tests.support import make_disk  # noqa: E402  (fill: the images' data kinds)

RESULTS_JSON = ROOT / "bench" / "kvm_results.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- kvm:start -->", "<!-- kvm:end -->"
PASSWORD = "lifeboat-bench-passphrase"
KDF = KdfParams(iterations=1, memory_kib=8192, lanes=1)  # KDF cost kept out of the timings
MIB = 1 << 20
KIB = 1 << 10
DEVICE = "device:0"
INC, FULLREAD, IDLE = "incremental", "fullread", "idle"
PATHS = (INC, FULLREAD)
WRITE_UNIT = 64 * KIB  # writes are 1..16 of these
WRITE_ALIGN = 4 * KIB
KINDS, KIND_WEIGHTS = ("text", "struct", "random"), (25, 20, 15)  # make_disk's non-zero mix
FAILBACK_FRACTIONS = (0.01, 0.05)
FB_VARIANTS = ("failback", "verified", "copy")
FB_LABELS = {
    "failback": "`failback_disk(verify=False)`",
    "verified": "`failback_disk(verify=True)`",
    "copy": "full copy: `qemu-img convert -n` recovered → origin",
}
LABELS = {
    INC: "incremental: frozen dirty bitmap → changed blocks over NBD",
    FULLREAD: "same changes, bitmap removed: full re-read over NBD (dedup against the parent)",
    IDLE: "incremental with nothing changed (fixed per-run overhead)",
}
TRANSPORTS = {
    "pread-1": "`os.pread` of the raw model, 1 thread",
    "nbd-1": "frozen NBD export (libnbd `pread`), 1 thread",
    "nbd-2": "frozen NBD export (libnbd `pread`), 2 threads (the pipeline's workers)",
}
T_START = time.perf_counter()
TICK = os.sysconf("SC_CLK_TCK")


class BenchError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"kvm bench: {message}")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_cmd(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise BenchError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc


def copy_tree(src: Path, dst: Path) -> None:
    rmtree(dst)
    run_cmd(["cp", "-a", "--reflink=auto", str(src), str(dst)])


def fresh_repo(path: Path) -> Repository:
    rmtree(path)
    Repository.init(FolderStore(path), PASSWORD, kdf=KDF)
    return open_repo(path)


def open_repo(path: Path) -> Repository:
    return Repository.open(FolderStore(path), lambda: PASSWORD)


def make_image(raw: Path, qcow2: Path, size_mib: int, seed: int) -> None:
    """make_disk data in ``raw`` (kept) and the same bytes as a qcow2 ``qcow2``."""
    run_cmd(
        [sys.executable, str(MAKE_DISK), "create", str(raw), "--size", f"{size_mib}M", "--seed", str(seed)]
    )
    qcow2.unlink(missing_ok=True)
    run_cmd(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)])


def allocated_bytes(image: Path) -> int:
    """Bytes holding data in an image (``qemu-img map``: data, not zero)."""
    out = run_cmd(["qemu-img", "map", "-U", "--output=json", str(image)]).stdout
    return sum(int(e["length"]) for e in json.loads(out) if e.get("data") and not e.get("zero"))


# --------------------------------------------------------------------------- the writes


def merge(extents: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, n in sorted(extents):
        if out and off <= out[-1][0] + out[-1][1]:
            end = max(out[-1][0] + out[-1][1], off + n)
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((off, n))
    return out


def union_bytes(extents: Sequence[tuple[int, int]]) -> int:
    return sum(n for _, n in merge(extents))


class Writes:
    """About ``fraction`` of a disk in scattered 64 KiB-1 MiB writes at 4 KiB-aligned offsets,
    each with its own make_disk payload (text / structured / random) in a file for ``qemu-io -s``."""

    def __init__(self, folder: Path, size: int, fraction: float, seed: int) -> None:
        rng = random.Random(seed)
        target = int(size * fraction)
        self.extents: list[tuple[int, int]] = []
        while union_bytes(self.extents) < target:
            n = rng.randint(1, 16) * WRITE_UNIT
            self.extents.append((rng.randrange(0, (size - n) // WRITE_ALIGN + 1) * WRITE_ALIGN, n))
        rmtree(folder)
        folder.mkdir(parents=True)
        self.files: list[Path] = []
        for i, (_, n) in enumerate(self.extents):
            path = folder / f"w{i:04d}.bin"
            path.write_bytes(make_disk.fill(rng, rng.choices(KINDS, KIND_WEIGHTS)[0], n))
            self.files.append(path)
        self.changed_bytes = union_bytes(self.extents)
        self.blocks = len(
            list(blocks_touched(self.extents, DEFAULT_BLOCK_SIZE, -(-size // DEFAULT_BLOCK_SIZE)))
        )

    def commands(self) -> list[str]:
        return [f"write -q -s {p} {off} {n}" for p, (off, n) in zip(self.files, self.extents, strict=True)]

    def apply_to(self, model: Path) -> None:
        """Mirror the writes (in order: a later write wins) into the raw model."""
        fd = os.open(model, os.O_WRONLY)
        try:
            for p, (off, _) in zip(self.files, self.extents, strict=True):
                os.pwrite(fd, p.read_bytes(), off)
        finally:
            os.close(fd)

    def info(self) -> dict[str, Any]:
        return {"writes": len(self.extents), "changed_bytes": self.changed_bytes, "blocks_touched": self.blocks,
                "write_bytes": sum(n for _, n in self.extents)}  # fmt: skip


# --------------------------------------------------------------------------- the VM


class Vm:
    """``qemu-system-x86_64 -accel ACCEL`` with one qcow2 data disk and a QMP socket."""

    def __init__(self, folder: Path, image: Path, accel: str = "tcg", memory_mib: int = 64) -> None:
        self.folder, self.image, self.accel, self.memory_mib = folder, image, accel, memory_mib
        digest = hashlib.sha256(str(folder).encode()).hexdigest()[:10]
        self.qmp_socket = Path("/tmp") / f"lb-bench-kvm-{digest}.qmp"  # unix socket paths stop at 107 bytes
        self.pidfile = folder / "vm.pid"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.qmp_socket.unlink(missing_ok=True)
        run_cmd(["qemu-system-x86_64", "-accel", self.accel, "-nodefaults", "-display", "none", "-m", str(self.memory_mib),
                 "-name", "guest=bench-vm1", "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
                 "-pidfile", str(self.pidfile), "-daemonize",
                 "-drive", f"file={self.image},format=qcow2,if=none,id=disk0",
                 "-device", "virtio-blk-pci,drive=disk0"], timeout=60)  # fmt: skip

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """SIGTERM (QEMU flushes and exits), SIGKILL after 10 s."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                os.kill(pid, 0)
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.pidfile.unlink(missing_ok=True)
        self.qmp_socket.unlink(missing_ok=True)

    def qemu_io(self, commands: Sequence[str]) -> None:
        """Run ``qemu-io`` commands on the running drive, in one QMP session (HMP returns no
        output for qemu-io on this QEMU: failures surface in the plan and restore checks)."""
        with Qmp(str(self.qmp_socket)) as qmp:
            for c in commands:
                out = qmp.cmd("human-monitor-command", **{"command-line": f'qemu-io disk0 "{c}"'})
                if "error" in str(out).lower() or "failed" in str(out).lower():
                    raise BenchError(f"qemu-io {c}: {out}")

    def remove_bitmaps(self, disk_id: str) -> list[str]:
        prefix = f"lifeboat.{disk_id}."
        with Qmp(str(self.qmp_socket)) as qmp:
            disk = qmp.disks()[0]
            gone = [b.name for b in disk.bitmaps if b.name.startswith(prefix)]
            for name in gone:
                qmp.cmd("block-dirty-bitmap-remove", node=disk.node, name=name)
        return gone

    def bitmaps(self) -> list[str]:
        with Qmp(str(self.qmp_socket)) as qmp:
            return [b.name for b in qmp.disks()[0].bitmaps]


# --------------------------------------------------------------------------- measuring


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of process ``pid`` so far (0 without one)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


class Meter:
    """Wall time, this process's CPU, the VM's QEMU CPU and reaped child processes' CPU
    (qemu-storage-daemon, qemu-img) over a block of work."""

    def __init__(self, qemu_pid: int | None = None) -> None:
        self.qemu_pid = qemu_pid

    def start(self) -> tuple[float, float, float, float]:
        return time.perf_counter(), time.process_time(), proc_cpu(self.qemu_pid), children_cpu()

    def stop(self, t: tuple[float, float, float, float]) -> dict[str, float]:
        return {
            "seconds": time.perf_counter() - t[0],
            "client_cpu_s": time.process_time() - t[1],
            "qemu_cpu_s": proc_cpu(self.qemu_pid) - t[2],
            "child_cpu_s": children_cpu() - t[3],
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


def point_stats(point: PointRecord) -> dict[str, Any]:
    return {
        "bytes_read": point.stats.bytes_read,
        "blocks_read": point.stats.blocks_read,
        "bytes_new_raw": point.stats.bytes_new_raw,
        "bytes_new_stored": point.stats.bytes_new_stored,
        "pipeline_duration_s": point.stats.duration_s,
        "read_tag": point.tags.get("read", ""),
    }


def read_all(read: Callable[[int, int], bytes], blocks: list[int], size: int, threads: int) -> None:
    def one(i: int) -> None:
        read(i * DEFAULT_BLOCK_SIZE, min(DEFAULT_BLOCK_SIZE, size - i * DEFAULT_BLOCK_SIZE))

    if threads == 1:
        for i in blocks:
            one(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, blocks))


# --------------------------------------------------------------------------- 1. running VM


class KvmBench:
    def __init__(self, work: Path, size_mib: int, fraction: float, accel: str) -> None:
        self.work, self.fraction = work / "vm", fraction
        self.work.mkdir(parents=True)
        self.model = self.work / "model.raw"
        self.image = self.work / "vm1-disk0.qcow2"
        log(f"creating the {size_mib} MiB data disk")
        make_image(self.model, self.image, size_mib, seed=1)
        self.size = self.model.stat().st_size
        self.allocated = allocated_bytes(self.image)
        self.runner = Runner(self.work)
        self.vm = Vm(self.work / "qemu", self.image, accel)
        self.scratch = self.work / "scratch"
        self.machines = {
            INC: KvmMachine(str(self.vm.qmp_socket), [DiskRef("vm1", DEVICE)], scratch_dir=self.scratch, vm_id="vm1"),
            FULLREAD: KvmMachine(str(self.vm.qmp_socket), [DiskRef("vm1-fullread", DEVICE)],
                                 scratch_dir=self.scratch, vm_id="vm1-fullread"),
        }  # fmt: skip
        self.disk_ids = {INC: "vm1", FULLREAD: "vm1-fullread"}
        self.repo_paths = {p: self.work / f"repo-{p}" for p in PATHS}
        self.repos: dict[str, Repository] = {}
        self.meter = Meter()

    def start(self) -> None:
        log(f"starting qemu-system-x86_64 -accel {self.vm.accel}")
        self.vm.start()
        self.meter = Meter(self.vm.pid)

    def stop(self) -> None:
        self.vm.stop()

    def timed_run(self, path: str) -> dict[str, Any]:
        """One run like the node agent's: open (freeze), plan + replicate, committed, close."""
        machine, repo = self.machines[path], self.repos[path]
        out: dict[str, Any] = {}
        t = self.meter.start()
        t_open = time.perf_counter()
        snap = machine.open()
        out["open_s"] = time.perf_counter() - t_open
        try:
            disk = snap.disks[DEVICE]
            recording_plan(disk, out)
            t_rep = time.perf_counter()
            point = replicate(repo, self.disk_ids[path], disk, ReplicationOptions())
            out["replicate_s"] = time.perf_counter() - t_rep
            disk.committed(point)
        finally:
            t_close = time.perf_counter()
            snap.close()
            out["close_s"] = time.perf_counter() - t_close
        out.update(self.meter.stop(t))
        out.update(point_stats(point))
        sync()  # the repository's write-back outside the next timing
        return out

    def first_fulls(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in PATHS:
            self.repos[p] = fresh_repo(self.repo_paths[p])
            out[p] = self.timed_run(p)
            if out[p]["read_tag"] != "full":
                raise BenchError(f"{p}: the first replication read {out[p]['read_tag']!r}")
            log(f"  first full {p}: {out[p]['seconds']:.2f} s, {out[p]['bytes_read'] / MIB:.0f} MiB read")
        return out

    def rounds(self, warmup: int, runs: int) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
        got_runs: dict[str, list[dict[str, Any]]] = {INC: [], FULLREAD: [], IDLE: []}
        mutations = []
        for r in range(warmup + runs):
            w = Writes(self.work / "writes", self.size, self.fraction, seed=100 + r)
            t = time.perf_counter()
            self.vm.qemu_io(w.commands())
            apply_s = time.perf_counter() - t
            w.apply_to(self.model)
            sync()
            got: dict[str, dict[str, Any]] = {}
            for p in PATHS if r % 2 == 0 else PATHS[::-1]:
                if p == FULLREAD:
                    removed = self.vm.remove_bitmaps(self.disk_ids[FULLREAD])  # un-timed
                    if not removed:
                        raise BenchError("the full re-read lineage had no dirty bitmap to remove")
                got[p] = self.timed_run(p)
            got[IDLE] = self.timed_run(INC)
            m = {**w.info(), "apply_s": apply_s}
            self.check_round(r, m, got)
            label = "warm-up" if r < warmup else f"round {r - warmup + 1}"
            log(f"  {label}: {m['changed_bytes'] / MIB:.1f} MiB in {m['writes']} writes (qemu-io {apply_s:.2f} s); "
                f"incremental {got[INC]['seconds']:.2f} s, full re-read {got[FULLREAD]['seconds']:.2f} s, "
                f"nothing changed {got[IDLE]['seconds']:.2f} s")  # fmt: skip
            if r >= warmup:
                mutations.append(m)
                for k in got_runs:
                    got_runs[k].append(got[k])
        return got_runs, mutations

    @staticmethod
    def check_round(r: int, m: dict[str, Any], got: dict[str, dict[str, Any]]) -> None:
        inc, full, idle = got[INC], got[FULLREAD], got[IDLE]
        if inc["read_tag"] != "changed" or idle["read_tag"] != "changed":
            raise BenchError(f"round {r}: the incremental read {inc['read_tag']!r} / {idle['read_tag']!r}")
        if full["read_tag"] != "full":
            raise BenchError(
                f"round {r}: the run without a bitmap read {full['read_tag']!r}, not a full read"
            )
        if inc["plan_bytes"] < m["changed_bytes"]:
            raise BenchError(f"round {r}: the bitmap marks {inc['plan_bytes']} bytes, the writes changed "
                             f"{m['changed_bytes']} (did qemu-io write?)")  # fmt: skip
        if idle["bytes_read"] != 0:
            raise BenchError(f"round {r}: the run with nothing changed read {idle['bytes_read']} bytes")

    def transport(self, runs: int) -> dict[str, Any]:
        """Every 1 MiB block holding data, through the frozen NBD export and with os.pread."""
        machine = KvmMachine(str(self.vm.qmp_socket), [DiskRef("vm1-transport", DEVICE)], scratch_dir=self.scratch,
                             vm_id="vm1-transport")  # fmt: skip
        t_open = time.perf_counter()
        snap = machine.open()
        open_s = time.perf_counter() - t_open
        try:
            disk = snap.disks[DEVICE]
            blocks = list(blocks_touched(disk.plan(None).extents, DEFAULT_BLOCK_SIZE,
                                         -(-self.size // DEFAULT_BLOCK_SIZE)))  # fmt: skip
            fd = os.open(self.model, os.O_RDONLY)
            try:
                variants: dict[str, Callable[[], None]] = {
                    "pread-1": lambda: read_all(lambda o, n: os.pread(fd, n, o), blocks, self.size, 1),
                    "nbd-1": lambda: read_all(disk.read, blocks, self.size, 1),
                    "nbd-2": lambda: read_all(disk.read, blocks, self.size, 2),
                }
                for fn in variants.values():
                    fn()
                out: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
                for _ in range(runs):
                    for v, fn in variants.items():
                        t = self.meter.start()
                        fn()
                        out[v].append(self.meter.stop(t))
            finally:
                os.close(fd)
        finally:
            t_close = time.perf_counter()
            snap.close()
            close_s = time.perf_counter() - t_close
        log(f"  transport snapshot: open {open_s:.2f} s, close {close_s:.2f} s")
        read_bytes = sum(min(DEFAULT_BLOCK_SIZE, self.size - i * DEFAULT_BLOCK_SIZE) for i in blocks)
        return {"blocks": len(blocks), "bytes": read_bytes, "runs": out}

    def limit(self, runs: int) -> dict[str, list[float]]:
        cmds = {"cat": ["cat", str(self.model)], "zstd -1 -T2": ["zstd", "-1", "-T2", "-c", str(self.model)]}
        out: dict[str, list[float]] = {k: [] for k in cmds}
        for cmd in cmds.values():
            self.runner.timed(cmd)
        for _ in range(runs):
            for k, cmd in cmds.items():
                out[k].append(self.runner.timed(cmd)["seconds"])
        return out

    def verify(self) -> dict[str, str]:
        want = sha256(self.model)
        out = {}
        for p in PATHS:
            dest = self.work / f"restored-{p}.raw"
            dest.unlink(missing_ok=True)
            restore(self.repos[p], self.repos[p].resolve_point(self.disk_ids[p], "latest"), str(dest))
            got = sha256(dest)
            dest.unlink()
            if got != want:
                raise BenchError(
                    f"{p}: the latest point restores with sha256 {got}, the VM's disk (model) has {want}"
                )
            out[p] = got
        return out


# --------------------------------------------------------------------------- 2. failback


class FailbackBench:
    DISK = "app-d0"

    def __init__(self, work: Path, size_mib: int) -> None:
        self.work = work / "failback"
        self.work.mkdir(parents=True)
        self.size_mib = size_mib
        self.scratch = self.work / "scratch"
        self.origin_pristine = self.work / "origin-pristine.qcow2"
        self.recovered_base = self.work / "recovered-base.qcow2"
        self.repo_base = self.work / "repo-base"
        self.info: dict[str, Any] = {}

    def replicate_image(self, repo: Repository, disk_id: str, image: Path,
                        seed: tuple[str, str] | None = None) -> tuple[PointRecord, dict[str, Any]]:  # fmt: skip
        meter = Meter()
        t = meter.start()
        snap = OfflineMachine([DiskRef(disk_id, str(image))], scratch_dir=self.scratch).open()
        try:
            disk = snap.disks[str(image)]
            point = replicate(repo, disk_id, disk, ReplicationOptions(seed_parent=seed))
            disk.committed(point)
        finally:
            snap.close()
        out = {**meter.stop(t), **point_stats(point)}
        sync()
        return point, out

    def setup(self) -> None:
        raw = self.work / "origin.raw"
        log(f"creating the {self.size_mib} MiB origin image")
        make_image(raw, self.origin_pristine, self.size_mib, seed=3)
        raw.unlink()
        repo = fresh_repo(self.repo_base)
        log("protecting the origin (OfflineMachine, full)")
        self.forward, self.info["forward"] = self.replicate_image(repo, self.DISK, self.origin_pristine)
        if self.forward.change_token is None:
            raise BenchError("the forward point has no bitmap token: failback would need verification")
        log("failover: restoring the point into the recovered qcow2")
        rec_raw = self.work / "recovered.raw"
        t = time.perf_counter()
        restore(repo, self.forward, str(rec_raw))
        run_cmd(
            ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(rec_raw), str(self.recovered_base)]
        )
        self.info["failover_s"] = time.perf_counter() - t
        rec_raw.unlink()
        self.info["size_bytes"] = self.forward.disk_size
        self.info["block_size"] = self.forward.block_size
        self.info["allocated_bytes"] = allocated_bytes(self.origin_pristine)
        sync()

    def fraction(self, fraction: float, index: int, runs: int) -> dict[str, Any]:
        pct = f"{fraction:.0%}"
        recovered = self.work / f"recovered-{index}.qcow2"
        copy_sparse(self.recovered_base, recovered)
        w = Writes(self.work / "writes", self.info["size_bytes"], fraction, seed=200 + index)
        t = time.perf_counter()
        cmd = ["qemu-io", "-f", "qcow2"]
        for c in w.commands():
            cmd += ["-c", c]
        out = run_cmd([*cmd, str(recovered)]).stdout
        if "error" in out.lower() or "failed" in out.lower():
            raise BenchError(f"qemu-io on {recovered}: {out[-2000:]}")
        apply_s = time.perf_counter() - t
        repo_f = self.work / f"repo-{index}"
        copy_tree(self.repo_base, repo_f)
        log(f"  {pct}: {w.changed_bytes / MIB:.1f} MiB in {len(w.extents)} writes; reverse replication")
        reverse, rev = self.replicate_image(open_repo(repo_f), f"{self.DISK}.r1", recovered,
                                            seed=(self.DISK, self.forward.id))  # fmt: skip
        if reverse.parent != self.forward.id:
            raise BenchError(f"the reverse point's parent is {reverse.parent}, not the forward point")
        origin = self.work / "origin-run.qcow2"
        repo_run = self.work / "repo-run"
        got: dict[str, list[dict[str, Any]]] = {v: [] for v in FB_VARIANTS}
        for i in range(runs):
            shift = i % len(FB_VARIANTS)
            for v in FB_VARIANTS[shift:] + FB_VARIANTS[:shift]:
                copy_sparse(self.origin_pristine, origin)
                repo = None
                if v != "copy":
                    copy_tree(repo_f, repo_run)
                    repo = open_repo(repo_run)
                sync()
                meter = Meter()
                t0 = meter.start()
                r: dict[str, Any] = {}
                if repo is None:
                    run_cmd(
                        [
                            "qemu-img",
                            "convert",
                            "-n",
                            "-f",
                            "qcow2",
                            "-O",
                            "qcow2",
                            str(recovered),
                            str(origin),
                        ]
                    )
                else:
                    res = failback_disk(repo, disk_id=self.DISK, reverse=reverse, origin=str(origin),
                                        verify=v == "verified", scratch_dir=self.scratch)  # fmt: skip
                    r.update(written_bytes=res.written_bytes, written_blocks=res.written_blocks,
                             changed_blocks=res.changed_blocks, dirty_blocks=res.dirty_blocks,
                             diverged_blocks=res.diverged_blocks, blocks=res.blocks,
                             point_tag=res.point.tags.get("read", ""))  # fmt: skip
                r.update(meter.stop(t0))
                t_sync = time.perf_counter()
                sync()
                r["sync_s"] = time.perf_counter() - t_sync
                same = subprocess.run(["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", str(origin),
                                       str(recovered)], check=False).returncode == 0  # fmt: skip
                if not same:
                    raise BenchError(f"{pct} {v} run {i + 1}: the origin differs from the recovered image")
                if v != "copy" and r["diverged_blocks"]:
                    raise BenchError(
                        f"{pct} {v}: {r['diverged_blocks']} diverged blocks on an untouched origin"
                    )
                got[v].append(r)
                log(f"    run {i + 1} {v}: {r['seconds']:.2f} s (+ sync {r['sync_s']:.2f} s)")
        rmtree(repo_run)
        rmtree(repo_f)
        origin.unlink(missing_ok=True)
        recovered.unlink()
        return {
            "fraction": fraction,
            "mutation": {**w.info(), "apply_s": apply_s},
            "reverse": rev,
            "runs": got,
        }


# --------------------------------------------------------------------------- report


def med(runs: list[dict[str, Any]], key: str) -> float:
    return median([r[key] for r in runs])


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


RUN_KEYS = ("seconds", "open_s", "plan_s", "replicate_s", "close_s", "bytes_read", "blocks_read", "plan_bytes",
            "bytes_new_stored", "client_cpu_s", "qemu_cpu_s", "child_cpu_s")  # fmt: skip


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    vm, fb = res["vm"], res["failback"]
    muts, rounds = vm["mutations"], vm["rounds"]
    s: dict[str, Any] = {"changed_bytes": median([m["changed_bytes"] for m in muts]),
                         "blocks_touched": median([m["blocks_touched"] for m in muts]),
                         "apply_s": median([m["apply_s"] for m in muts]), "runs": {}}  # fmt: skip
    for p, runs in rounds.items():
        s["runs"][p] = {k: med(runs, k) for k in RUN_KEYS}
    for p in PATHS:
        s["runs"][p]["changed_mib_s"] = median(
            [m["changed_bytes"] / MIB / r["seconds"] for m, r in zip(muts, rounds[p], strict=True)]
        )
    inc, full, idle = s["runs"][INC], s["runs"][FULLREAD], s["runs"][IDLE]
    inc["changed_mib_s_net"] = median(
        [m["changed_bytes"] / MIB / max(r["seconds"] - z["seconds"], 1e-9)
         for m, r, z in zip(muts, rounds[INC], rounds[IDLE], strict=True)]
    )  # fmt: skip
    size = vm["image"]["size_bytes"]
    first = vm["first_full"]
    s["first_full_s"] = median([first[p]["seconds"] for p in PATHS])
    s["first_full_mib_s"] = mib_s(size, s["first_full_s"])
    tr = vm["transport"]
    s["transport"] = {}
    for v, runs in tr["runs"].items():
        sec = med(runs, "seconds")
        s["transport"][v] = {"seconds": sec, "mib_s": tr["bytes"] / MIB / sec,
                             "ms_per_block": sec / tr["blocks"] * 1000, "client_cpu_s": med(runs, "client_cpu_s"),
                             "qemu_cpu_s": med(runs, "qemu_cpu_s")}  # fmt: skip
    s["limit_mib_s"] = {k: mib_s(size, median(v)) for k, v in vm["limit"].items()}
    s["ratios"] = {
        "incremental wall / full re-read wall (same changes)": inc["seconds"] / full["seconds"],
        "incremental replicate() / full re-read replicate()": inc["replicate_s"] / full["replicate_s"],
        "bytes read: full re-read / incremental": full["bytes_read"] / inc["bytes_read"],
        "bytes read by the incremental / changed bytes": inc["bytes_read"] / s["changed_bytes"],
        "bytes read by the incremental / bytes in the 1 MiB blocks the writes touch": inc["bytes_read"]
        / (s["blocks_touched"] * DEFAULT_BLOCK_SIZE),
        "fixed per-run overhead / incremental wall": idle["seconds"] / inc["seconds"],
        "incremental wall / first full wall": inc["seconds"] / s["first_full_s"],
        "NBD 1 thread / pread 1 thread (time)": s["transport"]["nbd-1"]["seconds"]
        / s["transport"]["pread-1"]["seconds"],
        "first full MiB/s / zstd -1 -T2 MiB/s": s["first_full_mib_s"] / s["limit_mib_s"]["zstd -1 -T2"],
    }
    s["failback"] = []
    disk = fb["info"]["size_bytes"]
    for f in fb["fractions"]:
        runs = f["runs"]
        x: dict[str, Any] = {"fraction": f["fraction"], "changed_bytes": f["mutation"]["changed_bytes"],
                             "blocks_touched": f["mutation"]["blocks_touched"]}  # fmt: skip
        for v in FB_VARIANTS:
            x[v] = {k: med(runs[v], k) for k in ("seconds", "sync_s", "client_cpu_s", "child_cpu_s")}
            x[v]["durable_s"] = median([r["seconds"] + r["sync_s"] for r in runs[v]])
            if v != "copy":
                x[v].update({k: med(runs[v], k) for k in ("written_bytes", "written_blocks", "changed_blocks",
                                                           "dirty_blocks", "diverged_blocks")})  # fmt: skip
        fbk, ver, cp = x["failback"], x["verified"], x["copy"]
        x["ratios"] = {
            "written bytes / disk size": fbk["written_bytes"] / disk,
            "written bytes / changed bytes": fbk["written_bytes"] / x["changed_bytes"],
            "failback time / full copy time": fbk["seconds"] / cp["seconds"],
            "failback / full copy, each + sync": fbk["durable_s"] / cp["durable_s"],
            "verified failback time / full copy time": ver["seconds"] / cp["seconds"],
            "verified / unverified failback time": ver["seconds"] / fbk["seconds"],
        }
        s["failback"].append(x)
    return s


def render(res: dict[str, Any]) -> str:
    s, m, prm, vm, fb = res["summary"], res["machine"], res["params"], res["vm"], res["failback"]
    size, rep = vm["image"]["size_bytes"], prm["runs"]
    r, tr, muts = s["runs"], s["transport"], vm["mutations"]
    cmd = f"python -m bench.kvm_bench --size-mib {prm['size_mib']} --runs {rep} --json {prm['json']}"
    if prm["warmup"] != 1 or prm["fraction"] != 0.05:
        cmd += f" --warmup {prm['warmup']} --fraction {prm['fraction']}"
    if prm["accel"] != "tcg":
        cmd += f" --accel {prm['accel']}"
    info = fb["info"]
    out = [
        START,
        "## KVM source: incrementals of a running VM, and failback",
        "",
        f"Generated by `{cmd}` on {m['date']} at commit `{m['commit']}` (total {prm['total_minutes']:.1f} min); "
        f"rerun with the same command (it rewrites only this section). Raw measurements: `{prm['json']}`. As "
        "everywhere in this document: the machine is small and shared, read the **medians and ratios**, not "
        "single times.",
        "",
        f"Machine: {m['nproc']} cores ({m['CPU']}), {m['RAM']} RAM, kernel {m['kernel']}, work directory on "
        f"{m['workdir filesystem']}; Python {m['python']}, {m['qemu']}, libnbd "
        f"{m['libnbd']}, {m['zstd']}. Load average (1/5/15 min) at the start {m['load_start']}, at the end "
        f"{m['load_end']}. QEMU (the VM, its NBD server, the fleecing job) runs on the same 2 cores as the "
        "replication.",
        "",
        "### Method",
        "",
        f"- Data disk: `tests/support/make_disk.py create --size {prm['size_mib']}M --seed 1` → `qemu-img convert "
        f"-O qcow2`: {size / MIB:.0f} MiB logical, {vm['image']['allocated_bytes'] / MIB:.0f} MiB allocated, the "
        f"only disk (virtio-blk) of `qemu-system-x86_64 -accel {prm['accel']} -m 64` with a QMP socket and no guest OS. The "
        "raw image is the byte model. Every repository is encrypted, on a FolderStore with fsync on, default "
        "`ReplicationOptions` (1 MiB blocks, 2 workers, 4 upload streams); images, scratch and repositories live "
        f"in `{prm['workdir']}` on one file system; nothing is dropped from the page cache.",
        "- A run = `KvmMachine.open()` (QMP: bitmap rotation + fleecing `blockdev-backup sync=none` in one "
        "transaction, NBD export of the frozen view) → `replicate()` (plan = the frozen bitmap's dirty ranges "
        "through NBD block status, reads over libnbd) → `committed()` → `close()` (export, job and scratch node "
        "torn down, superseded generations dropped). *Wall* = all of it.",
        f"- Two lineages of the same disk, each in its own repository: `vm1` (incremental) and `vm1-fullread`, whose "
        "dirty bitmap is removed through QMP before each of its runs (un-timed), so the source falls back to a "
        "full read of the allocated data, deduplicated against the parent: the same changes without "
        f"changed-block tracking. Both start with one full replication ({s['first_full_s']:.2f} s median, "
        f"{s['first_full_mib_s']:.0f} MiB/s of logical disk).",
        f"- {prm['warmup']} un-timed warm-up round(s), then {rep} timed rounds. Each round writes "
        f"{prm['fraction']:.0%} of the disk (median {mib(s['changed_bytes'])} changed in "
        f"{median([x['writes'] for x in muts]):.0f} scattered writes of 64 KiB-1 MiB at 4 KiB-aligned offsets, "
        f"make_disk's text/structured/random data, touching {s['blocks_touched']:.0f} of the 1 MiB blocks) into "
        'the running drive through QMP `human-monitor-command` `qemu-io disk0 "write -s FILE OFF LEN"` (not '
        f"timed: median {s['apply_s']:.2f} s for the round's writes), mirrors them into the model, then runs the "
        "`vm1` incremental and the `vm1-fullread` run (order alternating per round), then one more `vm1` "
        "incremental with nothing changed: the fixed cost of a run. `sync` after every run, outside the timings.",
        f"- Transport alone: each of the {vm['transport']['blocks']} 1 MiB blocks holding data read once through "
        "a frozen NBD export (1 and 2 threads) and with `os.pread` of the raw model; one warm-up, "
        f"{rep} timed passes. Machine limit: `cat` and `zstd -1 -T2 -c` of the raw model (bench/run.py's Runner): "
        f"{s['limit_mib_s']['cat']:.0f} and {s['limit_mib_s']['zstd -1 -T2']:.0f} MiB/s.",
        "- CPU: *client* = this Python process (`time.process_time`, all threads); *QEMU* = the VM's process "
        "(utime + stime from /proc: guest, NBD server, copy-before-write); *children* = reaped child processes "
        "(`qemu-storage-daemon`, `qemu-img`).",
        "- Checked: every `vm1` run read `changed` (the bitmap marked at least the changed bytes; the run with "
        "nothing changed read 0 bytes), every `vm1-fullread` run `full`; at the end both latest points restore "
        f"to the model's sha256 ({'verified' if res['vm']['verified'] else 'NOT verified'}).",
        "",
        f"### Incremental of the running VM ({prm['fraction']:.0%} changed, median of {rep} rounds)",
        "",
        table(
            [
                "Run",
                "Wall s (min-max)",
                "open s",
                "plan s",
                "replicate s",
                "close s",
                "Changed MiB/s (wall)",
                "Bytes read",
                "Stored (new)",
                "Client CPU s",
                "QEMU CPU s",
            ],
            [
                [
                    LABELS[p],
                    f"{r[p]['seconds']:.2f} ({spread([x['seconds'] for x in vm['rounds'][p]])})",
                    f"{r[p]['open_s']:.2f}",
                    f"{r[p]['plan_s']:.3f}",
                    f"{r[p]['replicate_s']:.2f}",
                    f"{r[p]['close_s']:.2f}",
                    f"{r[p]['changed_mib_s']:.0f}" if p != IDLE else "",
                    mib(r[p]["bytes_read"]),
                    mib(r[p]["bytes_new_stored"]),
                    f"{r[p]['client_cpu_s']:.2f}",
                    f"{r[p]['qemu_cpu_s']:.2f}",
                ]
                for p in (INC, FULLREAD, IDLE)
            ],
        ),
        "",
        "Per round:",
        "",
        table(
            [
                "Round",
                "Changed",
                "Writes",
                "1 MiB blocks touched",
                "Bitmap-planned",
                "Incremental read",
                "Incremental wall s",
                "Full re-read wall s",
                "Nothing-changed wall s",
                "Incremental / full re-read",
            ],
            [
                [
                    str(i + 1),
                    mib(mu["changed_bytes"]),
                    str(mu["writes"]),
                    str(mu["blocks_touched"]),
                    mib(a["plan_bytes"]),
                    mib(a["bytes_read"]),
                    f"{a['seconds']:.2f}",
                    f"{b['seconds']:.2f}",
                    f"{z['seconds']:.2f}",
                    f"{a['seconds'] / b['seconds']:.2f}x",
                ]
                for i, (mu, a, b, z) in enumerate(
                    zip(muts, vm["rounds"][INC], vm["rounds"][FULLREAD], vm["rounds"][IDLE], strict=True)
                )
            ],
        ),
        "",
        f"### The transport alone ({vm['transport']['bytes'] / MIB:.0f} MiB in 1 MiB reads, median of {rep})",
        "",
        table(
            ["Read path", "Seconds", "MiB/s", "ms per 1 MiB read", "Client CPU s", "QEMU CPU s"],
            [
                [
                    TRANSPORTS[v],
                    f"{x['seconds']:.2f}",
                    f"{x['mib_s']:.0f}",
                    f"{x['ms_per_block']:.2f}",
                    f"{x['client_cpu_s']:.2f}",
                    f"{x['qemu_cpu_s']:.2f}",
                ]
                for v, x in tr.items()
            ]
            + [
                [
                    f"`{k}` of the raw model (machine limit)",
                    f"{median(vm['limit'][k]):.2f}",
                    f"{s['limit_mib_s'][k]:.0f}",
                    "",
                    "",
                    "",
                ]
                for k in vm["limit"]
            ],
        ),
        "",
        "### Failback",
        "",
        f"- Origin: `make_disk.py create --size {prm['size_mib']}M --seed 3` as qcow2 ({info['size_bytes'] / MIB:.0f} "
        f"MiB logical, {info['allocated_bytes'] / MIB:.0f} MiB allocated), protected through `OfflineMachine` "
        f"(`qemu-storage-daemon`, full read: {info['forward']['seconds']:.2f} s; the forward point's token names the "
        "origin's persistent bitmap). Failover: the point restored to raw and `qemu-img convert -O qcow2` into the "
        f"recovered image ({info['failover_s']:.2f} s). Per fraction: scattered writes into the recovered image "
        '(`qemu-io -f qcow2 -c "write -s ..."`, same generator as above), reverse lineage `app-d0.r1` replicated '
        'through `OfflineMachine` with `seed_parent=("app-d0", forward)` (it stores only the changes), then '
        f"{rep} runs of each way back, rotating the order, each on a fresh copy of the origin (and of the "
        "repository: a failback commits a forward point), `sync` before, a timed `sync` after, and "
        "`qemu-img compare` origin = recovered after every one. The origin got no writes after its last point, so "
        "its bitmap adds nothing (dirty blocks 0).",
        "- `failback_disk(verify=False)`: storage daemon on the origin, writable NBD export, plan = block ids that "
        "differ between the forward and the reverse point, plus the blocks the origin's dirty bitmap marks, then only those blocks "
        "reconstructed from the repository (decrypt, decompress, verify) and written (4 threads), flush, bitmap "
        "restarted, forward point committed. `verify=True` also reads and hashes every other origin block. The "
        "full copy `qemu-img convert -n -f qcow2 -O qcow2 RECOVERED ORIGIN` rewrites the whole disk from the "
        "recovered image (which a real failback would have to reach over the network).",
        "",
        table(
            [
                "Changed on the recovered VM",
                "Way back",
                "Wall s (min-max)",
                "+ sync s",
                "Written",
                "Written / disk",
                "Blocks written",
                "Client CPU s",
                "Children CPU s",
            ],
            [
                [
                    f"{x['fraction']:.0%}: {mib(x['changed_bytes'])} ({x['blocks_touched']} blocks touched)",
                    FB_LABELS[v],
                    f"{x[v]['seconds']:.2f} ({spread([y['seconds'] for y in f['runs'][v]])})",
                    f"{x[v]['sync_s']:.2f}",
                    mib(x[v]["written_bytes"]) if v != "copy" else f"{mib(info['size_bytes'])} (whole disk)",
                    f"{x[v]['written_bytes'] / info['size_bytes']:.1%}" if v != "copy" else "100%",
                    f"{x[v]['written_blocks']:.0f} of {info['size_bytes'] // info['block_size']}"
                    if v != "copy"
                    else "",
                    f"{x[v]['client_cpu_s']:.2f}",
                    f"{x[v]['child_cpu_s']:.2f}",
                ]
                for x, f in zip(s["failback"], fb["fractions"], strict=True)
                for v in FB_VARIANTS
            ],
        ),
        "",
        "Reverse replication (the recovered image, full read deduplicated against the forward point): "
        + "; ".join(
            f"{f['fraction']:.0%}: {f['reverse']['seconds']:.2f} s, {mib(f['reverse']['bytes_read'])} read, "
            f"{mib(f['reverse']['bytes_new_raw'])} new"
            for f in fb["fractions"]
        )
        + ".",
        "",
        "### Ratios",
        "",
        table(
            ["Ratio (< 1: the first is faster / smaller)", "Value"],
            [[k, f"{v:.2f}"] for k, v in s["ratios"].items()]
            + [
                [f"failback {x['fraction']:.0%}: {k}", f"{v:.3f}" if "bytes" in k else f"{v:.2f}"]
                for x in s["failback"]
                for k, v in x["ratios"].items()
            ],
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
    s, info = res["summary"], res["failback"]["info"]
    r, tr, ra = s["runs"], s["transport"], s["ratios"]
    inc, full, idle = r[INC], r[FULLREAD], r[IDLE]
    n1, p1, n2 = tr["nbd-1"], tr["pread-1"], tr["nbd-2"]
    gain = n2["mib_s"] / n1["mib_s"]
    two = (f"are slower ({n2['mib_s']:.0f} MiB/s, {gain:.2f}x one thread's rate: the export has no iothread, "
           "QEMU serves it from its main loop, and the two clients share the 2 cores with it)" if gain < 0.9
           else f"do not help ({n2['mib_s']:.0f} MiB/s)" if gain <= 1.1
           else f"help ({n2['mib_s']:.0f} MiB/s, {gain:.2f}x one thread)")  # fmt: skip
    out = [
        f"What the bitmap buys: the same {mib(s['changed_bytes'])} of changes cost {inc['seconds']:.2f} s with the "
        f"dirty bitmap and {full['seconds']:.2f} s as a full re-read ({ra['incremental wall / full re-read wall (same changes)']:.2f}x), "
        f"reading {mib(inc['bytes_read'])} instead of {mib(full['bytes_read'])}; both store the same new data "
        f"({mib(inc['bytes_new_stored'])} and {mib(full['bytes_new_stored'])}). The full re-read's time grows with "
        "the disk's allocated data, the incremental's with the changes.",
        f"Bytes read vs changed: the bitmap (64 KiB granularity) planned {mib(inc['plan_bytes'])} for "
        f"{mib(s['changed_bytes'])} changed, and the pipeline reads whole 1 MiB blocks: {mib(inc['bytes_read'])}, "
        f"{ra['bytes read by the incremental / changed bytes']:.2f}x the changed bytes, exactly the "
        f"{s['blocks_touched']:.0f} blocks the writes touch "
        f"({ra['bytes read by the incremental / bytes in the 1 MiB blocks the writes touch']:.2f}x of them). "
        "Scattered writes of 64 KiB-1 MiB straddle block boundaries; that amplification is the block size's, "
        "not the tracking's.",
        f"Fixed cost of a run: {idle['seconds']:.2f} s with nothing changed (open {idle['open_s']:.2f} s: QMP, a "
        f"scratch qcow2 made by `qemu-img create`, the freeze transaction, the NBD export; replicate "
        f"{idle['replicate_s']:.2f} s: the plan's block status, the point's commit with fsync; close "
        f"{idle['close_s']:.2f} s), {ra['fixed per-run overhead / incremental wall']:.0%} of the {mib(s['changed_bytes'])} "
        f"incremental. Net of it the changed data moves at {inc['changed_mib_s_net']:.0f} MiB/s "
        f"({inc['changed_mib_s']:.0f} MiB/s over the whole wall).",
        f"The transport: one 1 MiB NBD read from the frozen view costs {n1['ms_per_block']:.2f} ms against "
        f"{p1['ms_per_block']:.2f} ms for a `pread` of the raw model ({ra['NBD 1 thread / pread 1 thread (time)']:.1f}x; "
        f"{n1['mib_s']:.0f} vs {p1['mib_s']:.0f} MiB/s); QEMU spent {n1['qemu_cpu_s']:.2f} CPU s serving one pass. "
        f"Two threads {two}. In the pipeline the same 2 cores also hash, compress and "
        f"encrypt: the first full ran at {s['first_full_mib_s']:.0f} MiB/s of logical disk, "
        f"{ra['first full MiB/s / zstd -1 -T2 MiB/s']:.2f}x of `zstd -1 -T2` alone on the raw image "
        f"({s['limit_mib_s']['zstd -1 -T2']:.0f} MiB/s).",
        f"Accelerator: `-accel {res['params']['accel']}` (/dev/kvm on this machine: {res['machine']['kvm device']}); "
        f"with no guest OS the guest idles, and the VM's QEMU CPU during an incremental ({inc['qemu_cpu_s']:.2f} s) "
        "is the NBD server and the block layer, which do not depend on the accelerator. What this does not measure: "
        "a guest writing while "
        "the run reads (copy-before-write into the scratch image), a busy guest competing for the cores, cold "
        "(non page-cache) reads, a network between node and repository.",
    ]
    for x, f in zip(s["failback"], res["failback"]["fractions"], strict=True):
        fr, ver, cp = x["failback"], x["verified"], x["copy"]
        vs = [y["seconds"] for y in f["runs"]["verified"]]
        noisy = (f"; its runs spread {spread(vs)} s, the slow ones with more `qemu-storage-daemon` CPU: read "
                 "the median") if max(vs) > 1.5 * min(vs) else ""  # fmt: skip
        out.append(
            f"Failback after {x['fraction']:.0%} changed ({mib(x['changed_bytes'])}): {fr['written_blocks']:.0f} "
            f"blocks written ({mib(fr['written_bytes'])}, {x['ratios']['written bytes / disk size']:.1%} of the "
            f"disk: the blocks whose ids differ, {x['blocks_touched']} touched by the writes) in {fr['seconds']:.2f} s, "
            f"against {cp['seconds']:.2f} s for the full copy ({x['ratios']['failback time / full copy time']:.2f}x; "
            f"with the `sync` after each {x['ratios']['failback / full copy, each + sync']:.2f}x). Verified: "
            f"{ver['seconds']:.2f} s ({x['ratios']['verified / unverified failback time']:.1f}x the unverified one, "
            f"{x['ratios']['verified failback time / full copy time']:.2f}x the copy): it reads and hashes every "
            f"other block of the origin over NBD ({mib(info['size_bytes'] - fr['written_bytes'])}, one thread), "
            f"writing the same blocks{noisy}."
        )
    out.append(failback_scaling(s["failback"], info["size_bytes"] // info["block_size"]))
    return out


def failback_scaling(fbs: list[dict[str, Any]], n_blocks: int) -> str:
    """How the failback's time grows with the blocks written, against the full copy's (constant)."""
    copy_durable = median([x["copy"]["durable_s"] for x in fbs])
    text = (
        "The full copy here reads and writes a local qcow2 through the page cache (the `sync` after it flushes "
        f"the whole disk's data: median {median([x['copy']['sync_s'] for x in fbs]):.2f} s; `failback_disk` has "
        "flushed through NBD before it returns, so its `sync` finds nothing): the best case for the copy, a "
        f"median {copy_durable:.2f} s with its `sync` whatever changed. "
    )
    if len(fbs) >= 2:
        lo, hi = fbs[0]["failback"], fbs[-1]["failback"]
        per_block = (hi["durable_s"] - lo["durable_s"]) / max(hi["written_blocks"] - lo["written_blocks"], 1)
        fixed = lo["durable_s"] - per_block * lo["written_blocks"]
        text += (
            f"The failback grows with what it writes: {per_block * 1000:.2f} ms per 1 MiB block written on top of "
            f"about {fixed:.2f} s of fixed cost (storage daemon, QMP, NBD export, the two block maps, the commit), "
            f"a two-point estimate from the {fbs[0]['fraction']:.0%} and {fbs[-1]['fraction']:.0%} runs"
        )
        if per_block > 0 and copy_durable > fixed:
            even = (copy_durable - fixed) / per_block
            text += (
                f"; on this machine it would match the local copy at about {even:.0f} blocks written "
                f"({even / n_blocks:.0%} of the disk)"
            )
        text += ". "
    return text + (
        "That local time is not what failback is for: a real full copy moves the whole disk between sites, and "
        "the figure that carries over is the bytes written (the *Written / disk* column), not this machine's "
        "page-cache copy speed."
    )


# --------------------------------------------------------------------------- main


def machine_info(work: Path) -> dict[str, str]:
    model, ram = cpu_and_ram()
    libnbd = "unknown"
    try:
        import nbd  # Debian python3-libnbd

        libnbd = str(nbd.NBD().get_version())
    except Exception:  # a version string only
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "nproc": first_line(["nproc"]),
        "CPU": model,
        "RAM": ram,
        "kernel": platform.release(),
        "workdir filesystem": first_line(["stat", "-f", "-c", "%T", str(work)]),
        "python": platform.python_version(),
        "qemu": " ".join(first_line(["qemu-system-x86_64", "--version"]).split()[:4]),
        "libnbd": libnbd,
        "zstd": "zstd "
        + next((w.rstrip(",") for w in first_line(["zstd", "--version"]).split() if w.startswith("v")), "?"),
        "kvm device": "accessible"
        if os.access("/dev/kvm", os.R_OK | os.W_OK)
        else ("present, not accessible to this user" if os.path.exists("/dev/kvm") else "absent"),
        "load_start": loadavg(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=None, help="data disk / origin size in MiB (default 1024)")
    p.add_argument("--runs", type=int, default=None, help="timed rounds / failback runs; medians (default 3)")
    p.add_argument("--warmup", type=int, default=None, help="un-timed incremental rounds first (default 1)")
    p.add_argument(
        "--fraction", type=float, default=0.05, help="share of the disk each incremental round writes"
    )
    p.add_argument("--smoke", action="store_true",
                   help="quick check: 64 MiB, 1 run, no warm-up; writes no doc unless --out is given")  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=None, help=f"the Markdown document (default {DOC.relative_to(ROOT)})"
    )
    p.add_argument(
        "--json", type=Path, default=None, help=f"raw measurements (default {RESULTS_JSON.relative_to(ROOT)})"
    )
    p.add_argument("--workdir", type=Path, default=ROOT / "bench" / "work" / "kvm")
    p.add_argument(
        "--accel", choices=("tcg", "kvm"), default="tcg", help="the VM's accelerator (default tcg)"
    )
    p.add_argument("--render-only", action="store_true", help="re-render --out from --json; run nothing")
    a = p.parse_args()
    size_mib = a.size_mib or (64 if a.smoke else 1024)
    runs = a.runs or (1 if a.smoke else 3)
    warmup = a.warmup if a.warmup is not None else (0 if a.smoke else 1)
    work = a.workdir.resolve()
    json_path = (a.json or (work.parent / "kvm_smoke_results.json" if a.smoke else RESULTS_JSON)).resolve()
    out_doc = a.out if a.out is not None else (None if a.smoke else DOC)
    if a.render_only:
        replace_section(out_doc or DOC, render(json.loads(json_path.read_text())), START, END)
        return
    if runs < 1 or warmup < 0 or size_mib < 16 or not 0 < a.fraction < 0.5:
        raise BenchError("need --runs ≥ 1, --warmup ≥ 0, --size-mib ≥ 16 and 0 < --fraction < 0.5")
    rmtree(work)
    work.mkdir(parents=True)
    machine = machine_info(work)

    kvm = KvmBench(work, size_mib, a.fraction, a.accel)
    try:
        kvm.start()
        log("first full replications (both lineages)")
        first = kvm.first_fulls()
        log("incremental rounds")
        rounds, mutations = kvm.rounds(warmup, runs)
        log("transport alone")
        transport = kvm.transport(runs)
    finally:
        kvm.stop()
    log("machine limit (cat, zstd -1 -T2)")
    limit = kvm.limit(runs)
    log("verifying the latest points")
    verified = kvm.verify()
    rmtree(kvm.work)

    log("failback")
    fb = FailbackBench(work, size_mib)
    fb.setup()
    fractions = [fb.fraction(f, i, runs) for i, f in enumerate(FAILBACK_FRACTIONS)]
    rmtree(fb.work)

    machine["load_end"] = loadavg()
    res: dict[str, Any] = {
        "machine": machine,
        "params": {
            "size_mib": size_mib,
            "runs": runs,
            "warmup": warmup,
            "fraction": a.fraction,
            "accel": a.accel,
            "failback_fractions": list(FAILBACK_FRACTIONS),
            "workdir": os.path.relpath(work, ROOT),
            "json": os.path.relpath(json_path, ROOT),
            "total_minutes": (time.perf_counter() - T_START) / 60,
        },
        "vm": {
            "image": {"size_bytes": kvm.size, "allocated_bytes": kvm.allocated},
            "first_full": first,
            "rounds": rounds,
            "mutations": mutations,
            "transport": transport,
            "limit": limit,
            "verified": verified,
        },
        "failback": {"info": fb.info, "fractions": fractions},
    }
    res["summary"] = summarize(res)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(res, indent=2) + "\n")
    section = render(res)
    if out_doc is not None:
        replace_section(out_doc, section, START, END)
        log(f"wrote {out_doc} and {json_path}")
    else:
        print(section)
        log(f"wrote {json_path} (no document: --smoke without --out)")
    for k, v in res["summary"]["ratios"].items():
        print(f"  {k}: {v:.2f}")
    for x in res["summary"]["failback"]:
        for k, v in x["ratios"].items():
            print(f"  failback {x['fraction']:.0%} {k}: {v:.3f}")


if __name__ == "__main__":
    main()
