"""Several real QEMU VMs at once for the KVM inventory tests (over :class:`tests.support.kvm.KvmVm`):
each is stopped on exit whatever happened, and :func:`crash` kills one as a crash would."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kvm import KvmVm, MiB

__all__ = ["KvmVm", "MiB", "crash", "need_qemu", "qemu_vms"]


def need_qemu() -> None:
    """Skip (fail under CI) without QEMU: the KVM tests run against real VMs only."""
    missing = [b for b in ("qemu-system-x86_64", "qemu-img") if shutil.which(b) is None]
    if missing:
        problem = f"{', '.join(missing)} not found (apt-get install qemu-system-x86 qemu-utils)"
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)


def crash(vm: KvmVm) -> None:
    """SIGKILL the VM's QEMU (the pid from its pidfile) and wait until it is gone. Its QMP
    socket file stays behind, as after a real crash: connecting to it is refused."""
    pid = vm.pid
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    vm.pidfile.unlink(missing_ok=True)  # so stop() never signals a reused pid


@contextlib.contextmanager
def qemu_vms(*specs: tuple[str, list[int]]) -> Iterator[list[KvmVm]]:
    """Start one VM per ``(name, disk sizes in MiB)`` (qcow2 disks with test data); every
    VM started is stopped on exit (its pidfile), and its socket removed."""
    folder = Path(tempfile.mkdtemp(prefix="lbkvm-"))
    vms: list[KvmVm] = []
    try:
        for name, sizes in specs:
            vm = KvmVm(folder, name, [s * MiB for s in sizes])
            vms.append(vm)
            vm.start()
        yield vms
    finally:
        for vm in vms:
            vm.stop()
            vm.qmp_socket.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
