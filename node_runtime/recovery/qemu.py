"""Boot a recovered disk image under QEMU and check that it reaches a marker on its serial console.

This is the local-hypervisor check of a recovery (test failover without a cloud): the
image is started with ``qemu-system-x86_64 -accel tcg`` (KVM is not assumed), its
first serial port is streamed to ``serial_log`` and searched for ``marker`` as a
substring. The run is bounded by a hard timeout: QEMU runs in its own process group,
which is terminated (then killed) when the marker is seen and the guest does not power
off by itself, when the timeout passes, or when the caller is interrupted.

Validation never changes the image: the drive is opened with ``snapshot=on`` (guest
writes go to a temporary overlay) unless ``snapshot=False``. The guest has no network
unless ``nics`` are given; those are user-mode NICs with ``restrict=on`` by default.

Debian packages: ``qemu-system-x86`` (boot) and ``qemu-utils`` (``qemu-img``).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from node_runtime.recovery.targets.serial_console import DEFAULT_FAIL_PATTERNS, EXCERPT_LINES, excerpt
from shared.errors import InvalidInputError, TargetError

ImageFormat = Literal["raw", "qcow2", "vmdk", "vpc", "vhdx"]
IMAGE_FORMATS: tuple[str, ...] = ("raw", "qcow2", "vmdk", "vpc", "vhdx")

QEMU_SYSTEM = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
QEMU_IO = "qemu-io"
_PACKAGES = {QEMU_SYSTEM: "qemu-system-x86", QEMU_IMG: "qemu-utils", QEMU_IO: "qemu-utils"}

_TAIL_BYTES = 64 << 10  # serial output kept in memory for the excerpt (all of it goes to the log)
_STOP_GRACE_S = 3.0  # SIGTERM -> SIGKILL


@dataclass(frozen=True)
class Nic:
    """A guest NIC on a QEMU user-mode network. ``restrict`` cuts it off from the host and outside."""

    model: str = "e1000"
    mac: str | None = None
    restrict: bool = True


@dataclass(frozen=True)
class BootResult:
    """What one validation boot showed.

    ``exit_code`` is QEMU's when it exited by itself (0 after a guest power-off), None
    when it had to be stopped (after the marker, a fail pattern or the timeout).
    ``log_excerpt`` is the last lines of the serial console, then QEMU's own error
    output if it wrote any.
    """

    ok: bool
    seconds_to_marker: float | None
    log_excerpt: str
    exit_code: int | None
    timed_out: bool = False
    failed_on: str | None = None
    seconds: float = 0.0

    @property
    def reason(self) -> str:
        if self.ok:
            return f"marker seen after {self.seconds_to_marker:.1f}s"
        if self.failed_on is not None:
            return f"boot failed: {self.failed_on!r} on the console after {self.seconds:.1f}s"
        if self.timed_out:
            return f"marker not seen within {self.seconds:.1f}s"
        return f"qemu exited with code {self.exit_code} after {self.seconds:.1f}s without the marker"


def find_tool(name: str) -> str:
    """Path of a QEMU tool on PATH, or a :class:`TargetError` naming the Debian package."""
    found = shutil.which(name)
    if not found:
        package = _PACKAGES.get(name, name)
        raise TargetError(
            f"{name} not found: install the Debian package {package!r} to boot or convert recovered disks locally",
            tool=name,
            package=package,
        )
    return found


def _check_format(fmt: str) -> None:
    if fmt not in IMAGE_FORMATS:
        raise InvalidInputError(
            f"unsupported image format {fmt!r}; expected one of {', '.join(IMAGE_FORMATS)}"
        )


def _opt(value: str | os.PathLike[str]) -> str:
    """Escape a value for a QEMU ``key=value,...`` option (commas are doubled)."""
    return os.fspath(value).replace(",", ",,")


def qemu_command(
    image: Path,
    *,
    fmt: str,
    memory_mib: int,
    nics: list[Nic] | None = None,
    snapshot: bool = True,
    qemu: str = QEMU_SYSTEM,
) -> list[str]:
    """The QEMU command line for one validation boot (serial console on stdout)."""
    drive = f"file={_opt(image)},format={fmt},if=ide" + (",snapshot=on" if snapshot else "")
    # -nographic also routes the firmware's (SeaBIOS) messages to the serial console.
    cmd = [qemu, "-accel", "tcg", "-m", str(memory_mib), "-nographic", "-serial", "stdio", "-monitor", "none"]
    cmd += ["-no-reboot", "-drive", drive]
    if not nics:
        return [*cmd, "-nic", "none"]
    for i, nic in enumerate(nics):
        netdev = f"user,id=net{i}" + (",restrict=on" if nic.restrict else "")
        device = f"{_opt(nic.model)},netdev=net{i},romfile="  # no PXE option ROM: boot from the disk only
        if nic.mac:
            device += f",mac={_opt(nic.mac)}"
        cmd += ["-netdev", netdev, "-device", device]
    return cmd


def boot_and_validate(
    image: Path,
    *,
    fmt: ImageFormat = "raw",
    marker: str,
    timeout_s: float,
    memory_mib: int = 256,
    serial_log: Path,
    nics: list[Nic] | None = None,
    fail_on: tuple[str, ...] = DEFAULT_FAIL_PATTERNS,
    linger_s: float = 5.0,
    snapshot: bool = True,
) -> BootResult:
    """Boot ``image`` and wait up to ``timeout_s`` for ``marker`` on its serial console.

    ``ok`` is True once the marker appears; QEMU then gets ``linger_s`` to exit by
    itself (a test disk powers off) before it is stopped. A line of ``fail_on`` on the
    console ends the run early with ``ok`` False. Raises :class:`TargetError` when QEMU
    is not installed and :class:`InvalidInputError` for a missing image or bad argument.
    """
    _check_format(fmt)
    if not marker:
        raise InvalidInputError("marker must not be empty")
    if timeout_s <= 0:
        raise InvalidInputError(f"timeout_s must be positive, got {timeout_s}")
    image = Path(image)
    if not image.is_file() and not image.is_block_device():
        raise InvalidInputError(f"boot image {image} does not exist", image=str(image))
    cmd = qemu_command(
        image, fmt=fmt, memory_mib=memory_mib, nics=nics, snapshot=snapshot, qemu=find_tool(QEMU_SYSTEM)
    )

    want = marker.encode()
    fails = [p.encode() for p in fail_on]
    overlap = max([len(want), *(len(p) for p in fails)]) - 1
    tail: deque[bytes] = deque()
    tail_len = 0
    window = b""
    found_at: float | None = None
    failed_on: str | None = None
    timed_out = False

    serial_log.parent.mkdir(parents=True, exist_ok=True)
    with open(serial_log, "wb") as log, tempfile.TemporaryFile() as stderr:
        start = time.monotonic()
        deadline = start + timeout_s
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,  # its own process group, killed as a whole
        )
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                while True:
                    now = time.monotonic()
                    stop_at = deadline if found_at is None else min(deadline, found_at + linger_s)
                    if now >= stop_at:
                        timed_out = found_at is None
                        break
                    if not sel.select(stop_at - now):
                        continue
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:  # QEMU closed its stdout: it has exited
                        break
                    log.write(chunk)
                    log.flush()
                    tail.append(chunk)
                    tail_len += len(chunk)
                    while tail_len - len(tail[0]) >= _TAIL_BYTES:
                        tail_len -= len(tail.popleft())
                    window = window[-overlap:] + chunk if overlap else chunk
                    if found_at is None and want in window:
                        found_at = time.monotonic()
                    elif found_at is None:
                        hit = next((p for p in fails if p in window), None)
                        if hit is not None:
                            failed_on = hit.decode(errors="replace")
                            break
        finally:
            exit_code = _stop(proc)
            proc.stdout.close()
        seconds = time.monotonic() - start
        stderr.seek(0)
        errors = stderr.read()

    return BootResult(
        ok=found_at is not None,
        seconds_to_marker=None if found_at is None else round(found_at - start, 3),
        log_excerpt=_excerpt(b"".join(tail), errors),
        exit_code=exit_code,
        timed_out=timed_out,
        failed_on=failed_on,
        seconds=round(seconds, 3),
    )


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    """QEMU's exit code if it exits by itself within a moment; else stop its process group
    (SIGTERM, then SIGKILL) and return None."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        return proc.wait(timeout=0.5)
    for sig, wait in ((signal.SIGTERM, _STOP_GRACE_S), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
            break
    return None


def _excerpt(serial: bytes, errors: bytes, lines: int = EXCERPT_LINES) -> str:
    out = excerpt(serial, lines)
    err = errors.decode("utf-8", errors="replace").strip()
    if err:
        out += "\nqemu: " + "\nqemu: ".join(err.splitlines()[-lines:])
    return out


def convert_image(
    src: Path,
    dst: Path,
    fmt: ImageFormat,
    *,
    src_fmt: ImageFormat = "raw",
    options: dict[str, str] | None = None,
    timeout: float = 3600.0,
) -> Path:
    """Convert ``src`` (``src_fmt``) to ``dst`` in ``fmt`` with ``qemu-img convert``.

    ``options`` become ``-o key=value,...`` (e.g. ``{"subformat": "fixed",
    "force_size": "on"}`` for an Azure VHD). A failed conversion (or one still running
    after ``timeout`` seconds, which is killed) leaves no ``dst``.
    """
    _check_format(fmt)
    _check_format(src_fmt)
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InvalidInputError(f"image {src} does not exist", image=str(src))
    cmd = [find_tool(QEMU_IMG), "convert", "-q", "-f", src_fmt, "-O", fmt]
    if options:
        cmd += ["-o", ",".join(f"{k}={_opt(v)}" for k, v in options.items())]
    cmd += [os.fspath(src), os.fspath(dst)]
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
        raise TargetError(f"qemu-img convert of {src} took over {timeout:.0f} s", src=str(src)) from exc
    if proc.returncode != 0:
        with contextlib.suppress(FileNotFoundError):
            dst.unlink()
        raise TargetError(
            f"qemu-img could not convert {src} to {fmt}: {proc.stderr.decode(errors='replace').strip()}",
            src=str(src),
            dst=str(dst),
            format=fmt,
        )
    return dst
