"""Disks of a powered-off KVM machine (qcow2 images with persistent dirty bitmaps).

The images are opened by a ``qemu-storage-daemon`` this node starts (it takes QEMU's
image lock, so the VM cannot start on them meanwhile), and then read exactly like a
running VM's disks: the same freeze transaction, bitmap rotation and NBD export.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from node_runtime.recovery.qemu import find_tool
from node_runtime.sources.kvm.qmp import BlockDisk, Qmp
from node_runtime.sources.kvm.source import DiskRef, KvmSnapshot, freeze_and_export
from shared.errors import SourceError

STORAGE_DAEMON = "qemu-storage-daemon"
QCOW2_MAGIC = b"QFI\xfb"
START_TIMEOUT = 15.0


def is_qcow2(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == QCOW2_MAGIC
    except OSError:
        return False


def _node(path: str) -> str:
    return "lbd-" + hashlib.sha256(path.encode()).hexdigest()[:16]


class StorageDaemon:
    """A ``qemu-storage-daemon`` holding ``images`` open, with a QMP socket; stop() ends it."""

    def __init__(self, images: Sequence[str], work_dir: Path) -> None:
        self.images = [str(Path(p).resolve()) for p in images]
        self.work_dir = work_dir
        digest = hashlib.sha256("\0".join(self.images).encode()).hexdigest()[:16]
        self.qmp_socket = Path(os.environ.get("TMPDIR", "/tmp")) / f"lifeboat-qsd-{digest}.qmp"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.qmp_socket.unlink(missing_ok=True)
        cmd = [find_tool(STORAGE_DAEMON)]
        for image in self.images:
            fmt = "qcow2" if is_qcow2(image) else "raw"
            cmd += ["--blockdev", json.dumps({"driver": fmt, "node-name": _node(image),
                                              "file": {"driver": "file", "filename": image}})]  # fmt: skip
        cmd += ["--chardev", f"socket,id=lbqmp,path={self.qmp_socket},server=on,wait=off", "--monitor", "chardev=lbqmp"]
        log_path = self.work_dir / "qemu-storage-daemon.log"
        with open(log_path, "wb") as log_file:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.qmp_socket.exists():
            if self._proc.poll() is not None:
                error = log_path.read_text(errors="replace").strip()
                self._proc = None
                hint = " (is the VM running? protect a running VM through its QMP socket)" if "lock" in error else ""
                raise SourceError(f"cannot open {', '.join(self.images)}: {error}{hint}", images=self.images)
            if time.monotonic() > deadline:
                self.stop()
                raise SourceError(f"qemu-storage-daemon did not start within {START_TIMEOUT:.0f} s")
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.qmp_socket.unlink(missing_ok=True)

    def disks(self, qmp: Qmp) -> dict[str, BlockDisk]:
        """The daemon's images by path, as block disks."""
        bitmaps = qmp._bitmaps_by_node()
        nodes = qmp.nodes()
        out: dict[str, BlockDisk] = {}
        for key, image in enumerate(self.images):
            node = nodes[_node(image)]
            out[image] = BlockDisk(
                key=key, device="", qdev="", node=_node(image), filename=image, format=str(node.get("drv", "")),
                size=int((node.get("image") or {}).get("virtual-size", 0)), bitmaps=tuple(bitmaps.get(_node(image), ())),
            )  # fmt: skip
        return out


class OfflineMachine:
    """A :class:`MachineSource` over image files (``DiskRef.source`` is the path)."""

    def __init__(self, refs: Sequence[DiskRef], *, scratch_dir: Path) -> None:
        self.refs = list(refs)
        self.scratch_dir = scratch_dir

    def open(self) -> KvmSnapshot:
        paths = [str(Path(r.source).resolve()) for r in self.refs]
        work = self.scratch_dir / ("offline-" + hashlib.sha256("\0".join(paths).encode()).hexdigest()[:12])
        daemon = StorageDaemon(paths, work)
        daemon.start()
        try:
            with Qmp(str(daemon.qmp_socket)) as qmp:
                disks = daemon.disks(qmp)
                refs = [DiskRef(r.disk_id, p) for r, p in zip(self.refs, paths, strict=True)]
                snap = freeze_and_export(qmp, refs, disks, scratch_dir=work, label="", on_close=daemon.stop)
        except BaseException:
            daemon.stop()
            raise
        # the plan names disks by the path it gave, not the resolved one
        snap.disks = {r.source: snap.disks[p] for r, p in zip(self.refs, paths, strict=True)}
        return snap
