"""The local KVM/QEMU recovery target: image files, a VM definition and a QEMU process.

Layout under ``work_dir`` (every path this target creates or deletes is inside it)::

    <work_dir>/<run_id>/<machine_id>/<disk_id>.raw|.qcow2   write_disk     Resource "file"
    <work_dir>/<run_id>/<machine_id>/vm/                     create_instance Resource "qemu-vm"
        vm.json      the definition: disks, cpus, memory, NICs, serial log, pid file, tags
        serial.log   the guest's first serial port (and the firmware's messages)
        qemu.pid     written by QEMU while it runs
        sercon.bin   tells SeaBIOS to print on the serial port too
    (a process)                                              power_on       Resource "qemu-process"

Flow and what each step creates (each listed in ``resources`` as soon as it exists):

* ``write_disk``: the point is reconstructed into a sparse raw file through
  :class:`~node_runtime.recovery.writers.FileWriter`; with ``image_format="qcow2"`` it is
  converted with ``qemu-img convert`` and the raw file removed. A failure removes what
  was written. ``read_disk`` reads either format (qcow2 through ``qemu-io -r -U``, meant
  for OS-preparation-sized reads); ``patch_disk`` writes in place, raw with ``pwrite``,
  qcow2 with ``qemu-io write -s`` (which refuses an image a running QEMU has locked).
* ``create_instance``: resolves the instance type (:data:`INSTANCE_TYPES` or
  ``<cpus>c<mem>m``) and writes ``vm.json``. Nothing runs; state ``defined``.
* ``attach_networks``: QEMU user-mode (SLIRP) NICs, e1000, with deterministic MACs;
  isolated (test) networks get ``restrict=on`` (no route to the host or outside). The
  plan's network name is *recorded* (``vm.json``, ``Instance.detail``), not joined:
  bridges and taps need privileges this target does not assume, so every NIC is its own
  NAT network. ``private_ip`` becomes the first (only) DHCP lease of that NIC's network;
  security groups are recorded and have no effect.
* ``power_on``: ``qemu-system-x86_64 -daemonize`` (its own session, re-parented away from
  the caller, so it outlives it), ``-accel tcg`` by default, no display, serial to
  ``serial.log``, ``-pidfile``, ``-no-reboot``. State ``running``. The resource's id is
  the pid; its detail holds the pid file and a SHA-256 of ``/proc/<pid>/cmdline``, so a
  reused pid is never signalled.
* ``validate``: follows ``serial.log`` for the marker (a substring), a fail pattern
  (:data:`~node_runtime.recovery.qemu.DEFAULT_FAIL_PATTERNS`), the process's death or the
  timeout: evidence ``serial-marker``. Without a marker: the process is still alive after
  ``settle_seconds`` (``power-state``).

Cleanup (:meth:`QemuTarget.delete`), in reverse order: SIGTERM the process (only if its
cmdline still matches), SIGKILL after a grace period; remove the VM directory (stopping
any QEMU still running from it), remove the image files. Directories left empty are
removed up to ``work_dir``. Deleting something already gone answers ``False``; a path
outside ``work_dir`` is refused with :class:`~shared.errors.InvalidInputError`.

Every external command runs under a timeout; every wait is bounded.
Debian packages: ``qemu-system-x86`` and ``qemu-utils`` (``qemu-img``, ``qemu-io``).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from node_runtime.recovery.qemu import (
    DEFAULT_FAIL_PATTERNS,
    EXCERPT_LINES,
    QEMU_IO,
    QEMU_SYSTEM,
    convert_image,
    find_tool,
)
from node_runtime.recovery.reconstruct import reconstruct
from node_runtime.recovery.targets.base import (
    DiskArtifact,
    Evidence,
    Instance,
    InstanceSpec,
    NicSpec,
    Progress,
    Resource,
    Target,
    ValidationSpec,
)
from node_runtime.recovery.writers import FileWriter
from shared.errors import InvalidInputError, LifeboatError, TargetError
from shared.repo.points import PointRecord
from shared.repo.repository import Repository

log = logging.getLogger(__name__)

KIND = "qemu"
TAG_RUN = "lifeboat:run"
TAG_MACHINE = "lifeboat:machine"

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
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # one path component, never . or ..

MAX_IDE_DISKS = 4  # primary and secondary IDE channels, two units each
MAX_DISKS = MAX_IDE_DISKS + 6  # then the six ports of one AHCI controller

_ANSI = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|[()][A-Za-z0-9]|[A-Za-z=>])")
_HEX_LINE = re.compile(r"^[0-9a-f]{8,}:  ((?:[0-9a-f]{2} )+)")
_TAIL_BYTES = 64 << 10  # serial log read back for an excerpt
_READ_CHUNK = 1 << 20  # serial log bytes scanned per poll; qemu-io read size
_POLL_S = 0.2


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


def _safe_id(value: str, what: str) -> str:
    if not _SAFE_ID.match(value):
        raise InvalidInputError(
            f"{what} {value!r} cannot name a directory: use letters, digits, '.', '_' and '-' "
            "(at most 128, not starting with '.' or '-')",
            **{what.replace(" ", "_"): value},
        )
    return value


def _qemu_io() -> str:
    return find_tool(QEMU_IO)


def _opt(value: str | os.PathLike[str]) -> str:
    """Escape a value for a QEMU ``key=value,...`` option (commas are doubled)."""
    return os.fspath(value).replace(",", ",,")


def _mac(instance_id: str, index: int) -> str:
    """A stable, locally administered MAC in QEMU's 52:54:00 range."""
    digest = hashlib.sha256(f"{instance_id}/nic{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def _user_net(private_ip: str | None) -> dict[str, str]:
    """SLIRP options giving the guest ``private_ip`` as its (first) DHCP lease, in a /24."""
    if private_ip is None:
        return {}
    try:
        ip = ipaddress.IPv4Address(private_ip)
    except ValueError as exc:
        raise InvalidInputError(
            f"private_ip {private_ip!r} is not an IPv4 address", private_ip=private_ip
        ) from exc
    net = ipaddress.IPv4Network(f"{ip}/24", strict=False)
    if ip in (net.network_address, net.broadcast_address):
        raise InvalidInputError(f"private_ip {ip} is not a host address of {net}", private_ip=private_ip)
    host, dns = [a for a in net.hosts() if a != ip][:2]  # SLIRP's gateway and DNS, never the guest's
    return {"net": str(net), "host": str(host), "dns": str(dns), "dhcpstart": str(ip)}


def _proc_cmdline(pid: int) -> bytes | None:
    """``/proc/<pid>/cmdline``, or None when there is no such live process (gone or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        if stat.rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return None


def _fingerprint(cmdline: bytes) -> str:
    return hashlib.sha256(cmdline).hexdigest()


def _excerpt(serial: bytes, lines: int = EXCERPT_LINES) -> str:
    text = _ANSI.sub(b"", serial).replace(b"\r", b"").decode("utf-8", errors="replace")
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept) if kept else "(no serial console output)"


def _tail(path: Path, size: int = _TAIL_BYTES) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - size))
            return f.read(size)
    except OSError:
        return b""


def _run(cmd: list[str], *, timeout: float, what: str, **fields: object) -> bytes:
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


class QemuTarget:
    """Recovered machines as image files and QEMU processes under ``work_dir``.

    ``image_format`` is the format of written disks. ``accel`` is QEMU's accelerator
    (``tcg`` works everywhere; ``kvm`` needs ``/dev/kvm``). ``cache`` is the drive cache
    mode; by default raw images use ``none`` (O_DIRECT, no double caching) where the
    file system supports it and ``writeback`` elsewhere, qcow2 always ``writeback``
    (its metadata benefits from the host cache). ``no_reboot`` makes a guest reboot end
    the process (a test machine that reboots is treated as stopped).
    """

    kind = KIND

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

    # --- paths ------------------------------------------------------------------------------
    def _machine_dir(self, run_id: str, machine_id: str) -> Path:
        return self.work_dir / _safe_id(run_id, "run id") / _safe_id(machine_id, "machine id")

    def _inside(self, path: str | os.PathLike[str]) -> Path:
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

    def _prune(self, path: Path) -> None:
        """Remove the directories above ``path`` that are left empty, up to ``work_dir``."""
        parent = path.parent
        while parent != self.work_dir and parent.is_relative_to(self.work_dir):
            try:
                parent.rmdir()
            except OSError:
                return
            parent = parent.parent

    def _vm_dir(self, instance: Instance) -> Path:
        vm = next((r for r in instance.resources if r.type == "qemu-vm"), None)
        if vm is None:
            raise InvalidInputError(
                f"instance {instance.instance_id} has no qemu-vm resource: was it made by create_instance?",
                instance_id=instance.instance_id,
            )
        return self._inside(vm.id)

    def _load_vm(self, vm_dir: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((vm_dir / "vm.json").read_text())
        except FileNotFoundError as exc:
            raise InvalidInputError(f"no VM is defined in {vm_dir} (deleted?)", vm_dir=str(vm_dir)) from exc
        except (OSError, ValueError) as exc:
            raise TargetError(f"cannot read {vm_dir / 'vm.json'}: {exc}", vm_dir=str(vm_dir)) from exc
        return data

    def _save_vm(self, vm_dir: Path, vm: dict[str, Any]) -> None:
        tmp = vm_dir / ".vm.json.tmp"
        try:
            tmp.write_text(json.dumps(vm, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, vm_dir / "vm.json")
        except OSError as exc:
            raise TargetError(
                f"cannot write {vm_dir / 'vm.json'}: {exc.strerror}", vm_dir=str(vm_dir)
            ) from exc

    @staticmethod
    def _tags(spec: InstanceSpec) -> dict[str, str]:
        return {
            **spec.tags,
            TAG_RUN: spec.tags.get(TAG_RUN, spec.run_id),
            TAG_MACHINE: spec.tags.get(TAG_MACHINE, spec.machine_id),
        }

    # --- DiskTarget -------------------------------------------------------------------------
    def write_disk(
        self, repo: Repository, point: PointRecord, spec: InstanceSpec, *, progress: Progress | None = None
    ) -> DiskArtifact:
        """Reconstruct ``point`` into ``<run>/<machine>/<disk_id>.raw`` (then .qcow2 if configured).

        On failure the files written so far are removed and the error re-raised
        (repository errors as they are, file-system and ``qemu-img`` errors as TargetError).
        """
        machine_dir = self._machine_dir(spec.run_id, spec.machine_id)
        disk_id = _safe_id(point.disk_id, "disk id")
        tags = self._tags(spec)
        raw = machine_dir / f"{disk_id}.raw"
        final = raw if self.image_format == "raw" else machine_dir / f"{disk_id}.qcow2"
        try:
            machine_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TargetError(f"cannot create {machine_dir}: {exc.strerror}", path=str(machine_dir)) from exc
        try:
            stats = reconstruct(
                repo, point, FileWriter(str(raw), point.disk_size), threads=self.threads, progress=progress
            )
            if final != raw:
                convert_image(raw, final, "qcow2", timeout=self.tool_timeout)
                raw.unlink()
        except BaseException:
            for path in {raw, final}:
                with contextlib.suppress(OSError):
                    path.unlink()
            self._prune(raw)
            raise
        resource = Resource(
            type="file",
            id=str(final),
            detail={"format": self.image_format, "disk_id": disk_id, "point_id": point.id, **tags},
        )
        return DiskArtifact(
            disk_id=disk_id,
            point_id=point.id,
            disk_size=point.disk_size,
            format=self.image_format,
            location=str(final),
            bytes_written=stats.bytes_written,
            resources=[resource],
        )

    def _image(self, artifact: DiskArtifact) -> Path:
        if artifact.format not in ("raw", "qcow2"):
            raise InvalidInputError(
                f"the qemu target has no {artifact.format!r} disks", format=artifact.format
            )
        path = self._inside(artifact.location)
        if not path.is_file():
            raise InvalidInputError(f"disk image {path} does not exist", path=str(path))
        return path

    def read_disk(self, artifact: DiskArtifact, offset: int, length: int) -> bytes:
        """Bytes of the disk image (short only at its end); qcow2 through ``qemu-io``."""
        if offset < 0 or length < 0:
            raise InvalidInputError(f"bad range: offset {offset}, length {length}")
        path = self._image(artifact)
        length = max(0, min(length, artifact.disk_size - offset))
        if length == 0:
            return b""
        if artifact.format == "raw":
            try:
                with open(path, "rb") as f:
                    return os.pread(f.fileno(), length, offset)
            except OSError as exc:
                raise TargetError(f"cannot read {path}: {exc.strerror}", path=str(path)) from exc
        return self._qemu_io_read(path, offset, length)

    def _qemu_io_read(self, path: Path, offset: int, length: int) -> bytes:
        cmd = [_qemu_io(), "-r", "-U", "-f", "qcow2"]  # -U: readable while a VM runs on it
        for start in range(offset, offset + length, _READ_CHUNK):
            cmd += ["-c", f"read -v {start} {min(_READ_CHUNK, offset + length - start)}"]
        out = _run([*cmd, os.fspath(path)], timeout=self.tool_timeout, what=f"reading {path}", path=str(path))
        data = bytearray()
        for line in out.decode("ascii", errors="replace").splitlines():
            m = _HEX_LINE.match(line)
            if m:
                data += bytes.fromhex(m.group(1))
        if len(data) != length:
            raise TargetError(
                f"qemu-io returned {len(data)} bytes of {path}, expected {length}", path=str(path)
            )
        return bytes(data)

    def patch_disk(self, artifact: DiskArtifact, patches: list[tuple[int, bytes]]) -> DiskArtifact:
        """Write ``patches`` into the image in place and return ``artifact`` unchanged.

        Raw images are written with ``pwrite`` and fsynced; qcow2 images with ``qemu-io``,
        which fails (TargetError) while a running QEMU holds the image. Do it before
        ``power_on``: a raw image is not protected against a running guest.
        """
        path = self._image(artifact)
        for offset, data in patches:
            if offset < 0 or offset + len(data) > artifact.disk_size:
                raise InvalidInputError(
                    f"patch at {offset} (+{len(data)}) is outside the disk ({artifact.disk_size} bytes)",
                    offset=offset,
                )
        patches = [(o, bytes(d)) for o, d in patches if d]
        if not patches:
            return artifact
        if artifact.format == "raw":
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    for offset, data in patches:
                        view = memoryview(data)
                        while view:
                            n = os.pwrite(fd, view, offset)
                            view, offset = view[n:], offset + n
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise TargetError(f"cannot patch {path}: {exc.strerror}", path=str(path)) from exc
            return artifact
        with tempfile.TemporaryDirectory(prefix="lifeboat-patch-") as tmp:
            if re.search(r"\s", tmp):  # qemu-io splits its commands on white space
                raise TargetError(f"temporary directory {tmp!r} contains white space; set TMPDIR")
            cmd = [_qemu_io(), "-f", "qcow2"]
            for i, (offset, data) in enumerate(patches):
                src = Path(tmp) / f"patch{i}"
                src.write_bytes(data)
                cmd += ["-c", f"write -q -s {src} {offset} {len(data)}"]
            _run([*cmd, os.fspath(path)], timeout=self.tool_timeout, what=f"patching {path}", path=str(path))
        return artifact

    # --- InstanceLauncher --------------------------------------------------------------------
    def create_instance(self, spec: InstanceSpec, disks: list[DiskArtifact]) -> Instance:
        """Write the VM definition (boot disk first); state ``defined``.

        Raises :class:`InvalidInputError` for an unknown instance type, no or too many
        disks, a disk that is not one of this target's images, or a machine already defined.
        """
        cpus, memory = parse_instance_type(spec.instance_type)
        if not disks:
            raise InvalidInputError("a machine needs at least one disk", machine_id=spec.machine_id)
        if len(disks) > MAX_DISKS:
            raise InvalidInputError(f"the qemu target attaches at most {MAX_DISKS} disks, got {len(disks)}")
        images = [self._image(d) for d in disks]
        vm_dir = self._machine_dir(spec.run_id, spec.machine_id) / "vm"
        if vm_dir.exists():
            raise InvalidInputError(
                f"machine {spec.machine_id} of run {spec.run_id} is already defined in {vm_dir}; delete it first",
                vm_dir=str(vm_dir),
            )
        instance_id = f"{spec.run_id}.{spec.machine_id}"
        tags = self._tags(spec)
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
            "accel": self.accel,
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
            self._save_vm(vm_dir, vm)
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
        if self.cache is not None:
            return self.cache
        if fmt != "raw":
            return "writeback"
        try:  # tmpfs and some overlay file systems refuse O_DIRECT
            os.close(os.open(image, os.O_RDONLY | os.O_DIRECT))
        except OSError:
            return "writeback"
        return "none"

    def _command(self, vm: dict[str, Any], vm_dir: Path, sercon: Path) -> list[str]:
        cmd = [find_tool(QEMU_SYSTEM), "-name", f"guest={_opt(vm['name'] or vm['instance_id'])}"]
        cmd += ["-nodefaults", "-machine", "pc", "-accel", self.accel]
        cmd += ["-smp", str(vm["cpus"]), "-m", str(vm["memory_mib"]), "-rtc", "base=utc"]
        if vm.get("firmware") == "efi":
            code, variables = _ovmf(vm_dir)
            cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={_opt(code)}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={_opt(variables)}"]  # fmt: skip
        cmd += ["-vga", "std", "-display", "none", "-monitor", "none"]
        cmd += ["-chardev", f"file,id=serial0,path={_opt(vm['serial_log'])}", "-serial", "chardev:serial0"]
        # SeaBIOS reads the port as a little-endian integer; its messages then reach the log too
        # (QEMU warns that the name lacks the "opt/" prefix: the name is SeaBIOS's, not ours).
        cmd += ["-fw_cfg", f"name=etc/sercon-port,file={_opt(sercon)}"]
        cmd += ["-pidfile", vm["pidfile"], "-daemonize", "-boot", "strict=on"]
        if vm.get("qmp_socket"):
            cmd += ["-uuid", vm["uuid"], "-qmp", f"unix:{_opt(vm['qmp_socket'])},server=on,wait=off"]
        if self.no_reboot:
            cmd.append("-no-reboot")
        if len(vm["disks"]) > MAX_IDE_DISKS:
            cmd += ["-device", "ahci,id=ahci0"]
        for i, disk in enumerate(vm["disks"]):
            drive = (
                f"file={_opt(disk['path'])},format={disk['format']},if=none,id=disk{i},cache={disk['cache']}"
            )
            drive += ",discard=unmap,detect-zeroes=unmap"  # guest TRIM and zero writes keep the image sparse
            if i < MAX_IDE_DISKS:  # IDE: every guest OS has the driver
                device = f"ide-hd,drive=disk{i},bus=ide.{i // 2},unit={i % 2}"
            else:
                device = f"ide-hd,drive=disk{i},bus=ahci0.{i - MAX_IDE_DISKS}"
            cmd += ["-drive", drive, "-device", device + (",bootindex=0" if i == 0 else "")]
        for i, nic in enumerate(vm["nics"]):
            netdev = f"user,id=net{i},restrict={'on' if nic['restrict'] else 'off'}"
            netdev += "".join(f",{k}={_opt(v)}" for k, v in nic["user_net"].items())
            cmd += ["-netdev", netdev, "-device", f"{nic['model']},netdev=net{i},mac={nic['mac']},romfile="]
        return cmd

    def power_on(self, instance: Instance) -> Instance:
        """Start QEMU detached (``-daemonize``); state ``running``, resource ``qemu-process``.

        Powering on a machine whose QEMU is still running returns it unchanged.
        """
        vm_dir = self._vm_dir(instance)
        vm = self._load_vm(vm_dir)
        current = self._process_resource(instance)
        if current is not None and self._matches(current):
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
            _run(cmd, timeout=self.start_timeout, what=what, vm_dir=str(vm_dir))
            pid = self._wait_pidfile(pidfile)
            cmdline = _proc_cmdline(pid)
            if cmdline is None or os.fsencode(pidfile) not in cmdline.split(b"\0"):
                raise TargetError(
                    f"{what}: QEMU (pid {pid}) exited right after starting; see {vm['serial_log']}",
                    vm_dir=str(vm_dir),
                )
        except BaseException:
            self._stop_from_pidfile(pidfile)  # a daemon may exist even when the launcher failed
            raise
        process = Resource(
            type="qemu-process",
            id=str(pid),
            detail={
                "pidfile": str(pidfile),
                "cmdline_sha256": _fingerprint(cmdline),
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

    # --- NetworkMapper -----------------------------------------------------------------------
    def attach_networks(self, instance: Instance, nics: list[NicSpec]) -> Instance:
        """Define the machine's NICs (replacing any earlier ones); only before ``power_on``."""
        vm_dir = self._vm_dir(instance)
        if instance.state == "running":
            raise InvalidInputError(
                f"{instance.instance_id} is running: attach networks before power_on (no hot-plug)",
                instance_id=instance.instance_id,
            )
        vm = self._load_vm(vm_dir)
        defined = []
        for i, nic in enumerate(nics):
            defined.append(
                {
                    "model": "e1000",  # every guest OS has a driver for it
                    "mac": _mac(instance.instance_id, i),
                    "network": nic.network,
                    "source_network": nic.source_network,
                    "restrict": nic.isolated,
                    "private_ip": nic.private_ip,
                    "security_groups": list(nic.security_groups),
                    "user_net": _user_net(nic.private_ip),
                }
            )
        vm["nics"] = defined
        self._save_vm(vm_dir, vm)
        return instance.model_copy(
            update={
                "addresses": [n.private_ip or "dhcp" for n in nics],
                "detail": {
                    **instance.detail,
                    "nics": [
                        {"network": n["network"], "mac": n["mac"], "isolated": n["restrict"], "mode": "user"}
                        for n in defined
                    ],
                },
            }
        )

    # --- BootValidator -----------------------------------------------------------------------
    def validate(self, instance: Instance, spec: ValidationSpec) -> Evidence:
        """Follow the serial log for ``spec.marker``; without one, check the process stays up.

        Ends at the marker, a fail pattern, the process's exit or ``spec.timeout_seconds``.
        The log is read from its start, so a marker printed before the call counts.
        """
        vm_dir = self._vm_dir(instance)
        serial = Path(self._load_vm(vm_dir)["serial_log"])
        process = self._process_resource(instance)
        start = time.monotonic()
        method = "serial-marker" if spec.marker else "power-state"
        detail: dict[str, Any] = {"serial_log": str(serial)}

        def evidence(ok: bool, reason: str, serial_text: bytes | None = None, **extra: Any) -> Evidence:
            return Evidence(
                ok=ok,
                method=method,
                seconds=round(time.monotonic() - start, 3),
                excerpt=_excerpt(_tail(serial) if serial_text is None else serial_text),
                reason=reason,
                detail={**detail, **extra},
            )

        if process is None:
            return evidence(False, f"{instance.instance_id} is not powered on")
        detail["pid"] = int(process.id)
        if not spec.marker:
            deadline = start + min(self.settle_seconds, spec.timeout_seconds)
            while self._matches(process) and time.monotonic() < deadline:
                time.sleep(_POLL_S)
            with contextlib.suppress(FileNotFoundError):
                console = serial.read_bytes()[-_TAIL_BYTES:]
                failed = next((p for p in DEFAULT_FAIL_PATTERNS if p.encode() in console), None)
                if failed is not None:  # firmware keeps running after "No bootable device"
                    return evidence(
                        False, f"the console shows {failed!r}", serial_text=console, failed_on=failed
                    )
            if self._matches(process):
                return evidence(
                    True, f"qemu (pid {process.id}) still running after {time.monotonic() - start:.1f}s"
                )
            return evidence(False, f"qemu (pid {process.id}) is not running")
        return self._follow(serial, process, spec.marker, spec.timeout_seconds, start, evidence)

    def _follow(
        self,
        serial: Path,
        process: Resource,
        marker: str,
        timeout: float,
        start: float,
        evidence: Callable[..., Evidence],
    ) -> Evidence:
        want = marker.encode()
        fails = [p.encode() for p in DEFAULT_FAIL_PATTERNS]
        overlap = max(len(want), *(len(p) for p in fails)) - 1
        window = seen = b""  # seen: the last _TAIL_BYTES read, for an excerpt ending at the marker
        pos = 0
        deadline = start + timeout
        while True:
            alive = self._matches(process)  # before reading, so nothing written before death is missed
            chunk = b""
            with contextlib.suppress(FileNotFoundError), open(serial, "rb") as f:
                f.seek(pos)
                chunk = f.read(_READ_CHUNK)
            pos += len(chunk)
            window = window[-overlap:] + chunk
            seen = (seen + chunk)[-(_TAIL_BYTES + len(chunk)) :]
            now = time.monotonic()
            if want in window:
                # the excerpt ends with the marker's line, however much the guest printed since
                at = seen.find(want, max(0, len(seen) - len(chunk) - overlap))
                eol = seen.find(b"\n", at + len(want))
                return evidence(
                    True,
                    f"marker seen after {now - start:.1f}s",
                    serial_text=seen[: eol + 1 if eol >= 0 else len(seen)],
                    seconds_to_marker=round(now - start, 3),
                )
            hit = next((p for p in fails if p in window), None)
            if hit is not None:
                failed = hit.decode(errors="replace")
                return evidence(
                    False,
                    f"boot failed: {failed!r} on the console after {now - start:.1f}s",
                    failed_on=failed,
                )
            if not chunk and not alive:
                return evidence(
                    False, f"qemu (pid {process.id}) exited after {now - start:.1f}s without the marker"
                )
            if now >= deadline:
                return evidence(False, f"marker not seen within {timeout:g}s", timed_out=True)
            if not chunk:
                time.sleep(min(_POLL_S, max(0.0, deadline - now)))

    # --- Cleaner -----------------------------------------------------------------------------
    def delete(self, resource: Resource) -> bool:
        """Delete one resource; ``False`` if it was already gone (or its pid is another process's now)."""
        if resource.type == "qemu-process":
            return self._delete_process(resource)
        if resource.type in ("file", "qemu-vm"):
            path = self._inside(resource.id)
            if resource.type == "qemu-vm":
                self._stop_from_pidfile(path / "qemu.pid")
            if not path.exists() and not path.is_symlink():
                return False
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise TargetError(f"cannot delete {path}: {exc.strerror}", path=str(path)) from exc
            self._prune(path)
            return True
        raise InvalidInputError(f"the qemu target has no {resource.type!r} resources", type=resource.type)

    def _process_resource(self, instance: Instance) -> Resource | None:
        return next((r for r in reversed(instance.resources) if r.type == "qemu-process"), None)

    def _matches(self, process: Resource) -> bool:
        """True while ``process`` is alive and still the QEMU we started."""
        try:
            pid = int(process.id)
        except ValueError as exc:
            raise InvalidInputError(f"qemu-process id {process.id!r} is not a pid") from exc
        cmdline = _proc_cmdline(pid)
        return cmdline is not None and _fingerprint(cmdline) == process.detail.get("cmdline_sha256")

    def _delete_process(self, process: Resource) -> bool:
        if not process.detail.get("cmdline_sha256"):
            raise InvalidInputError(
                f"qemu-process {process.id} has no cmdline fingerprint; refusing to signal it"
            )
        if not self._matches(process):
            if _proc_cmdline(int(process.id)) is not None:
                log.warning("pid %s is no longer the recovered QEMU; leaving it alone", process.id)
            return False
        self._stop(int(process.id), lambda: self._matches(process))
        if process.detail.get("pidfile"):  # QEMU removes it on a clean exit, not after SIGKILL
            with contextlib.suppress(OSError, LifeboatError):
                self._inside(process.detail["pidfile"]).unlink(missing_ok=True)
        return True

    def _stop(self, pid: int, still_ours: Callable[[], bool]) -> None:
        """SIGTERM ``pid`` (QEMU shuts down cleanly), SIGKILL after the grace period; bounded."""
        for sig, wait in ((signal.SIGTERM, self.stop_grace), (signal.SIGKILL, 10.0)):
            if not still_ours():
                return
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            except OSError as exc:
                raise TargetError(f"cannot stop qemu (pid {pid}): {exc.strerror}", pid=pid) from exc
            deadline = time.monotonic() + wait
            while still_ours() and time.monotonic() < deadline:
                time.sleep(0.05)
        if still_ours():
            raise TargetError(f"qemu (pid {pid}) survived SIGKILL for 10s", pid=pid)

    def _stop_from_pidfile(self, pidfile: Path) -> None:
        """Stop a QEMU still running from ``pidfile`` (its cmdline names that pid file)."""
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return

        def still_ours() -> bool:
            cmdline = _proc_cmdline(pid)
            return cmdline is not None and os.fsencode(pidfile) in cmdline.split(b"\0")

        try:
            self._stop(pid, still_ours)
        except LifeboatError:
            log.exception("could not stop qemu from %s", pidfile)


def qemu_target(
    work_dir: Path | str, image_format: Literal["raw", "qcow2"] = "raw", **options: Any
) -> Target:
    """The local QEMU target as a :class:`Target` bundle (one object, all capabilities)."""
    target = QemuTarget(work_dir, image_format=image_format, **options)
    return Target(kind=KIND, disks=target, launcher=target, networks=target, validator=target, cleaner=target)
