"""Volume boot records (FAT and NTFS): the checks that decide whether BIOS boot code can chain to them.

A BIOS boot sector finds the rest of its loader through the BPB "hidden sectors" field (offset
28): the partition's start LBA. Imaging tools and partition moves leave it stale, and the boot
then stops with a disk read error. That is checked and patched here, for the partition the MBR
would boot.
"""

from __future__ import annotations

import struct

from node_runtime.recovery.osprep.models import Finding, PartitionInfo, Patch

HIDDEN_SECTORS_OFFSET = 28


def check_hidden_sectors(
    disk_index: int, partition: PartitionInfo, boot_sector: bytes, sector_size: int = 512
) -> tuple[list[Finding], list[Patch]]:
    """A patch when the FAT/NTFS boot sector's hidden-sector count is not the partition's start LBA."""
    if len(boot_sector) < 512 or partition.filesystem is None:
        return [], []
    if partition.filesystem.type not in ("fat12", "fat16", "fat32", "ntfs"):
        return [], []
    (hidden,) = struct.unpack_from("<I", boot_sector, HIDDEN_SECTORS_OFFSET)
    start_lba = partition.start // sector_size
    if hidden == start_lba:
        return [], []
    if start_lba > 0xFFFFFFFF:
        return [
            Finding(
                severity="warning",
                code="hidden_sectors_unfixable",
                message=f"partition {partition.number} starts beyond LBA 2^32; its boot sector cannot address it",
                disk_index=disk_index,
                partition=partition.number,
            )
        ], []
    reason = (
        f"partition {partition.number}: boot sector hidden-sector count is {hidden} but the partition "
        f"starts at LBA {start_lba}; BIOS boot code would read its loader from the wrong place"
    )
    finding = Finding(
        severity="warning",
        code="hidden_sectors_fixed",
        message=reason + "; a patch corrects it",
        disk_index=disk_index,
        partition=partition.number,
    )
    patch = Patch(
        disk_index=disk_index,
        offset=partition.start + HIDDEN_SECTORS_OFFSET,
        data_hex=struct.pack("<I", start_lba).hex(),
        original_hex=boot_sector[HIDDEN_SECTORS_OFFSET : HIDDEN_SECTORS_OFFSET + 4].hex(),
        reason=reason,
    )
    return [finding], [patch]


def check_ntfs_boot_sector(
    disk_index: int | None, partition: PartitionInfo, boot_sector: bytes
) -> list[Finding]:
    """Structural checks of an NTFS boot sector: signature, sector and cluster sizes, boot code."""
    findings: list[Finding] = []

    def add(severity: str, code: str, message: str) -> None:
        findings.append(
            Finding(
                severity=severity,  # type: ignore[arg-type]
                code=code,
                message=f"partition {partition.number} (NTFS): {message}",
                disk_index=disk_index,
                partition=partition.number,
            )
        )

    if boot_sector[510:512] != b"\x55\xaa":
        add(
            "error",
            "ntfs_no_signature",
            "boot sector has no 0x55AA signature; the volume cannot be booted from",
        )
    bps, spc = struct.unpack_from("<HB", boot_sector, 11)
    if bps not in (512, 1024, 2048, 4096):
        add("error", "ntfs_bad_bpb", f"{bps} bytes per sector is invalid")
    if not (spc <= 0x80 and spc and spc & (spc - 1) == 0) and not 0xF4 <= spc <= 0xFF:
        add("error", "ntfs_bad_bpb", f"sectors-per-cluster byte 0x{spc:02x} is invalid")
    (total,) = struct.unpack_from("<Q", boot_sector, 0x28)
    if bps and total * bps > partition.size:
        add(
            "error",
            "ntfs_larger_than_partition",
            f"the volume says it has {total * bps} bytes but the partition has {partition.size}",
        )
    if boot_sector[0x54:0x1FE] == bytes(0x1FE - 0x54):
        add(
            "warning",
            "ntfs_no_boot_code",
            "boot sector holds no boot code (a data volume, not the system volume)",
        )
    return findings


WINDOWS_DRIVERS = {
    "qemu": "atapi/intelide (IDE, which the QEMU target uses) or viostor/vioscsi with the virtio drivers",
    "aws": "AWSNVMe (storage) and ENA or AWS PV xennet (network), as AWS's EC2 driver packages install",
    "azure": "storvsc, netvsc and vmbus (Hyper-V integration services)",
}


def windows_driver_advice(platform: str) -> Finding:
    """An honest note that driver start types were not read, naming what to check on the source."""
    return Finding(
        severity="warning",
        code="windows_drivers_not_checked",
        message=(
            "Windows detected; the SYSTEM registry hive was not read, so the start type of the boot "
            f"drivers {platform} needs is unverified: make sure {WINDOWS_DRIVERS[platform]} are installed "
            "and set to boot start (Start=0) on the source before replication"
        ),
    )
