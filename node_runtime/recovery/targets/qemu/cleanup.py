"""QEMU cleanup: deleting one resource of the target.

In reverse creation order: SIGTERM the process (only if its cmdline still matches),
SIGKILL after a grace period; remove the VM directory (stopping any QEMU still running
from it), remove the image files. Directories left empty are removed up to ``work_dir``.
Deleting something already gone answers ``False``; a path outside ``work_dir`` is refused
with :class:`~shared.errors.InvalidInputError`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil

from node_runtime.recovery.targets.base import Resource
from node_runtime.recovery.targets.qemu.common import QemuContext
from node_runtime.recovery.targets.qemu.process import matches, proc_cmdline, stop, stop_from_pidfile
from shared.errors import InvalidInputError, LifeboatError, TargetError

log = logging.getLogger(__name__)


class QemuCleaner:
    """The :class:`~node_runtime.recovery.targets.base.Cleaner` of the QEMU target."""

    def __init__(self, context: QemuContext) -> None:
        self.context = context

    def delete(self, resource: Resource) -> bool:
        """Delete one resource; ``False`` if it was already gone (or its pid is another process's now)."""
        ctx = self.context
        if resource.type == "qemu-process":
            return self._delete_process(resource)
        if resource.type in ("file", "qemu-vm"):
            path = ctx.inside(resource.id)
            if resource.type == "qemu-vm":
                stop_from_pidfile(path / "qemu.pid", ctx.stop_grace)
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
            ctx.prune(path)
            return True
        raise InvalidInputError(f"the qemu target has no {resource.type!r} resources", type=resource.type)

    def _delete_process(self, process: Resource) -> bool:
        if not process.detail.get("cmdline_sha256"):
            raise InvalidInputError(
                f"qemu-process {process.id} has no cmdline fingerprint; refusing to signal it"
            )
        if not matches(process):
            if proc_cmdline(int(process.id)) is not None:
                log.warning("pid %s is no longer the recovered QEMU; leaving it alone", process.id)
            return False
        stop(int(process.id), lambda: matches(process), self.context.stop_grace)
        if process.detail.get("pidfile"):  # QEMU removes it on a clean exit, not after SIGKILL
            with contextlib.suppress(OSError, LifeboatError):
                self.context.inside(process.detail["pidfile"]).unlink(missing_ok=True)
        return True
