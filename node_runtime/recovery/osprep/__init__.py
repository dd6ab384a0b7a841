"""OS preparation for recovered disks: inspect partitions, filesystems and boot loaders, check
what the target platform needs to boot the machine, and propose byte patches that fix it.

Pure and target-independent: it reads through a ``(offset, length) -> bytes`` function, so it
runs the same on a local image, an EBS snapshot or a page blob, and it never writes.
"""

from node_runtime.recovery.osprep.inspect import inspect_disk
from node_runtime.recovery.osprep.models import (
    BootConfig,
    DiskInspection,
    FilesystemInfo,
    Finding,
    OsPreparation,
    PartitionInfo,
    Patch,
)
from node_runtime.recovery.osprep.prepare import prepare
from node_runtime.recovery.osprep.reader import ReadAt

__all__ = [
    "BootConfig",
    "DiskInspection",
    "FilesystemInfo",
    "Finding",
    "OsPreparation",
    "PartitionInfo",
    "Patch",
    "ReadAt",
    "inspect_disk",
    "prepare",
]
