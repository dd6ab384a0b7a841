"""Launching under QEMU: a VM definition (``vm.json``), then a detached QEMU process.

* ``create_instance``: resolves the instance type (:data:`INSTANCE_TYPES` or
  ``<cpus>c<mem>m``) and writes ``vm.json``. Nothing runs; state ``defined``. Resource
  ``qemu-vm``.
* ``power_on``: ``qemu-system-x86_64 -daemonize`` (its own session, re-parented away from
  the caller, so it outlives it), ``-accel tcg`` by default, no display, serial to
  ``serial.log``, ``-pidfile``, ``-no-reboot``. State ``running``. Resource
  ``qemu-process`` (see :mod:`~node_runtime.recovery.targets.qemu.process`).

Debian packages ``qemu-system-x86`` (and ``ovmf`` for EFI machines).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from node_runtime.recovery.qemu import QEMU_SYSTEM, find_tool
from node_runtime.recovery.targets.base import DiskArtifact, Instance, InstanceSpec, Resource
from node_runtime.recovery.targets.qemu.common import QemuContext, machine_tags, opt, run_tool
from node_runtime.recovery.targets.qemu.process import (
    fingerprint,
    matches,
    proc_cmdline,
    process_resource,
    stop_from_pidfile,
)
from shared.errors import InvalidInputError, TargetError

log = logging.getLogger(__name__)

#: instance type -> (vCPUs, memory MiB); ``<cpus>c<mem>m`` (e.g. ``1c384m``) names any other size
INSTANCE_TYPES: dict[str, tuple[int, int]] = {
    "tiny": (1, 256),
    "small": (1, 512),
    "medium": (2, 1024),
    "large": (2, 2048),
}
DEFAULT_INSTANCE_TYPE = "small"
MAX_CPUS = 64
MIN_MEMORY_MIB, MAX_MEMORY_MIB = 64, 1 << 20
_CUSTOM_TYPE = re.compile(r"^([0-9]{1,3})c([0-9]{1,7})m$")

MAX_IDE_DISKS = 4  # primary and secondary IDE channels, two units each
MAX_DISKS = MAX_IDE_DISKS + 6  # then the six ports of one AHCI controller

#: OVMF (Debian package ``ovmf``): firmware code and the variable store template, per layout
OVMF_PAIRS = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
)


def _ovmf(vm_dir: Path) -> tuple[Path, Path]:
    """The EFI firmware for an EFI machine, and its own copy of the variable store."""
    for code, template in OVMF_PAIRS:
        if Path(code).is_file() and Path(template).is_file():
            variables = vm_dir / "efivars.fd"
            if not variables.exists():
                shutil.copyfile(template, variables)
            return Path(code), variables
    raise TargetError(
        "the machine boots with EFI, but no OVMF firmware is installed (Debian package ovmf)",
        looked_in=[c for c, _ in OVMF_PAIRS],
    )


def parse_instance_type(instance_type: str | None) -> tuple[int, int]:
    """(vCPUs, memory MiB) of ``instance_type``; ``None`` is :data:`DEFAULT_INSTANCE_TYPE`.

    Raises :class:`InvalidInputError` for a name that is neither in :data:`INSTANCE_TYPES`
    nor of the form ``<cpus>c<mem>m`` within 1-64 vCPUs and 64 MiB-1 TiB.
    """
    name = DEFAULT_INSTANCE_TYPE if instance_type is None else instance_type
    if name in INSTANCE_TYPES:
        return INSTANCE_TYPES[name]
    m = _CUSTOM_TYPE.match(name)
    if m:
        cpus, memory = int(m.group(1)), int(m.group(2))
        if 1 <= cpus <= MAX_CPUS and MIN_MEMORY_MIB <= memory <= MAX_MEMORY_MIB:
            return cpus, memory
    raise InvalidInputError(
        f"unknown instance type {name!r} for the qemu target: use one of {', '.join(INSTANCE_TYPES)} "
        f"or <cpus>c<memory MiB>m (e.g. 1c384m; 1-{MAX_CPUS} cpus, {MIN_MEMORY_MIB}-{MAX_MEMORY_MIB} MiB)",
        instance_type=name,
    )


def qmp_socket_for(vm_dir: Path) -> Path:
    """A recovered VM's QMP socket: short and fixed per VM (unix socket paths stop at 107 bytes)."""
    digest = hashlib.sha256(str(vm_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"lifeboat-vm-{digest}.qmp"


class QemuLauncher:
    """The :class:`~node_runtime.recovery.targets.base.InstanceLauncher` of the QEMU target."""

    def __init__(self, context: QemuContext) -> None:
        self.context = context

    def create_instance(self, spec: InstanceSpec, disks: list[DiskArtifact]) -> Instance:
        """Write the VM definition (boot disk first); state ``defined``.

        Raises :class:`InvalidInputError` for an unknown instance type, no or too many
        disks, a disk that is not one of this target's images, or a machine already defined.
        """
        ctx = self.context
        cpus, memory = parse_instance_type(spec.instance_type)
        if not disks:
            raise InvalidInputError("a machine needs at least one disk", machine_id=spec.machine_id)
        if len(disks) > MAX_DISKS:
            raise InvalidInputError(f"the qemu target attaches at most {MAX_DISKS} disks, got {len(disks)}")
        images = [ctx.image(d) for d in disks]
        vm_dir = ctx.machine_dir(spec.run_id, spec.machine_id) / "vm"
        if vm_dir.exists():
            raise InvalidInputError(
                f"machine {spec.machine_id} of run {spec.run_id} is already defined in {vm_dir}; delete it first",
                vm_dir=str(vm_dir),
            )
        instance_id = f"{spec.run_id}.{spec.machine_id}"
        tags = machine_tags(spec)
        vm = {
            "version": 1,
            "instance_id": instance_id,
            "name": spec.name,
            "run_id": spec.run_id,
            "machine_id": spec.machine_id,
            "instance_type": spec.instance_type or DEFAULT_INSTANCE_TYPE,
            "cpus": cpus,
            "memory_mib": memory,
            "firmware": str(spec.firmware),
            "accel": ctx.accel,
            "disks": [
                {
                    "disk_id": d.disk_id,
                    "path": str(p),
                    "format": d.format,
                    "cache": self._cache_mode(p, d.format),
                }
                for d, p in zip(disks, images, strict=True)
            ],
            "nics": [],
            "serial_log": str(vm_dir / "serial.log"),
            "pidfile": str(vm_dir / "qemu.pid"),
            # QMP: how reverse protection reads the recovered disks (dirty bitmaps over NBD)
            "qmp_socket": str(qmp_socket_for(vm_dir)),
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"lifeboat:{instance_id}:{vm_dir}")),
            "tags": tags,
        }
        try:
            vm_dir.mkdir(parents=True)
        except OSError as exc:
            raise TargetError(f"cannot create {vm_dir}: {exc.strerror}", vm_dir=str(vm_dir)) from exc
        try:
            ctx.save_vm(vm_dir, vm)
        except BaseException:
            shutil.rmtree(vm_dir, ignore_errors=True)
            raise
        return Instance(
            instance_id=instance_id,
            machine_id=spec.machine_id,
            state="defined",
            resources=[
                Resource(
                    type="qemu-vm",
                    id=str(vm_dir),
                    detail={**tags, "qmp_socket": str(vm["qmp_socket"]), "uuid": str(vm["uuid"])},
                )
            ],
            detail={
                "vm_dir": str(vm_dir),
                "cpus": cpus,
                "memory_mib": memory,
                "serial_log": vm["serial_log"],
            },
        )

    def _cache_mode(self, image: Path, fmt: str) -> str:
        if self.context.cache is not None:
            return self.context.cache
        if fmt != "raw":
            return "writeback"
        try:  # tmpfs and some overlay file systems refuse O_DIRECT
            os.close(os.open(image, os.O_RDONLY | os.O_DIRECT))
        except OSError:
            return "writeback"
        return "none"

    def _command(self, vm: dict[str, Any], vm_dir: Path, sercon: Path) -> list[str]:
        cmd = [find_tool(QEMU_SYSTEM), "-name", f"guest={opt(vm['name'] or vm['instance_id'])}"]
        cmd += ["-nodefaults", "-machine", "pc", "-accel", self.context.accel]
        cmd += ["-smp", str(vm["cpus"]), "-m", str(vm["memory_mib"]), "-rtc", "base=utc"]
        if vm.get("firmware") == "efi":
            code, variables = _ovmf(vm_dir)
            cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={opt(code)}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={opt(variables)}"]  # fmt: skip
        cmd += ["-vga", "std", "-display", "none", "-monitor", "none"]
        cmd += ["-chardev", f"file,id=serial0,path={opt(vm['serial_log'])}", "-serial", "chardev:serial0"]
        # SeaBIOS reads the port as a little-endian integer; its messages then reach the log too
        # (QEMU warns that the name lacks the "opt/" prefix: the name is SeaBIOS's, not ours).
        cmd += ["-fw_cfg", f"name=etc/sercon-port,file={opt(sercon)}"]
        cmd += ["-pidfile", vm["pidfile"], "-daemonize", "-boot", "strict=on"]
        if vm.get("qmp_socket"):
            cmd += ["-uuid", vm["uuid"], "-qmp", f"unix:{opt(vm['qmp_socket'])},server=on,wait=off"]
        if self.context.no_reboot:
            cmd.append("-no-reboot")
        if len(vm["disks"]) > MAX_IDE_DISKS:
            cmd += ["-device", "ahci,id=ahci0"]
        for i, disk in enumerate(vm["disks"]):
            drive = (
                f"file={opt(disk['path'])},format={disk['format']},if=none,id=disk{i},cache={disk['cache']}"
            )
            drive += ",discard=unmap,detect-zeroes=unmap"  # guest TRIM and zero writes keep the image sparse
            if i < MAX_IDE_DISKS:  # IDE: every guest OS has the driver
                device = f"ide-hd,drive=disk{i},bus=ide.{i // 2},unit={i % 2}"
            else:
                device = f"ide-hd,drive=disk{i},bus=ahci0.{i - MAX_IDE_DISKS}"
            cmd += ["-drive", drive, "-device", device + (",bootindex=0" if i == 0 else "")]
        for i, nic in enumerate(vm["nics"]):
            netdev = f"user,id=net{i},restrict={'on' if nic['restrict'] else 'off'}"
            netdev += "".join(f",{k}={opt(v)}" for k, v in nic["user_net"].items())
            cmd += ["-netdev", netdev, "-device", f"{nic['model']},netdev=net{i},mac={nic['mac']},romfile="]
        return cmd

    def power_on(self, instance: Instance) -> Instance:
        """Start QEMU detached (``-daemonize``); state ``running``, resource ``qemu-process``.

        Powering on a machine whose QEMU is still running returns it unchanged.
        """
        ctx = self.context
        vm_dir = ctx.vm_dir(instance)
        vm = ctx.load_vm(vm_dir)
        current = process_resource(instance)
        if current is not None and matches(current):
            return instance
        for disk in vm["disks"]:
            if not Path(disk["path"]).is_file():
                raise InvalidInputError(
                    f"disk {disk['path']} of {vm_dir} no longer exists", path=disk["path"]
                )
        pidfile = Path(vm["pidfile"])
        sercon = vm_dir / "sercon.bin"
        try:
            pidfile.unlink(missing_ok=True)
            sercon.write_bytes((0x3F8).to_bytes(2, "little"))  # COM1
        except OSError as exc:
            raise TargetError(f"cannot prepare {vm_dir}: {exc.strerror}", vm_dir=str(vm_dir)) from exc
        cmd = self._command(vm, vm_dir, sercon)
        what = f"starting QEMU for {instance.instance_id}"
        try:
            # With -daemonize the command returns once the VM is set up (or has failed),
            # leaving QEMU re-parented, in a session of its own.
            run_tool(cmd, timeout=ctx.start_timeout, what=what, vm_dir=str(vm_dir))
            pid = self._wait_pidfile(pidfile)
            cmdline = proc_cmdline(pid)
            if cmdline is None or os.fsencode(pidfile) not in cmdline.split(b"\0"):
                raise TargetError(
                    f"{what}: QEMU (pid {pid}) exited right after starting; see {vm['serial_log']}",
                    vm_dir=str(vm_dir),
                )
        except BaseException:
            stop_from_pidfile(pidfile, ctx.stop_grace)  # a daemon may exist even when the launcher failed
            raise
        process = Resource(
            type="qemu-process",
            id=str(pid),
            detail={
                "pidfile": str(pidfile),
                "cmdline_sha256": fingerprint(cmdline),
                "vm_dir": str(vm_dir),
                **({"qmp_socket": vm["qmp_socket"], "uuid": vm["uuid"]} if vm.get("qmp_socket") else {}),
                **vm["tags"],
            },
        )
        log.info("qemu started", extra={"instance_id": instance.instance_id, "pid": pid})
        return instance.model_copy(
            update={
                "state": "running",
                "resources": [*instance.resources, process],
                "detail": {**instance.detail, "pid": pid},
            }
        )

    def _wait_pidfile(self, pidfile: Path, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                return int(pidfile.read_text().strip())
            if time.monotonic() >= deadline:
                raise TargetError(
                    f"QEMU wrote no pid file {pidfile} within {timeout:.0f}s", pidfile=str(pidfile)
                )
            time.sleep(0.05)
