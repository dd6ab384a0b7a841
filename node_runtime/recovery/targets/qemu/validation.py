"""QEMU boot validation, on the guest's serial console.

With a marker, ``serial.log`` is followed until the marker, a fail pattern (both judged
by :mod:`~node_runtime.recovery.targets.serial_console`), the process's death or the
timeout: evidence ``serial-marker``. Without a marker: the process is still alive after
``settle_seconds`` and the console shows no fail pattern (``power-state``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node_runtime.recovery.targets.base import Evidence, Instance, Resource, ValidationSpec
from node_runtime.recovery.targets.qemu.common import READ_CHUNK, QemuContext
from node_runtime.recovery.targets.qemu.process import matches, process_resource
from node_runtime.recovery.targets.serial_console import TAIL_BYTES, ConsoleWatch, excerpt, judge

_POLL_S = 0.2


def _tail(path: Path, size: int = TAIL_BYTES) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - size))
            return f.read(size)
    except OSError:
        return b""


class QemuValidator:
    """The :class:`~node_runtime.recovery.targets.base.BootValidator` of the QEMU target."""

    def __init__(self, context: QemuContext) -> None:
        self.context = context

    def validate(self, instance: Instance, spec: ValidationSpec) -> Evidence:
        """Follow the serial log for ``spec.marker``; without one, check the process stays up.

        Ends at the marker, a fail pattern, the process's exit or ``spec.timeout_seconds``.
        The log is read from its start, so a marker printed before the call counts.
        """
        ctx = self.context
        vm_dir = ctx.vm_dir(instance)
        serial = Path(ctx.load_vm(vm_dir)["serial_log"])
        process = process_resource(instance)
        start = time.monotonic()
        method = "serial-marker" if spec.marker else "power-state"
        detail: dict[str, Any] = {"serial_log": str(serial)}

        def evidence(ok: bool, reason: str, serial_text: bytes | None = None, **extra: Any) -> Evidence:
            return Evidence(
                ok=ok,
                method=method,
                seconds=round(time.monotonic() - start, 3),
                excerpt=excerpt(_tail(serial) if serial_text is None else serial_text),
                reason=reason,
                detail={**detail, **extra},
            )

        if process is None:
            return evidence(False, f"{instance.instance_id} is not powered on")
        detail["pid"] = int(process.id)
        if not spec.marker:
            deadline = start + min(ctx.settle_seconds, spec.timeout_seconds)
            while matches(process) and time.monotonic() < deadline:
                time.sleep(_POLL_S)
            with contextlib.suppress(FileNotFoundError):
                console = serial.read_bytes()[-TAIL_BYTES:]
                failed = judge(console, None).failed_on
                if failed is not None:  # firmware keeps running after "No bootable device"
                    return evidence(
                        False, f"the console shows {failed!r}", serial_text=console, failed_on=failed
                    )
            if matches(process):
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
        watch = ConsoleWatch(marker)  # keeps the last TAIL_BYTES read, for an excerpt ending at the marker
        pos = 0
        deadline = start + timeout
        while True:
            alive = matches(process)  # before reading, so nothing written before death is missed
            chunk = b""
            with contextlib.suppress(FileNotFoundError), open(serial, "rb") as f:
                f.seek(pos)
                chunk = f.read(READ_CHUNK)
            pos += len(chunk)
            verdict = watch.feed(chunk)
            now = time.monotonic()
            if verdict.marker_seen:
                return evidence(
                    True,
                    f"marker seen after {now - start:.1f}s",
                    serial_text=verdict.console,
                    seconds_to_marker=round(now - start, 3),
                )
            if verdict.failed_on is not None:
                return evidence(
                    False,
                    f"boot failed: {verdict.failed_on!r} on the console after {now - start:.1f}s",
                    failed_on=verdict.failed_on,
                )
            if not chunk and not alive:
                return evidence(
                    False, f"qemu (pid {process.id}) exited after {now - start:.1f}s without the marker"
                )
            if now >= deadline:
                return evidence(False, f"marker not seen within {timeout:g}s", timed_out=True)
            if not chunk:
                time.sleep(min(_POLL_S, max(0.0, deadline - now)))
