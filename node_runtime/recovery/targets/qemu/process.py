"""The recovered machines' QEMU processes: recognising ours, and stopping them.

A ``qemu-process`` resource's id is the pid; its detail holds the pid file and a SHA-256
of ``/proc/<pid>/cmdline``, so a reused pid is never signalled. Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from node_runtime.recovery.targets.base import Instance, Resource
from shared.errors import InvalidInputError, LifeboatError, TargetError

log = logging.getLogger(__name__)


def proc_cmdline(pid: int) -> bytes | None:
    """``/proc/<pid>/cmdline``, or None when there is no such live process (gone or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        if stat.rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return None


def fingerprint(cmdline: bytes) -> str:
    return hashlib.sha256(cmdline).hexdigest()


def process_resource(instance: Instance) -> Resource | None:
    """The instance's newest ``qemu-process`` resource, if it was powered on."""
    return next((r for r in reversed(instance.resources) if r.type == "qemu-process"), None)


def matches(process: Resource) -> bool:
    """True while ``process`` is alive and still the QEMU we started."""
    try:
        pid = int(process.id)
    except ValueError as exc:
        raise InvalidInputError(f"qemu-process id {process.id!r} is not a pid") from exc
    cmdline = proc_cmdline(pid)
    return cmdline is not None and fingerprint(cmdline) == process.detail.get("cmdline_sha256")


def stop(pid: int, still_ours: Callable[[], bool], grace: float) -> None:
    """SIGTERM ``pid`` (QEMU shuts down cleanly), SIGKILL after ``grace`` seconds; bounded."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
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


def stop_from_pidfile(pidfile: Path, grace: float) -> None:
    """Stop a QEMU still running from ``pidfile`` (its cmdline names that pid file); failures are logged."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return

    def still_ours() -> bool:
        cmdline = proc_cmdline(pid)
        return cmdline is not None and os.fsencode(pidfile) in cmdline.split(b"\0")

    try:
        stop(pid, still_ours, grace)
    except LifeboatError:
        log.exception("could not stop qemu from %s", pidfile)
