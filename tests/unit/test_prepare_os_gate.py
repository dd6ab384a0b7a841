"""Which recovered disks are worth a libguestfs appliance (pure: byte-level inspections in)."""

from __future__ import annotations

from functions.recovery.prepare_os import _may_hold_os
from node_runtime.recovery.osprep import DiskInspection, FilesystemInfo, PartitionInfo


def _disk(*types: str | None, whole: str | None = None) -> DiskInspection:
    parts = [PartitionInfo(number=i, scheme="mbr", start=i << 20, size=1 << 20, type="0x83", type_name="Linux",
                           filesystem=FilesystemInfo(type=t) if t else None) for i, t in enumerate(types, start=1)]  # fmt: skip
    return DiskInspection(size=8 << 20, table="mbr" if parts else "none", boot_signature=bool(parts),
                          mbr_boot_code="empty", partitions=parts,
                          whole_disk_filesystem=FilesystemInfo(type=whole) if whole else None)  # fmt: skip


def test_disks_without_an_os_file_system_skip_the_appliance() -> None:
    assert not _may_hold_os([_disk()])  # random data: no table, no file system
    assert not _may_hold_os([_disk("fat32", "swap")])  # a FAT boot partition and swap only
    assert not _may_hold_os([_disk(whole="fat16"), _disk("exfat")])


def test_os_file_systems_and_unnamed_partitions_go_to_the_appliance() -> None:
    assert _may_hold_os([_disk("fat32"), _disk("ext4")])  # the second disk counts too
    assert (
        _may_hold_os([_disk("ntfs")])
        and _may_hold_os([_disk("lvm2_pv")])
        and _may_hold_os([_disk(whole="xfs")])
    )
    assert _may_hold_os([_disk("fat32", None)])  # LUKS, btrfs, ZFS…: byte-level inspection cannot name them
