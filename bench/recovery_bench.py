#!/usr/bin/env python3
"""Recovery: disk reconstruction throughput per target, and the QEMU demo end to end, in one run.

    python3 bench/recovery_bench.py [--size 1G] [--repeat 3] [--demo-repeat 3]
                                    [--targets null,file,qemu-raw,qemu-qcow2,ebs,azure] [--parts throughput,demo]
                                    [--workdir bench/work/recovery] [--json bench/recovery_results.json]
                                    [--out docs/BENCHMARKS.md]
    python3 bench/recovery_bench.py --render-only     # re-render the doc section from the JSON

1. Reconstruction throughput. A ``tests/support/make_disk.py create`` image (--size, seed 1)
   is replicated (default options: 1 MiB blocks) into an encrypted repository on a
   FolderStore (KDF cost kept out: ``KdfParams(iterations=1, memory_kib=8192, lanes=1)``)
   and, in the same run, backed up with ``restic backup`` (bench/run.py's helpers). Then,
   after one un-timed warm-up each, ``--repeat`` timed runs per path, interleaved:

   - ``null``: ``reconstruct`` onto a writer that discards (the repository side alone:
     read packs, decrypt, decompress, verify);
   - ``file``: ``reconstruct`` onto ``FileWriter`` (sparse raw file; its fsync included);
   - ``qemu-raw`` / ``qemu-qcow2``: ``QemuTarget.write_disk`` (qcow2 = raw, then
     ``qemu-img convert``, timed separately by wrapping the target's ``convert_image``);
   - ``ebs``: ``AwsTarget.write_disk`` (EBS direct APIs) on moto in-process, a fresh
     ``mock_aws`` per run, every client call counted;
   - ``azure``: ``AzurePageBlobVhdWriter`` onto Azurite (fixed VHD in a page blob);

   side by side with the machine's limits (``cat IMG``, ``dd if=/dev/zero conv=fsync``
   of the same size, ``cp --sparse=always`` + ``sync``) and ``restic restore``. A
   ``sync`` is timed after every run (the write-back the path left behind). Every file
   output is checked (sha256 / ``qemu-img compare``), EBS by the exact set of blocks put,
   Azure by the Put Page byte count. Throughput = logical image size / median seconds.

2. QEMU demo. Two ``tests/support/bootdisk.py`` disks (``stay=True``), replicated; a plan
   with two boot groups (db, then web, delay 0); a test recovery through the real flow
   (``functions.recovery.local_runner.run_recovery``) onto ``qemu_target`` (TCG).
   ``--demo-repeat`` runs; each is timed whole (= the measured RTO), then every resource
   in the report is deleted in reverse order and the benchmark checks that no QEMU is left
   and the target directory is empty (it aborts otherwise).

Writes ``--json`` and the section between ``<!-- recovery:start -->`` and
``<!-- recovery:end -->`` of ``--out`` (appended at the end if missing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import (  # noqa: E402
    MAKE_DISK,
    Restic,
    Runner,
    cpu_and_ram,
    first_line,
    replace_section,
    rmtree,
    sha256,
    sync,
)

from functions.recovery.local_runner import run_recovery  # noqa: E402
from functions.recovery.ports import RecoveryPorts  # noqa: E402
from node_runtime.recovery.reconstruct import reconstruct  # noqa: E402
from node_runtime.recovery.targets.base import InstanceSpec, Resource  # noqa: E402
from node_runtime.recovery.targets.qemu import QemuTarget, qemu_target  # noqa: E402
from node_runtime.recovery.targets.qemu import disks as qemu_disks  # noqa: E402
from node_runtime.recovery.writers import FileWriter  # noqa: E402
from node_runtime.replication.pipeline import ReplicationOptions, replicate  # noqa: E402
from node_runtime.sources.files import FileSource  # noqa: E402
from shared.adapters.local.folder_store import FolderStore  # noqa: E402
from shared.domain.inventory import Site, SiteKind  # noqa: E402
from shared.domain.plans import (  # noqa: E402
    BootGroup,
    NetworkMapping,
    ProtectedDisk,
    ProtectedMachine,
    ProtectionPlan,
)
from shared.domain.points import DiskPoint, RecoveryPoint  # noqa: E402
from shared.domain.recovery import QemuTargetConfig, RecoveryMode, RecoveryReport  # noqa: E402
from shared.repo.keys import KdfParams  # noqa: E402
from shared.repo.points import PointRecord  # noqa: E402
from shared.repo.repository import Repository  # noqa: E402
from shared.services.recovery import build_flow_input  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "recovery_results.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- recovery:start -->", "<!-- recovery:end -->"
PASSWORD = "lifeboat-bench-passphrase"
KDF = KdfParams(iterations=1, memory_kib=8192, lanes=1)
MIB = 1 << 20
EBS_BLOCK = 512 << 10
AZURITE = ROOT / "tools" / "node" / "node_modules" / ".bin" / "azurite-blob"
ALL_TARGETS = ("null", "file", "qemu-raw", "qemu-qcow2", "ebs", "azure")
LABELS = {
    "cat": "`cat IMG` (read limit)",
    "dd": "`dd if=/dev/zero bs=1M conv=fsync` (write limit, every byte)",
    "cp": "`cp --sparse=always IMG` + `sync` (write limit, data only)",
    "restic": "`restic restore` (peer)",
    "null": "lifeboat reconstruct → null writer (repository side only)",
    "file": "lifeboat reconstruct → FileWriter (raw, fsync)",
    "qemu-raw": "QemuTarget.write_disk raw",
    "qemu-qcow2": "QemuTarget.write_disk qcow2",
    "ebs": "AwsTarget.write_disk, EBS direct on moto",
    "azure": "AzurePageBlobVhdWriter on Azurite",
}
DEMO_MACHINES = (("db", "10.0.0.10"), ("web", "10.0.0.20"))
T_START = time.perf_counter()


class BenchError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"recovery bench: {message}")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def mib_s(size: int, seconds: float) -> float:
    return size / MIB / seconds


def timed_sync() -> float:
    t = time.perf_counter()
    sync()
    return time.perf_counter() - t


# --------------------------------------------------------------------------- helpers


class NullWriter:
    """A BlockWriter that discards everything: reconstruct's own cost (read, decrypt, verify)."""

    def write(self, offset: int, data: bytes | memoryview) -> None:
        pass

    def skip(self, offset: int, length: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        pass


class CountingClient:
    """Wraps a boto3 client; counts every API call by method name (thread-safe)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()
        self.put_indexes: list[int] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr) or name.startswith(("_", "get_waiter", "get_paginator", "can_paginate")):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] += 1
                if name == "put_snapshot_block":
                    self.put_indexes.append(int(kwargs["BlockIndex"]))
            return attr(*args, **kwargs)

        return call


@contextlib.contextmanager
def patched(module: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def nonzero_blocks(img: Path, unit: int) -> set[int]:
    """Indexes of the ``unit``-sized pieces of ``img`` that are not all zero."""
    zeros = bytes(unit)
    out = set()
    with open(img, "rb") as f:
        i = 0
        while chunk := f.read(unit):
            if chunk != zeros[: len(chunk)]:
                out.add(i)
            i += 1
    return out


def fincore_pct(path: Path) -> float | None:
    """Share of ``path``'s pages (all files under a directory) in the page cache, via fincore."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    if not files or shutil.which("fincore") is None:
        return None
    proc = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES,SIZE", *map(str, files)],
        capture_output=True,
        text=True,
    )
    res = size = 0
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            res += int(parts[0])
            size += int(parts[1])
    return 100.0 * res / size if size else None


def qemu_processes_under(path: Path) -> list[int]:
    """Pids of live processes whose command line mentions ``path`` (a leftover QEMU)."""
    needle = os.fsencode(str(path))
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmdline and state not in (b"Z", b"X"):
            pids.append(int(proc.name))
    return pids


# --------------------------------------------------------------------------- part 1: throughput


class Throughput:
    """The source image, its lifeboat and restic repositories, and one callable per measured path."""

    def __init__(self, work: Path, size: str, targets: list[str]) -> None:
        self.work = work
        self.targets = targets
        self.runner = Runner(work)
        self.img = work / "vm1.img"
        self.out = work / "out"
        self.out.mkdir(parents=True, exist_ok=True)
        log(f"creating the image ({size})")
        subprocess.run(
            [sys.executable, str(MAKE_DISK), "create", str(self.img), "--size", size, "--seed", "1"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.size = self.img.stat().st_size
        self.allocated = self.img.stat().st_blocks * 512
        self.want_sha = sha256(self.img)
        self.info: dict[str, Any] = {
            "size_bytes": self.size,
            "allocated_bytes": self.allocated,
            "sha256": self.want_sha,
        }

        log("replicating into a lifeboat repository")
        store = FolderStore(work / "lifeboat-repo")
        self.repo = Repository.init(store, PASSWORD, kdf=KDF)
        t = time.perf_counter()
        with FileSource(str(self.img)) as src:
            self.point: PointRecord = replicate(self.repo, "vm1", src, ReplicationOptions())
        self.info["lifeboat_replicate_seconds"] = time.perf_counter() - t
        self.info["block_size"] = self.point.block_size
        log("backing up with restic")
        self.restic = Restic(self.runner)
        self.restic_repo = self.restic.fresh_repo(work, "repo")
        self.info["restic_backup_seconds"] = self.restic.backup(self.restic_repo, self.img)["seconds"]
        sync()
        self.info["lifeboat_repo_bytes"] = sum(
            p.stat().st_size for p in (work / "lifeboat-repo").rglob("*") if p.is_file()
        )
        self.info["restic_repo_bytes"] = sum(
            p.stat().st_size for p in self.restic_repo.rglob("*") if p.is_file()
        )
        self.expected_ebs = nonzero_blocks(self.img, EBS_BLOCK)
        self.info["ebs_blocks_total"] = -(-self.size // EBS_BLOCK)
        self.info["ebs_blocks_nonzero"] = len(self.expected_ebs)
        self.azurite: Any = None
        self.container: Any = None

    # -- machine limits and the peer --------------------------------------------------------
    def run_cat(self, i: int) -> dict:
        return {"seconds": self.runner.timed(["cat", str(self.img)])["seconds"], "sync_seconds": 0.0}

    def run_dd(self, i: int) -> dict:
        dst = self.out / "dd.out"
        count = -(-self.size // MIB)
        m = self.runner.timed(["dd", "if=/dev/zero", f"of={dst}", "bs=1M", f"count={count}", "conv=fsync"])
        s = timed_sync()
        dst.unlink()
        return {"seconds": m["seconds"], "sync_seconds": s}

    def run_cp(self, i: int) -> dict:
        dst = self.out / "cp.img"
        m = self.runner.timed(["cp", "--sparse=always", str(self.img), str(dst)])
        s = timed_sync()
        dst.unlink()
        return {"seconds": m["seconds"], "sync_seconds": s}

    def run_restic(self, i: int) -> dict:
        dest = self.out / "restic"
        measured, restored = self.restic.restore(self.restic_repo, self.img, dest)
        if sha256(restored) != self.want_sha:
            raise BenchError(f"restic restored {restored} with a different sha256")
        rmtree(dest)
        return {"seconds": measured["seconds"], "sync_seconds": measured["sync_seconds"]}

    # -- lifeboat paths ------------------------------------------------------------------------
    def run_null(self, i: int) -> dict:
        t = time.perf_counter()
        stats = reconstruct(self.repo, self.point, NullWriter(), threads=4)
        return {"seconds": time.perf_counter() - t, "sync_seconds": 0.0, "bytes_written": stats.bytes_written}

    def run_file(self, i: int) -> dict:
        dst = self.out / "file.raw"
        t = time.perf_counter()
        stats = reconstruct(self.repo, self.point, FileWriter(str(dst), self.point.disk_size), threads=4)
        seconds = time.perf_counter() - t
        s = timed_sync()
        if sha256(dst) != self.want_sha:
            raise BenchError(f"{dst} differs from the source image")
        allocated = dst.stat().st_blocks * 512
        dst.unlink()
        return {
            "seconds": seconds,
            "sync_seconds": s,
            "bytes_written": stats.bytes_written,
            "allocated_bytes": allocated,
        }

    def _qemu(self, fmt: str, i: int) -> dict:
        target = QemuTarget(self.out / f"qemu-{fmt}", image_format=fmt)
        spec = InstanceSpec(machine_id="vm1", name="vm1", run_id=f"bench-{i}")
        converts: list[float] = []
        real_convert = qemu_disks.convert_image

        def timed_convert(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real_convert(*a, **kw)
            finally:
                converts.append(time.perf_counter() - t0)

        with patched(qemu_disks, "convert_image", timed_convert):
            t = time.perf_counter()
            artifact = target.write_disk(self.repo, self.point, spec)
            seconds = time.perf_counter() - t
        s = timed_sync()
        path = Path(artifact.location)
        out: dict[str, Any] = {
            "seconds": seconds,
            "sync_seconds": s,
            "bytes_written": artifact.bytes_written,
            "allocated_bytes": path.stat().st_blocks * 512,
            "file_bytes": path.stat().st_size,
        }
        if fmt == "raw":
            ok = sha256(path) == self.want_sha
        else:
            out["convert_seconds"] = sum(converts)
            ok = (
                subprocess.run(
                    ["qemu-img", "compare", "-q", "-f", "qcow2", "-F", "raw", str(path), str(self.img)]
                ).returncode
                == 0
            )
        for r in reversed(artifact.resources):
            target.delete(r)
        if not ok:
            raise BenchError(f"the {fmt} disk written by the QEMU target differs from the source image")
        if any(target.work_dir.iterdir()):
            raise BenchError(f"{target.work_dir} is not empty after deleting the disk")
        return out

    def run_qemu_raw(self, i: int) -> dict:
        return self._qemu("raw", i)

    def run_qemu_qcow2(self, i: int) -> dict:
        return self._qemu("qcow2", i)

    def run_ebs(self, i: int) -> dict:
        import boto3
        from botocore.config import Config
        from moto import mock_aws

        from node_runtime.recovery.targets.aws import AwsTarget

        env = {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        saved = {k: os.environ.get(k) for k in (*env, "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE")}
        for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE"):
            os.environ.pop(k, None)
        os.environ.update(env)
        try:
            with mock_aws():
                config = Config(retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=18)
                ec2 = CountingClient(boto3.client("ec2", region_name="us-east-1", config=config))
                ebs = CountingClient(boto3.client("ebs", region_name="us-east-1", config=config))
                target = AwsTarget(
                    ec2, ebs
                )  # the defaults aws_target() uses: 8 put threads, 4 restore threads
                spec = InstanceSpec(machine_id="vm1", name="vm1", run_id=f"bench-{i}")
                made: list[Any] = []
                import node_runtime.recovery.targets.aws.disks as aws_disks

                base_writer = aws_disks.EbsSnapshotWriter

                class RecordingWriter(base_writer):  # type: ignore[misc, valid-type]
                    def __init__(self, *a: Any, **kw: Any) -> None:
                        super().__init__(*a, **kw)
                        made.append(self)

                with patched(aws_disks, "EbsSnapshotWriter", RecordingWriter):
                    t = time.perf_counter()
                    artifact = target.write_disk(self.repo, self.point, spec)
                    seconds = time.perf_counter() - t
                (writer,) = made
                calls = dict(ebs.calls) | {f"ec2.{k}": v for k, v in ec2.calls.items()}
                if sorted(ebs.put_indexes) != sorted(self.expected_ebs):
                    raise BenchError(
                        "the EBS snapshot's blocks are not exactly the image's non-zero 512 KiB blocks"
                    )
                for r in reversed(artifact.resources):
                    target.delete(r)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return {
            "seconds": seconds,
            "sync_seconds": 0.0,
            "bytes_written": artifact.bytes_written,
            "requests": calls,
            "put_snapshot_block": ebs.calls["put_snapshot_block"],
            "blocks_written": writer.blocks_written,
            "zero_blocks_skipped": writer.zero_blocks_skipped,
        }

    def run_azure(self, i: int) -> dict:
        from node_runtime.recovery.azure_vhd import AzurePageBlobVhdWriter

        if self.azurite is None:
            os.environ.setdefault("LIFEBOAT_AZURITE", str(AZURITE))
            from tests.servers import start_azurite

            self.azurite = start_azurite(self.work / "azurite")
            self.container = self.azurite.service().get_container_client(self.azurite.container)
        name = f"bench/vm1-{i}-{uuid.uuid4().hex[:8]}.vhd"
        writer = AzurePageBlobVhdWriter(self.container, name, self.point.disk_size, threads=4)
        t = time.perf_counter()
        stats = reconstruct(self.repo, self.point, writer, threads=4)
        seconds = time.perf_counter() - t
        blob = self.container.get_blob_client(name)
        ranges = [(r.start, r.end + 1) for r in blob.list_page_ranges() if not r.cleared]
        ranged = sum(b - a for a, b in ranges)
        blob.delete_blob()
        return {
            "seconds": seconds,
            "sync_seconds": timed_sync(),
            "bytes_written": stats.bytes_written,
            "put_page": writer.pages_written,
            "page_range_bytes": ranged,
        }

    def close(self) -> None:
        if self.azurite is not None:
            self.azurite.server.stop()
            self.azurite = None


def measure_throughput(work: Path, size: str, repeat: int, targets: list[str]) -> dict:
    tp = Throughput(work, size, targets)
    try:
        paths: dict[str, Callable[[int], dict]] = {
            "cat": tp.run_cat,
            "dd": tp.run_dd,
            "cp": tp.run_cp,
            "restic": tp.run_restic,
        }
        methods = {
            "null": tp.run_null,
            "file": tp.run_file,
            "qemu-raw": tp.run_qemu_raw,
            "qemu-qcow2": tp.run_qemu_qcow2,
            "ebs": tp.run_ebs,
            "azure": tp.run_azure,
        }
        paths |= {t: methods[t] for t in targets}
        sync()
        cache = {
            "image": fincore_pct(tp.img),
            "lifeboat repo": fincore_pct(work / "lifeboat-repo"),
            "restic repo": fincore_pct(tp.restic_repo),
        }
        log(
            "page cache before warm-up: "
            + ", ".join(f"{k} {v:.0f}%" for k, v in cache.items() if v is not None)
        )
        runs: dict[str, list[dict]] = {name: [] for name in paths}
        warmup: dict[str, dict] = {}
        for name, fn in paths.items():
            log(f"warm-up {name}")
            warmup[name] = fn(-1)
        for i in range(repeat):
            for name, fn in paths.items():
                r = fn(i)
                runs[name].append(r)
                log(f"run {i + 1}/{repeat} {name}: {r['seconds']:.2f}s (+ sync {r['sync_seconds']:.2f}s)")
        cache_after = {
            "image": fincore_pct(tp.img),
            "lifeboat repo": fincore_pct(work / "lifeboat-repo"),
            "restic repo": fincore_pct(tp.restic_repo),
        }
        return {
            "image": tp.info,
            "page_cache_pct": {"before": cache, "after": cache_after},
            "warmup_seconds": {k: v["seconds"] for k, v in warmup.items()},
            "runs": runs,
        }
    finally:
        tp.close()


# --------------------------------------------------------------------------- part 2: QEMU demo


def _delete_everything(vms: Path, report: RecoveryReport | None) -> list[str]:
    """Delete the report's resources in reverse; then sweep what is left under ``vms``. Returns problems."""
    target = qemu_target(vms)
    problems = []
    if report is not None:
        for m in reversed(report.machines()):
            for r in reversed(m.resources):
                try:
                    target.cleaner.delete(r)
                except Exception as exc:  # keep going: the sweep below is the safety net
                    problems.append(f"delete {r.type} {r.id}: {exc}")
    for vm_dir in sorted(vms.glob("*/*/vm")):  # a QEMU a failed run left behind (stopped via its pid file)
        problems.append(f"left behind: {vm_dir}")
        with contextlib.suppress(Exception):
            target.cleaner.delete(Resource(type="qemu-vm", id=str(vm_dir)))
    for f in sorted(p for p in vms.rglob("*") if p.is_file()):
        problems.append(f"left behind: {f}")
        with contextlib.suppress(Exception):
            target.cleaner.delete(Resource(type="file", id=str(f)))
    return problems


def measure_demo(work: Path, repeat: int) -> dict:
    from tests.support import bootdisk

    demo = work / "demo"
    rmtree(demo)
    demo.mkdir(parents=True)
    vms = demo / "vms"
    log("building two boot disks")
    repo = Repository.init(FolderStore(demo / "repo"), PASSWORD, kdf=KDF)
    when = datetime.now(UTC).replace(microsecond=0)
    points, machines, disks = [], [], {}
    for m, ip in DEMO_MACHINES:
        marker = f"lb-{m}-{uuid.uuid4().hex[:8]}"
        img = bootdisk.build_boot_disk(demo / f"{m}.img", marker=marker, stay=True)
        disks[m] = {"size_bytes": img.stat().st_size, "allocated_bytes": img.stat().st_blocks * 512}
        with FileSource(str(img)) as src:
            p = replicate(repo, f"{m}-disk", src, ReplicationOptions())
        points.append(RecoveryPoint(
            id=f"bench-run-{m}", plan_id="bench-demo", machine_id=m, run_id="bench-run", time=when, site_id="dr",
            disks=[DiskPoint(disk_id=f"{m}-disk", point_id=p.id, disk_size=p.disk_size)],
        ))  # fmt: skip
        machines.append(ProtectedMachine(
            machine_id=m, disks=[ProtectedDisk(disk_id=f"{m}-disk", source=str(img))], networks=["lan"],
            private_ip=ip, boot_marker=marker,
        ))  # fmt: skip
    plan = ProtectionPlan(
        id="bench-demo", name="QEMU demo", source_site_id="prod", target_site_id="dr", machines=machines,
        network_mapping=[NetworkMapping(source_network="lan", target_network="dr-lan", test_network="bubble")],
        boot_groups=[BootGroup(name="db", machines=["db"]), BootGroup(name="web", machines=["web"], delay_seconds=0)],
    )  # fmt: skip
    site = Site(
        id="dr", name="dr", site_kind=SiteKind.LOCAL, repository_url=str(demo / "repo"),
        credentials_ref="env:UNUSED", recovery_target=QemuTargetConfig(work_dir=str(vms)),
    )  # fmt: skip
    ports = RecoveryPorts(target_for=lambda _cfg: qemu_target(vms), open_repository=lambda _u, _r: repo)
    runs = []
    for i in range(repeat):
        flow = build_flow_input(
            plan, site, points, job_id=f"bench-demo-{i + 1}-{uuid.uuid4().hex[:6]}", mode=RecoveryMode.TEST,
            point_time=None, now=datetime.now(UTC),
        )  # fmt: skip
        report: RecoveryReport | None = None
        log(f"demo run {i + 1}/{repeat}")
        try:
            t = time.perf_counter()
            report, _ = run_recovery(flow, ports)
            wall = time.perf_counter() - t
        finally:
            t_clean = time.perf_counter()
            problems = _delete_everything(vms, report)
            cleanup = time.perf_counter() - t_clean
            alive = qemu_processes_under(vms)
            leftovers = [str(p) for p in vms.rglob("*")] if vms.exists() else []
        if alive or leftovers or problems:
            raise BenchError(
                f"demo run {i + 1} left things behind: qemu pids {alive}, paths {leftovers[:10]}, {problems}"
            )
        assert report is not None
        if report.state != "succeeded":
            raise BenchError(f"demo run {i + 1} ended {report.state}: {report.errors}")
        run = {
            "wall_seconds": wall,
            "rto_seconds": report.rto_seconds,
            "cleanup_seconds": cleanup,
            "machines": {
                m.machine_id: {
                    "group": m.group,
                    "status": m.status,
                    "rto_seconds": m.rto_seconds,
                    "stages": {s.stage: s.seconds for s in m.stages},
                    "resources": [r.type for r in m.resources],
                    "evidence": (m.evidence.excerpt.splitlines() or [""])[-1][:120] if m.evidence else None,
                }
                for m in report.machines()
            },
        }
        log(f"  wall {wall:.1f}s, RTO {report.rto_seconds:.1f}s, cleanup {cleanup:.1f}s; nothing left")
        runs.append(run)
    rmtree(demo)  # the boot disks and their repository; the target directory is already empty
    return {"disks": disks, "runs": runs}


# --------------------------------------------------------------------------- machine


def machine_info(work: Path) -> dict[str, str]:
    model, ram = cpu_and_ram()
    from importlib.metadata import version

    df = subprocess.run(
        ["df", "--output=source,fstype,size", "-h", str(work)], capture_output=True, text=True
    ).stdout.split("\n")[1:2]
    source = df[0].split() if df and df[0].strip() else ["?", "?", "?"]
    dev = Path(source[0]).name
    rota = Path(f"/sys/block/{dev}/queue/rotational")
    kind = f"virtual disk, sysfs rotational={rota.read_text().strip()}" if rota.exists() else "?"
    azurite = "absent"
    with contextlib.suppress(OSError, ValueError):
        pkg = ROOT / "tools" / "node" / "node_modules" / "azurite" / "package.json"
        azurite = json.loads(pkg.read_text())["version"]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": ram,
        "disk": f"{source[0]} ({source[1]}, {source[2]}, {kind})",
        "kernel": platform.release(),
        "kvm": (
            "/dev/kvm present but unused (the QEMU target runs -accel tcg; KVM does not work in this sandbox)"
            if os.path.exists("/dev/kvm")
            else "no /dev/kvm (the QEMU target runs -accel tcg)"
        ),
        "python": platform.python_version(),
        "qemu": first_line(["qemu-system-x86_64", "--version"]),
        "qemu-img": first_line(["qemu-img", "--version"]),
        "restic": first_line(["restic", "version"]),
        "moto": version("moto"),
        "azurite": azurite,
    }


# --------------------------------------------------------------------------- summary and render


def summarize(res: dict) -> dict:
    out: dict[str, Any] = {}
    tp = res.get("throughput")
    if tp:
        size = tp["image"]["size_bytes"]
        rows = {}
        for name, runs in tp["runs"].items():
            secs = [r["seconds"] for r in runs]
            durable = [r["seconds"] + r["sync_seconds"] for r in runs]
            row = {
                "median_s": median(secs),
                "min_s": min(secs),
                "max_s": max(secs),
                "sync_median_s": median([r["sync_seconds"] for r in runs]),
                "durable_median_s": median(durable),
                "mib_s": mib_s(size, median(secs)),
                "durable_mib_s": mib_s(size, median(durable)),
            }
            if "convert_seconds" in runs[0]:
                conv = [r["convert_seconds"] for r in runs]
                row["convert_median_s"] = median(conv)
                row["convert_share"] = median([c / r["seconds"] for c, r in zip(conv, runs, strict=True)])
            rows[name] = row
        out["throughput"] = rows
        ratios = {}
        f = rows.get("file")
        if f:
            ratios["lifeboat raw / restic restore (tool time)"] = f["mib_s"] / rows["restic"]["mib_s"]
            ratios["lifeboat raw / restic restore (incl. sync)"] = (
                f["durable_mib_s"] / rows["restic"]["durable_mib_s"]
            )
            ratios["lifeboat raw / dd write limit (incl. fsync)"] = (
                f["durable_mib_s"] / rows["dd"]["durable_mib_s"]
            )
            ratios["lifeboat raw / cp --sparse + sync"] = f["durable_mib_s"] / rows["cp"]["durable_mib_s"]
            ratios["lifeboat raw / cat read limit"] = f["mib_s"] / rows["cat"]["mib_s"]
            if "null" in rows:
                ratios["lifeboat raw / reconstruct to null"] = f["mib_s"] / rows["null"]["mib_s"]
            for t in ("qemu-raw", "qemu-qcow2", "ebs", "azure"):
                if t in rows:
                    ratios[f"{t} / lifeboat raw"] = rows[t]["durable_mib_s"] / f["durable_mib_s"]
        out["ratios"] = ratios
    demo = res.get("demo")
    if demo:
        stages: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for run in demo["runs"]:
            for m, mr in run["machines"].items():
                for s, secs in mr["stages"].items():
                    stages[m][s].append(secs)
        walls = [r["wall_seconds"] for r in demo["runs"]]
        rtos = [r["rto_seconds"] for r in demo["runs"]]
        stage_sum = [sum(sum(mr["stages"].values()) for mr in r["machines"].values()) for r in demo["runs"]]
        out["demo"] = {
            "stages": {
                m: {s: {"median_s": median(v), "min_s": min(v), "max_s": max(v)} for s, v in ss.items()}
                for m, ss in stages.items()
            },
            "machine_rto": {
                m: median([r["machines"][m]["rto_seconds"] for r in demo["runs"]]) for m in stages
            },
            "wall": {"median_s": median(walls), "min_s": min(walls), "max_s": max(walls)},
            "rto": {"median_s": median(rtos), "min_s": min(rtos), "max_s": max(rtos)},
            "flow_overhead_median_s": median([w - s for w, s in zip(walls, stage_sum, strict=True)]),
            "cleanup_median_s": median([r["cleanup_seconds"] for r in demo["runs"]]),
        }
    return out


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def load_text(res: dict) -> str:
    load = res.get("load_average", {})
    if "start" not in load or "end" not in load:
        return ""
    return (
        f"Load average (1/5/15 min) at the start {' / '.join(f'{x:.1f}' for x in load['start'])}, "
        f"at the end {' / '.join(f'{x:.1f}' for x in load['end'])} (other jobs shared the 2 cores)."
    )


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}%"


def render_section(res: dict) -> str:
    s = summarize(res)
    m, p = res["machine"], res["params"]
    out = [
        START,
        "## Recovery",
        "",
        f"Generated by `{p['command']}` on {m['date']} at commit `{m['commit']}` (total "
        f"{res['total_minutes']:.1f} min). Raw measurements: "
        "[bench/recovery_results.json](../bench/recovery_results.json). As everywhere in this document: the "
        "machine is small and shared, read the **medians and ratios**, not single times.",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM, disk {m['disk']}, kernel {m['kernel']}, "
        f"{m['kvm']}; Python {m['python']}, {m['qemu']}, {m['restic']}, moto {m['moto']}, "
        f"Azurite {m['azurite']}. {load_text(res)}",
        "",
    ]
    tp = res.get("throughput")
    if tp:
        img, rows = tp["image"], s["throughput"]
        size = img["size_bytes"]
        cache = tp["page_cache_pct"]
        out += [
            "### Method (reconstruction)",
            "",
            f"- Image: `tests/support/make_disk.py create --size {p['size']} --seed 1`: {size / MIB:.0f} MiB logical, "
            f"{img['allocated_bytes'] / MIB:.0f} MiB allocated (sparse). Replicated with `replicate()` (default "
            f"options, {img['block_size'] >> 10} KiB blocks) into an encrypted repository on a FolderStore "
            f"({img['lifeboat_repo_bytes'] / MIB:.0f} MiB), and backed up with `restic backup` "
            f"({img['restic_repo_bytes'] / MIB:.0f} MiB repository). Everything lives in `{p['workdir']}` on the same "
            "file system.",
            f"- One un-timed warm-up per path, then {p['repeat']} timed runs per path, paths interleaved. *Seconds* is "
            "the call (or command) alone; *+ sync* is a `sync` timed right after it (the write-back it left behind; "
            "FileWriter fsyncs, so its sync is ~0). Throughput = logical size / median seconds; the *durable* "
            "column uses seconds + sync. min-max over the timed runs.",
            "- Every output is checked outside the timing: raw files by sha256, qcow2 by `qemu-img compare`, EBS by "
            "the exact set of PutSnapshotBlock indexes (= the image's non-zero 512 KiB blocks), restic by sha256.",
            f"- Page cache (fincore, before the warm-up): image {_pct(cache['before']['image'])}, lifeboat repository "
            f"{_pct(cache['before']['lifeboat repo'])}, restic repository {_pct(cache['before']['restic repo'])} "
            f"resident; after the runs {_pct(cache['after']['image'])} / {_pct(cache['after']['lifeboat repo'])} / "
            f"{_pct(cache['after']['restic repo'])}. Nothing was dropped: every path reads its repository warm.",
            "",
            "### Reconstruction throughput",
            "",
        ]
        ref = rows.get("file")
        table_rows = []
        for name, r in rows.items():
            extra = ""
            if "convert_share" in r:
                extra = (
                    f"qemu-img convert {r['convert_median_s']:.2f} s ({r['convert_share']:.0%} of the call)"
                )
            if name == "ebs":
                last = tp["runs"]["ebs"][-1]
                extra = (
                    f"{last['put_snapshot_block']} PutSnapshotBlock of {img['ebs_blocks_total']} blocks "
                    f"({img['ebs_blocks_total'] - last['put_snapshot_block']} all-zero blocks not sent: "
                    f"{last['zero_blocks_skipped']} found zero inside written data, the rest holes)"
                )
            if name == "azure":
                last = tp["runs"]["azure"][-1]
                extra = (
                    f"{last['put_page']} Put Page, {last['page_range_bytes'] / MIB:.0f} MiB in page ranges"
                )
            if name == "dd":
                extra = "writes every byte (no holes)"
            if name == "cp":
                extra = f"writes the {img['allocated_bytes'] / MIB:.0f} MiB of data"
            table_rows.append([
                LABELS[name],
                f"{r['median_s']:.2f}",
                f"{r['min_s']:.2f}-{r['max_s']:.2f}",
                f"{r['sync_median_s']:.2f}",
                f"{r['mib_s']:.0f}",
                f"{r['durable_mib_s']:.0f}",
                f"{r['durable_mib_s'] / ref['durable_mib_s']:.2f}x" if ref else "",
                extra,
            ])  # fmt: skip
        out += [
            table(
                [
                    "Path",
                    "Median s",
                    "min-max s",
                    "+ sync s",
                    "MiB/s",
                    "MiB/s durable",
                    "vs lifeboat raw (durable)",
                    "Notes",
                ],
                table_rows,
            ),
            "",
            "Ratios (same run):",
            "",
            table(["Ratio", "Value"], [[k, f"{v:.2f}"] for k, v in s["ratios"].items()]),
            "",
        ]
    demo = res.get("demo")
    if demo:
        d = s["demo"]
        stage_names = list(next(iter(d["stages"].values())))
        out += [
            "### QEMU demo end to end",
            "",
            "Two boot disks from `tests/support/bootdisk.py` (`stay=True`, "
            + ", ".join(f"{k} {v['size_bytes'] / MIB:.0f} MiB" for k, v in demo["disks"].items())
            + "), replicated; plan with boot groups `db` then `web` (delay 0); a **test** recovery through "
            "`run_recovery` (the recovery flow's ASL run by the local runner) onto `qemu_target` (raw images, "
            f"QEMU `-accel tcg`, isolated SLIRP NIC), validated on the serial console marker. {p['demo_repeat']} runs; "
            "after each, every resource in the report is deleted in reverse order and the benchmark checks that "
            "no QEMU process is left and the target directory is empty (it would abort otherwise: it did not).",
            "",
            table(
                ["Stage", *[f"{mid} median s (min-max)" for mid in d["stages"]]],
                [
                    [
                        f"`{st}`",
                        *[
                            f"{d['stages'][mid][st]['median_s']:.2f} ({d['stages'][mid][st]['min_s']:.2f}-"
                            f"{d['stages'][mid][st]['max_s']:.2f})"
                            if st in d["stages"][mid]
                            else ""
                            for mid in d["stages"]
                        ],
                    ]
                    for st in stage_names
                ]
                + [
                    [
                        "machine RTO (run start → validated)",
                        *[f"{d['machine_rto'][mid]:.2f}" for mid in d["stages"]],
                    ]
                ],
            ),
            "",
            table(
                ["Whole run", "Median s", "min-max s"],
                [
                    [
                        "`run_recovery` wall time",
                        f"{d['wall']['median_s']:.1f}",
                        f"{d['wall']['min_s']:.1f}-{d['wall']['max_s']:.1f}",
                    ],
                    [
                        "report RTO (run start → last machine validated)",
                        f"{d['rto']['median_s']:.1f}",
                        f"{d['rto']['min_s']:.1f}-{d['rto']['max_s']:.1f}",
                    ],
                    ["flow overhead (wall - sum of stages)", f"{d['flow_overhead_median_s']:.2f}", ""],
                    [
                        "cleanup (delete every resource, not part of the RTO)",
                        f"{d['cleanup_median_s']:.1f}",
                        "",
                    ],
                ],
            ),
            "",
        ]
    out += ["### Notes", "", *[f"- {n}" for n in notes(res, s)], "", END]
    return "\n".join(out)


def notes(res: dict, s: dict) -> list[str]:
    out = []
    tp = res.get("throughput")
    if tp:
        rows = s["throughput"]
        img = tp["image"]
        out.append(
            "Page cache: the image, the lifeboat repository and the restic repository were all written or read "
            "in this run and stay resident (see the fincore figures above), so reconstruction reads packs from RAM "
            "and these figures are write-bound plus CPU (decrypt, decompress, verify); a cold repository on "
            "object storage adds its own read cost. `cat` is a RAM read, not a disk read. FileWriter drops the "
            "pages it writes (`POSIX_FADV_DONTNEED`) and fsyncs; restic leaves its write-back to the `sync`."
        )
        if "dd" in rows and "cp" in rows:
            out.append(
                f"Sparse output: lifeboat, `cp --sparse=always` and the targets write only the "
                f"{img['allocated_bytes'] / MIB:.0f} MiB of data of the {img['size_bytes'] / MIB:.0f} MiB image "
                "(holes stay holes; throughput is on the logical size), while `dd` writes every byte: that is "
                "why lifeboat can beat the `dd` line. The fair write limit for it is `cp --sparse=always` + `sync` "
                f"(lifeboat raw reaches {s['ratios'].get('lifeboat raw / cp --sparse + sync', 0):.0%} of it, "
                "durable). restic 0.14 has no sparse restore: it writes the zeros too."
            )
        if "ebs" in rows:
            e = tp["runs"]["ebs"][-1]
            per = rows["ebs"]["median_s"] / max(1, e["put_snapshot_block"]) * 1000
            out.append(
                f"EBS direct runs on moto in-process: moto's cost dominates (~{per:.0f} ms of wall time per "
                "PutSnapshotBlock on this machine: botocore serialisation, moto's request parsing and in-memory storage, all in this "
                "Python process competing with the reconstruct threads for the GIL). The time says nothing about "
                f"AWS; the portable figure is the request count: {e['put_snapshot_block']} PutSnapshotBlock for "
                f"{img['ebs_blocks_nonzero']} non-zero 512 KiB blocks out of {img['ebs_blocks_total']} "
                f"(holes and all-zero blocks are never sent), plus StartSnapshot, CompleteSnapshot and "
                f"{e['requests'].get('ec2.describe_snapshots', 0)} DescribeSnapshots."
            )
        if "azure" in rows:
            out.append(
                "Azure page blobs run on Azurite (Node.js, on the same 2 cores, storing extents on the same disk): "
                "like moto, a functional stand-in whose speed is not Azure's; the Put Page count is the portable figure."
            )
        if "qemu-qcow2" in rows and "convert_share" in rows["qemu-qcow2"]:
            out.append(
                f"qcow2 = reconstruct to raw (fsynced), then `qemu-img convert` ({rows['qemu-qcow2']['convert_share']:.0%} "
                "of the call, median), then the raw file is removed: about two passes over the data. "
                "`qemu-img convert` does not fsync, hence the larger + sync column."
            )
    demo = res.get("demo")
    if demo:
        d = s["demo"]
        boot = [d["stages"][m].get("validate-boot", {}).get("median_s", 0) for m in d["stages"]]
        out.append(
            "The demo runs QEMU under TCG (software emulation, `-accel tcg`, the target's default; KVM does not "
            "work on this machine), so "
            "`validate-boot` (power-on to the boot marker on the serial console, median "
            + " / ".join(f"{b:.1f} s" for b in boot)
            + ") dominates the RTO; KVM would shorten the boot (not measured here). The boot groups run "
            "one after the other, so the run's RTO is about the sum of both machines' stages."
        )
    out.append(
        "Two noisy shared cores: other jobs ran on this machine during the run; min-max shows the spread. "
        "No timed assertions are made; compare within one run."
    )
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G", help="image size (make_disk.py syntax: 256M, 1G)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per reconstruction path (medians)")
    ap.add_argument("--demo-repeat", type=int, default=3, help="QEMU demo runs (medians)")
    ap.add_argument(
        "--targets", default=",".join(ALL_TARGETS), help=f"lifeboat paths ({','.join(ALL_TARGETS)})"
    )
    ap.add_argument("--parts", default="throughput,demo")
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench" / "work" / "recovery")
    ap.add_argument("--json", type=Path, default=RESULTS_JSON)
    ap.add_argument(
        "--out", type=Path, default=DOC, help="Markdown file whose recovery section is (re)written"
    )
    ap.add_argument("--render-only", action="store_true", help="re-render --out from --json; run nothing")
    a = ap.parse_args()
    if a.render_only:
        replace_section(a.out, render_section(json.loads(a.json.read_text())), START, END)
        log(f"re-rendered the recovery section of {a.out}")
        return
    if a.repeat < 1 or a.demo_repeat < 1:
        raise BenchError("--repeat and --demo-repeat must be ≥ 1")
    targets = [t for t in a.targets.split(",") if t]
    unknown = set(targets) - set(ALL_TARGETS)
    if unknown:
        raise BenchError(f"unknown targets {sorted(unknown)}")
    if "file" not in targets:
        targets.insert(0, "file")  # the reference every ratio uses
    parts = set(a.parts.split(","))
    missing = [
        t
        for t in ("restic", "qemu-img", "qemu-system-x86_64", "dd", "cp", "/usr/bin/time")
        if shutil.which(t) is None
    ]
    if "azure" in targets and not (os.environ.get("LIFEBOAT_AZURITE") or AZURITE.exists()):
        missing.append(str(AZURITE))
    if missing:
        raise BenchError(
            f"missing tools: {', '.join(missing)} (bench/install_peers.sh, make deps, qemu packages)"
        )
    work = a.workdir.resolve()
    rmtree(work)
    work.mkdir(parents=True)
    cmd = f"python3 bench/recovery_bench.py --size {a.size} --repeat {a.repeat} --demo-repeat {a.demo_repeat}"
    if a.targets != ",".join(ALL_TARGETS):
        cmd += f" --targets {a.targets}"
    if parts != {"throughput", "demo"}:
        cmd += f" --parts {a.parts}"
    res: dict[str, Any] = {
        "machine": machine_info(work),
        "load_average": {"start": list(os.getloadavg())},
        "params": {
            "command": cmd,
            "size": a.size,
            "repeat": a.repeat,
            "demo_repeat": a.demo_repeat,
            "targets": targets,
            "workdir": os.path.relpath(work, ROOT),
        },
    }
    try:
        if "throughput" in parts:
            res["throughput"] = measure_throughput(work / "throughput", a.size, a.repeat, targets)
            rmtree(work / "throughput")
        if "demo" in parts:
            res["demo"] = measure_demo(work, a.demo_repeat)
    finally:
        sync()
    res["total_minutes"] = (time.perf_counter() - T_START) / 60
    res["load_average"]["end"] = list(os.getloadavg())
    res["summary"] = summarize(res)
    a.json.write_text(json.dumps(res, indent=2) + "\n")
    replace_section(a.out, render_section(res), START, END)
    log(f"wrote {a.json} and the recovery section of {a.out}")
    for k, v in res["summary"].get("ratios", {}).items():
        print(f"  {k}: {v:.2f}")
    if "demo" in res["summary"]:
        d = res["summary"]["demo"]
        print(f"  QEMU demo: wall {d['wall']['median_s']:.1f}s, RTO {d['rto']['median_s']:.1f}s (medians)")


if __name__ == "__main__":
    main()
