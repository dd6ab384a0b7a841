"""The local KVM/QEMU recovery target: image files, a VM definition and a QEMU process.

One module per capability, each listing what it creates in ``resources`` as soon as it
exists: :mod:`.disks` (``write_disk``: ``file``), :mod:`.launch` (``create_instance``:
``qemu-vm``; ``power_on``: ``qemu-process``), :mod:`.network` (SLIRP NICs, nothing
created), :mod:`.validation` (serial console marker) and :mod:`.cleanup` (``delete``).
They share a :class:`QemuContext` (settings, the work directory's layout, ``vm.json``);
:mod:`.process` recognises and stops our QEMU processes.

Every external command runs under a timeout; every wait is bounded.
Debian packages: ``qemu-system-x86`` and ``qemu-utils`` (``qemu-img``, ``qemu-io``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from node_runtime.recovery.targets.base import CapabilitySet, Target
from node_runtime.recovery.targets.qemu.cleanup import QemuCleaner
from node_runtime.recovery.targets.qemu.common import KIND, QemuContext
from node_runtime.recovery.targets.qemu.disks import QemuDisks
from node_runtime.recovery.targets.qemu.launch import (
    DEFAULT_INSTANCE_TYPE,
    INSTANCE_TYPES,
    OVMF_PAIRS,
    QemuLauncher,
    parse_instance_type,
    qmp_socket_for,
)
from node_runtime.recovery.targets.qemu.network import QemuNetworks
from node_runtime.recovery.targets.qemu.validation import QemuValidator

__all__ = [
    "DEFAULT_INSTANCE_TYPE", "INSTANCE_TYPES", "KIND", "OVMF_PAIRS", "QemuCleaner", "QemuContext", "QemuDisks",
    "QemuLauncher", "QemuNetworks", "QemuTarget", "QemuValidator", "parse_instance_type", "qemu_target",
    "qmp_socket_for",
]  # fmt: skip


class QemuTarget(CapabilitySet):
    """The five QEMU capabilities over one :class:`QemuContext` (same arguments), callable as one.

    :meth:`target` is the :class:`Target` bundle; the capabilities' methods are also
    reachable here (``write_disk``, ``power_on``, ``delete``...) for tests and tools.
    """

    kind = KIND

    def __init__(self, work_dir: Path | str, **options: Any) -> None:
        """``options``: :class:`QemuContext`'s keyword arguments."""
        self.context = QemuContext(work_dir, **options)
        self.work_dir = self.context.work_dir
        self.disks = QemuDisks(self.context)
        self.launcher = QemuLauncher(self.context)
        self.networks = QemuNetworks(self.context)
        self.validator = QemuValidator(self.context)
        self.cleaner = QemuCleaner(self.context)


def qemu_target(
    work_dir: Path | str, image_format: Literal["raw", "qcow2"] = "raw", **options: Any
) -> Target:
    """The local QEMU target as a :class:`Target` bundle (one capability object each, one context)."""
    return QemuTarget(work_dir, image_format=image_format, **options).target()
