"""What stands behind the ARM test server's disks and VMs: files and QEMU processes.

A managed disk imported from a page-blob VHD becomes a raw file (the VHD minus its
footer, downloaded from the same Azurite the import read); a VM boots its OS disk (and
data disks) with ``qemu-system-x86_64 -accel tcg``: SeaBIOS for Hyper-V generation V1,
OVMF for V2, the serial console written to a file that boot diagnostics serve.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node_runtime.recovery.azure_vhd import FOOTER_SIZE

_OVMF = (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd"))
_COPY_CHUNK = 4 << 20


class QemuHypervisor:
    """Disks as raw files under ``workdir``; one QEMU process per running VM."""

    def __init__(self, workdir: Path, blob_client: Callable[[str], Any], *, memory_mib: int = 256) -> None:
        """``blob_client``: the blob a VHD URL names (the fake's :meth:`blob_client`)."""
        self.workdir = workdir
        self.blob_client = blob_client
        self.memory_mib = memory_mib
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        (workdir / "disks").mkdir(parents=True, exist_ok=True)
        (workdir / "vms").mkdir(parents=True, exist_ok=True)

    # --- disks ---------------------------------------------------------------------------------
    def disk_path(self, name: str) -> Path:
        return self.workdir / "disks" / f"{name.lower()}.raw"

    def import_vhd(self, name: str, blob_url: str) -> None:
        """Copy the VHD's data (not its footer) from the page blob into the disk's file."""
        blob = self.blob_client(blob_url)
        size = int(blob.get_blob_properties().size) - FOOTER_SIZE
        partial = self.disk_path(name).with_suffix(".part")
        with open(partial, "wb") as out:
            out.truncate(size)
            for offset in range(0, size, _COPY_CHUNK):
                out.seek(offset)
                out.write(blob.download_blob(offset=offset, length=min(_COPY_CHUNK, size - offset)).readall())
        partial.replace(self.disk_path(name))

    def delete_disk(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.disk_path(name).unlink()

    # --- VMs -------------------------------------------------------------------------------------
    def serial_path(self, vm_name: str) -> Path:
        return self.workdir / "vms" / f"{vm_name.lower()}.serial.log"

    def start(self, vm_name: str, disk_names: list[str], *, generation: str) -> None:
        """Boot the VM's disks (the first is the OS disk); raises when QEMU cannot start."""
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise RuntimeError("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
        folder = self.workdir / "vms"
        serial = self.serial_path(vm_name)
        serial.write_bytes(b"")
        cmd = [qemu, "-accel", "tcg", "-m", str(self.memory_mib), "-nodefaults", "-display", "none"]
        cmd += ["-monitor", "none", "-serial", f"file:{serial}", "-nic", "none", "-no-reboot"]
        if generation == "V2":
            code, template = _OVMF
            variables = folder / f"{vm_name.lower()}.vars.fd"
            shutil.copyfile(template, variables)
            cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={variables}"]  # fmt: skip
        for i, name in enumerate(disk_names):
            cmd += ["-drive", f"file={self.disk_path(name)},format=raw,if=ide,index={i}"]
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        with self._lock:
            self.processes[vm_name.lower()] = proc

    def power_state(self, vm_name: str) -> str | None:
        """``running`` while QEMU runs, ``stopped`` once the guest powered off; None if never started."""
        with self._lock:
            proc = self.processes.get(vm_name.lower())
        if proc is None:
            return None
        return "running" if proc.poll() is None else "stopped"

    def serial(self, vm_name: str) -> bytes:
        try:
            return self.serial_path(vm_name).read_bytes()
        except FileNotFoundError:
            return b""

    def stop(self, vm_name: str) -> None:
        with self._lock:
            proc = self.processes.pop(vm_name.lower(), None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        for name in list(self.processes):
            self.stop(name)
