"""Real QEMU VMs for the KVM source tests: qcow2 disks, a QMP socket, and a byte model.

Writes go into the *running* VM's drives through QMP (HMP ``qemu-io`` on the drive, the
same block layer a guest's writes take, so dirty bitmaps and copy-before-write see them),
and into a Python model of each disk: the model is what a restore must equal.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import uuid as uuidlib
from pathlib import Path

from node_runtime.sources.kvm.qmp import Qmp
from tests.support.disks import create

MiB = 1 << 20


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=120)


def make_qcow2(path: Path, size: int, seed: int) -> bytearray:
    """A qcow2 image holding make_disk data; returns its content."""
    raw = create(path.with_suffix(".raw"), size, seed)
    qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path))
    data = bytearray(raw.read_bytes())
    raw.unlink()
    return data


def raw_of(image: Path, out: Path) -> bytes:
    qemu_img("convert", "-q", "-O", "raw", str(image), str(out))
    return out.read_bytes()


class KvmVm:
    """``qemu-system-x86_64 -accel tcg`` with qcow2 data disks ``disk0..N`` and a QMP socket."""

    def __init__(self, folder: Path, name: str, sizes: list[int], *, seed: int = 1, boot_raw: Path | None = None,
                 memory_mib: int = 64) -> None:  # fmt: skip
        """``boot_raw``: a raw bootable image that becomes disk0 (``sizes[0]`` is then ignored)."""
        self.folder, self.name = folder, name
        folder.mkdir(parents=True, exist_ok=True)
        self.uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"lifeboat-test/{folder}/{name}"))
        self.images = [folder / f"{name}-disk{i}.qcow2" for i in range(len(sizes))]
        self.model = []
        for i, (path, size) in enumerate(zip(self.images, sizes, strict=True)):
            if i == 0 and boot_raw is not None:
                qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", str(boot_raw), str(path))
                self.model.append(bytearray(boot_raw.read_bytes()))
            else:
                self.model.append(make_qcow2(path, size, seed + i))
        self.qmp_socket = Path("/tmp") / f"lb-test-{hashlib.sha256(str(folder).encode()).hexdigest()[:10]}-{name}.qmp"
        self.pidfile = folder / f"{name}.pid"
        self.memory_mib = memory_mib

    def start(self) -> KvmVm:
        self.qmp_socket.unlink(missing_ok=True)
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none", "-m", str(self.memory_mib),
               "-name", f"guest={self.name}", "-uuid", self.uuid,
               "-qmp", f"unix:{self.qmp_socket},server=on,wait=off", "-pidfile", str(self.pidfile), "-daemonize"]  # fmt: skip
        for i, image in enumerate(self.images):
            cmd += ["-drive", f"file={image},format=qcow2,if=none,id=disk{i}",
                    "-device", f"virtio-blk-pci,drive=disk{i}"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        return self

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
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

    # --- writes into the running VM, mirrored in the model ----------------------------------
    def _io(self, disk: int, command: str) -> None:
        with Qmp(str(self.qmp_socket)) as qmp:
            out = qmp.cmd("human-monitor-command", **{"command-line": f'qemu-io disk{disk} "{command}"'})
        if "error" in str(out).lower() or "failed" in str(out).lower():
            raise AssertionError(f"qemu-io {command}: {out}")

    def write(self, disk: int, offset: int, length: int, pattern: int) -> None:
        self._io(disk, f"write -P {pattern} {offset} {length}")
        self.model[disk][offset : offset + length] = bytes([pattern]) * length

    def zero(self, disk: int, offset: int, length: int) -> None:
        self._io(disk, f"write -z {offset} {length}")
        self.model[disk][offset : offset + length] = bytes(length)

    def snapshot_model(self) -> list[bytes]:
        return [bytes(m) for m in self.model]

    def remove_bitmap(self, disk: int, name: str) -> None:
        with Qmp(str(self.qmp_socket)) as qmp:
            qmp.cmd("block-dirty-bitmap-remove", node=f"disk{disk}", name=name)

    def bitmaps(self, disk: int) -> list[str]:
        with Qmp(str(self.qmp_socket)) as qmp:
            return [b.name for b in qmp.disks()[disk].bitmaps]

    def leftovers(self) -> dict[str, list[str]]:
        """Lifeboat's exports, jobs and scratch nodes still in QEMU (empty after a clean run)."""
        with Qmp(str(self.qmp_socket)) as qmp:
            return {
                "exports": [e["id"] for e in qmp.cmd("query-block-exports")],
                "jobs": [j["device"] for j in qmp.cmd("query-block-jobs")],
                "nodes": [n for n in qmp.nodes() if n.startswith("lbf-")],
                "frozen": [b.name for d in qmp.disks() for b in d.bitmaps if b.name.startswith("lifeboat-frozen.")],
            }
