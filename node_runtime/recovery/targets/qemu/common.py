"""What the QEMU capabilities share: settings, the work directory's layout, ``vm.json``, tools.

Layout under ``work_dir`` (every path this target creates or deletes is inside it)::

    <work_dir>/<run_id>/<machine_id>/<disk_id>.raw|.qcow2   write_disk     Resource "file"
    <work_dir>/<run_id>/<machine_id>/vm/                     create_instance Resource "qemu-vm"
        vm.json      the definition: disks, cpus, memory, NICs, serial log, pid file, tags
        serial.log   the guest's first serial port (and the firmware's messages)
        qemu.pid     written by QEMU while it runs
        sercon.bin   tells SeaBIOS to print on the serial port too
    (a process)                                              power_on       Resource "qemu-process"

A path outside ``work_dir`` is refused with :class:`~shared.errors.InvalidInputError`.
Every external command runs under a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Literal

from node_runtime.recovery.targets.base import DiskArtifact, Instance, InstanceSpec
from shared.errors import InvalidInputError, TargetError

KIND = "qemu"
TAG_RUN = "lifeboat:run"
TAG_MACHINE = "lifeboat:machine"

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # one path component, never . or ..
READ_CHUNK = 1 << 20  # serial log bytes scanned per poll; qemu-io read size


class QemuContext:
    """The settings and work directory of one QEMU target, shared by its capabilities.

    ``image_format`` is the format of written disks. ``accel`` is QEMU's accelerator
    (``tcg`` works everywhere; ``kvm`` needs ``/dev/kvm``). ``cache`` is the drive cache
    mode; by default raw images use ``none`` (O_DIRECT, no double caching) where the
    file system supports it and ``writeback`` elsewhere, qcow2 always ``writeback``
    (its metadata benefits from the host cache). ``no_reboot`` makes a guest reboot end
    the process (a test machine that reboots is treated as stopped).
    """

    def __init__(
        self,
        work_dir: Path | str,
        *,
        image_format: Literal["raw", "qcow2"] = "raw",
        accel: str = "tcg",
        cache: str | None = None,
        threads: int = 4,
        no_reboot: bool = True,
        settle_seconds: float = 3.0,
        start_timeout: float = 60.0,
        stop_grace: float = 5.0,
        tool_timeout: float = 600.0,
    ) -> None:
        if image_format not in ("raw", "qcow2"):
            raise InvalidInputError(f"image_format must be raw or qcow2, not {image_format!r}")
        if cache is not None and cache not in ("none", "writeback", "writethrough", "directsync", "unsafe"):
            raise InvalidInputError(f"unknown QEMU cache mode {cache!r}")
        self.work_dir = Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.image_format = image_format
        self.accel = accel
        self.cache = cache
        self.threads = threads
        self.no_reboot = no_reboot
        self.settle_seconds = settle_seconds
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.tool_timeout = tool_timeout

    def machine_dir(self, run_id: str, machine_id: str) -> Path:
        return self.work_dir / safe_id(run_id, "run id") / safe_id(machine_id, "machine id")

    def inside(self, path: str | os.PathLike[str]) -> Path:
        """``path`` made absolute (symlinks not followed), refused unless strictly inside ``work_dir``."""
        p = Path(os.path.normpath(os.path.abspath(path)))
        if p == self.work_dir or not p.is_relative_to(self.work_dir):
            raise InvalidInputError(
                f"{path} is outside the qemu target's work directory {self.work_dir}; refusing to touch it",
                path=str(path),
            )
        with contextlib.suppress(OSError):
            if not p.parent.resolve().is_relative_to(self.work_dir):
                raise InvalidInputError(f"{path} resolves outside {self.work_dir}", path=str(path))
        return p

    def prune(self, path: Path) -> None:
        """Remove the directories above ``path`` that are left empty, up to ``work_dir``."""
        parent = path.parent
        while parent != self.work_dir and parent.is_relative_to(self.work_dir):
            try:
                parent.rmdir()
            except OSError:
                return
            parent = parent.parent

    def vm_dir(self, instance: Instance) -> Path:
        vm = next((r for r in instance.resources if r.type == "qemu-vm"), None)
        if vm is None:
            raise InvalidInputError(
                f"instance {instance.instance_id} has no qemu-vm resource: was it made by create_instance?",
                instance_id=instance.instance_id,
            )
        return self.inside(vm.id)

    def image(self, artifact: DiskArtifact) -> Path:
        """The image file of one of this target's disks."""
        if artifact.format not in ("raw", "qcow2"):
            raise InvalidInputError(
                f"the qemu target has no {artifact.format!r} disks", format=artifact.format
            )
        path = self.inside(artifact.location)
        if not path.is_file():
            raise InvalidInputError(f"disk image {path} does not exist", path=str(path))
        return path

    def load_vm(self, vm_dir: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((vm_dir / "vm.json").read_text())
        except FileNotFoundError as exc:
            raise InvalidInputError(f"no VM is defined in {vm_dir} (deleted?)", vm_dir=str(vm_dir)) from exc
        except (OSError, ValueError) as exc:
            raise TargetError(f"cannot read {vm_dir / 'vm.json'}: {exc}", vm_dir=str(vm_dir)) from exc
        return data

    def save_vm(self, vm_dir: Path, vm: dict[str, Any]) -> None:
        tmp = vm_dir / ".vm.json.tmp"
        try:
            tmp.write_text(json.dumps(vm, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, vm_dir / "vm.json")
        except OSError as exc:
            raise TargetError(
                f"cannot write {vm_dir / 'vm.json'}: {exc.strerror}", vm_dir=str(vm_dir)
            ) from exc


def machine_tags(spec: InstanceSpec) -> dict[str, str]:
    """The tags of everything made for ``spec``: its own, with the run and machine ids unless set."""
    return {
        **spec.tags,
        TAG_RUN: spec.tags.get(TAG_RUN, spec.run_id),
        TAG_MACHINE: spec.tags.get(TAG_MACHINE, spec.machine_id),
    }


def safe_id(value: str, what: str) -> str:
    if not _SAFE_ID.match(value):
        raise InvalidInputError(
            f"{what} {value!r} cannot name a directory: use letters, digits, '.', '_' and '-' "
            "(at most 128, not starting with '.' or '-')",
            **{what.replace(" ", "_"): value},
        )
    return value


def opt(value: str | os.PathLike[str]) -> str:
    """Escape a value for a QEMU ``key=value,...`` option (commas are doubled)."""
    return os.fspath(value).replace(",", ",,")


def run_tool(cmd: list[str], *, timeout: float, what: str, **fields: object) -> bytes:
    """Run a tool to completion within ``timeout``; its stdout, or a :class:`TargetError`."""
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise TargetError(
            f"{what}: {Path(cmd[0]).name} did not finish within {timeout:.0f}s", **fields
        ) from exc
    except OSError as exc:
        raise TargetError(f"{what}: cannot run {cmd[0]}: {exc.strerror}", **fields) from exc
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise TargetError(f"{what}: {err or f'exit code {proc.returncode}'}", **fields)
    return proc.stdout
