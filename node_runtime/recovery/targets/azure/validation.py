"""Boot validation on Azure (BootValidator): status checks, then the boot-diagnostics serial log.

The same rules as on QEMU: with a marker, the guest booted once the marker is on the
serial console; a fail pattern (``No bootable device``, ``Kernel panic``) there ends the
wait as a failure, as does a VM that failed to provision or stopped before the marker,
and so does the timeout. Without a marker, a VM that provisioned, runs and shows no fail
pattern passes. Azure refreshes the serial log every few minutes, not live: allow for it
in the timeout. The evidence carries the VM's statuses, how much of the log was read,
and the seconds each stage took (disk import, NIC, VM create, boot).
"""

from __future__ import annotations

from typing import Any

from node_runtime.recovery.qemu import DEFAULT_FAIL_PATTERNS
from node_runtime.recovery.targets.azure.compute import VmView
from node_runtime.recovery.targets.azure.context import AzureContext, fields_of
from node_runtime.recovery.targets.azure.launch import healthy
from node_runtime.recovery.targets.base import Evidence, Instance, ValidationSpec

_EXCERPT = 2000


class AzureValidator:
    def __init__(self, ctx: AzureContext) -> None:
        self.ctx = ctx

    def validate(self, instance: Instance, spec: ValidationSpec) -> Evidence:
        """Poll the VM's statuses and serial log until a verdict or ``spec.timeout_seconds``."""
        ctx = self.ctx
        start = ctx.clock()
        deadline = start + spec.timeout_seconds
        detail: dict[str, Any] = {"timings": dict(instance.detail.get("timings", {}))}
        method = "serial-marker" if spec.marker else "status-checks"

        def verdict(ok: bool, reason: str, serial: str, view: VmView, excerpt: str | None = None,
                    **extra: Any) -> Evidence:  # fmt: skip
            seconds = round(ctx.clock() - start, 3)
            detail["timings"]["boot"] = seconds
            detail.update(provisioning_state=view.provisioning_state, power_state=view.power_state,
                          statuses=list(view.statuses), serial_bytes=len(serial), **extra)  # fmt: skip
            if excerpt is None:
                excerpt = serial[-_EXCERPT:] if serial else ", ".join(view.statuses)
            return Evidence(
                ok=ok, method=method, seconds=seconds, excerpt=excerpt, reason=reason, detail=detail
            )

        serial = ""
        while True:
            view = ctx.poll(lambda: ctx.compute.instance_view(instance.instance_id), deadline, lambda v: True)
            try:
                serial = ctx.compute.serial_log(instance.instance_id)
            except Exception as exc:
                if fields_of(exc).get("code") == "BootDiagnosticsDisabled":
                    return verdict(False, "boot diagnostics are off: no serial log to validate", "", view)
                if not fields_of(exc).get("transient"):
                    raise
            now = ctx.clock()
            if spec.marker and spec.marker in serial:
                return verdict(True, f"marker seen after {now - start:.1f}s", serial, view,
                               excerpt=_up_to_line_of(serial, spec.marker), seconds_to_marker=round(now - start, 3))  # fmt: skip
            failed = next((p for p in DEFAULT_FAIL_PATTERNS if p in serial), None)
            if failed is not None:
                return verdict(
                    False, f"boot failed: {failed!r} on the serial console", serial, view, failed_on=failed
                )
            if view.provisioning_state == "failed" or view.power_state in ("stopped", "deallocated"):
                state = view.power_state or "not started"
                return verdict(False, f"VM is {state} (provisioning {view.provisioning_state})", serial, view)
            if not spec.marker and healthy(view):
                return verdict(
                    True, "VM provisioned and running", serial, view, excerpt=", ".join(view.statuses)
                )
            if now >= deadline:
                what = (
                    f"marker {spec.marker!r} not on the serial console" if spec.marker else "VM not running"
                )
                return verdict(False, f"{what} within {spec.timeout_seconds}s", serial, view, timed_out=True)
            ctx.sleep(max(0.0, min(ctx.poll_interval, deadline - now)))


def _up_to_line_of(serial: str, marker: str) -> str:
    """The lines before and including the marker's, at most :data:`_EXCERPT` characters."""
    end = serial.find("\n", serial.index(marker))
    end = len(serial) if end < 0 else end
    return serial[max(0, end - _EXCERPT) : end]
