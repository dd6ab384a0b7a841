"""Inspecting one disk: partition table, filesystems, boot loaders, boot configuration, OS family."""

from __future__ import annotations

from node_runtime.recovery.osprep.boot_code import classify_mbr_code, volume_boot_loader
from node_runtime.recovery.osprep.fat_files import FAT_DAMAGE, FatVolume
from node_runtime.recovery.osprep.filesystems import probe_filesystem
from node_runtime.recovery.osprep.linux_boot import find_boot_configs
from node_runtime.recovery.osprep.models import (
    BootConfig,
    BootMode,
    DiskInspection,
    Finding,
    OsFamily,
    PartitionInfo,
)
from node_runtime.recovery.osprep.partitions import BIOS_BOOT_GUID, EXTENDED_TYPES, read_partition_table
from node_runtime.recovery.osprep.reader import CachedReader, ReadAt, read_at
from node_runtime.recovery.osprep.volume_boot import check_ntfs_boot_sector

FAT_TYPES = ("fat12", "fat16", "fat32")
LINUX_FS = ("ext2", "ext3", "ext4", "xfs", "swap", "lvm2_pv")
#: files whose presence on a FAT partition says which loader boots from it
FAT_BOOT_FILES = (
    "ldlinux.sys",
    "syslinux/ldlinux.sys",
    "boot/syslinux/ldlinux.sys",
    "extlinux/ldlinux.sys",
    "EFI/BOOT/BOOTX64.EFI",
    "EFI/BOOT/BOOTIA32.EFI",
    "EFI/BOOT/BOOTAA64.EFI",
    "EFI/Microsoft/Boot/bootmgfw.efi",
    "bootmgr",
    "loader/loader.conf",
)
EFI_LOADER_NAMES = ("grubx64.efi", "shimx64.efi", "systemd-bootx64.efi")


def inspect_disk(read: ReadAt, size: int) -> DiskInspection:
    """Everything that can be learnt about one disk by reading it, without changing it.

    Malformed structures become findings (never exceptions); errors raised by ``read`` propagate.
    Findings here carry no ``disk_index``: :func:`prepare` adds it. Reads go through a small
    block cache, so ``read`` sees aligned 64 KiB requests rather than many tiny ones.
    """
    if not isinstance(read, CachedReader):
        read = CachedReader(read, size)
    sector0 = read_at(read, size, 0, 512)
    whole = probe_filesystem(read, size, 0, size) if len(sector0) == 512 else None
    findings: list[Finding] = []
    if whole is not None:
        inspection = DiskInspection(
            size=size,
            table="none",
            boot_signature=sector0[510:512] == b"\x55\xaa",
            mbr_boot_code="absent",
            whole_disk_filesystem=whole,
        )
        findings.append(
            Finding(
                severity="info",
                code="whole_disk_filesystem",
                message=f"no partition table: a {whole.type} filesystem starts at byte 0 of the disk",
            )
        )
        loader = volume_boot_loader(sector0)
        if loader:
            inspection.boot_loaders.append(loader)
        if whole.type in FAT_TYPES:
            part = PartitionInfo(
                number=0,
                scheme="mbr",
                start=0,
                size=size,
                type="none",
                type_name="whole disk",
                filesystem=whole,
            )
            inspection.boot_configs = _inspect_fat(read, size, part, findings)
            inspection.boot_loaders += _loaders_from_files(part.boot_files, inspection.boot_configs)
        _check_encrypted(whole.type, None, findings)
    else:
        table = read_partition_table(read, size)
        findings += table.findings
        inspection = DiskInspection(
            size=size,
            sector_size=table.sector_size,
            table=table.scheme,  # type: ignore[arg-type]
            boot_signature=table.boot_signature,
            mbr_boot_code=classify_mbr_code(sector0) if table.boot_signature else "absent",  # type: ignore[arg-type]
            disk_signature=table.disk_signature,
            disk_guid=table.disk_guid,
            partitions=table.partitions,
        )
        if inspection.mbr_boot_code not in ("empty", "unknown", "absent"):
            inspection.boot_loaders.append(inspection.mbr_boot_code)
        if table.scheme == "none" and size >= 512:
            findings.append(
                Finding(
                    severity="info",
                    code="no_partition_table",
                    message="no partition table (no 0x55AA signature) and no known filesystem at byte 0: "
                    "an empty or unformatted disk",
                )
            )
        for part in inspection.partitions:
            _inspect_partition(read, size, part, inspection, findings)
    inspection.findings = findings
    inspection.os_family = _os_family(inspection)
    inspection.boot_mode = _boot_mode(inspection)
    return inspection


def _inspect_partition(
    read: ReadAt, size: int, part: PartitionInfo, inspection: DiskInspection, findings: list[Finding]
) -> None:
    if part.scheme == "mbr" and int(part.type, 16) in EXTENDED_TYPES:
        return  # a container of logical partitions; those are not walked
    if part.start >= size:
        return  # already reported as past the end
    part.filesystem = probe_filesystem(read, size, part.start, part.size)
    fs = part.filesystem
    if fs is None:
        return
    _check_encrypted(fs.type, part.number, findings)
    boot_sector = read_at(read, size, part.start, 512)
    loader = volume_boot_loader(boot_sector) if fs.type in (*FAT_TYPES, "ntfs") else None
    if loader:
        part.boot_files.append(f"{loader} (boot sector)")
    if fs.type == "ntfs":
        findings.extend(check_ntfs_boot_sector(None, part, boot_sector))
    if fs.type in FAT_TYPES:
        configs = _inspect_fat(read, size, part, findings)
        inspection.boot_configs += configs
        for name in _loaders_from_files(part.boot_files, configs):
            if name not in inspection.boot_loaders:
                inspection.boot_loaders.append(name)
    elif loader and loader not in inspection.boot_loaders:
        inspection.boot_loaders.append(loader)


def _inspect_fat(read: ReadAt, size: int, part: PartitionInfo, findings: list[Finding]) -> list[BootConfig]:
    try:
        volume = FatVolume(read, part.start, min(part.size, size - part.start))
        for path in FAT_BOOT_FILES:
            if volume.exists(path):
                part.boot_files.append(path)
        for vendor in volume.listdir("EFI"):
            for name in volume.listdir(f"EFI/{vendor}"):
                if name.lower() in EFI_LOADER_NAMES:
                    part.boot_files.append(f"EFI/{vendor}/{name}")
        return find_boot_configs(volume, part.number)
    except FAT_DAMAGE as exc:
        findings.append(
            Finding(
                severity="warning",
                code="fat_unreadable",
                message=f"the {part.filesystem.type if part.filesystem else 'FAT'} filesystem on partition "
                f"{part.number} could not be read ({type(exc).__name__}: {exc}); its boot files were not checked",
                partition=part.number or None,
            )
        )
        return []


def _loaders_from_files(files: list[str], configs: list[BootConfig]) -> list[str]:
    names: list[str] = []
    lowered = [f.lower() for f in files]
    if any(f.endswith("ldlinux.sys") or f.startswith("syslinux") for f in lowered):
        names.append("syslinux")
    if any(f.startswith("extlinux") for f in lowered):
        names.append("extlinux")
    if any("grub" in f or "shim" in f for f in lowered) or any(c.loader == "grub" for c in configs):
        names.append("grub")
    if any(f.startswith("loader/") or "systemd-boot" in f for f in lowered):
        names.append("systemd-boot")
    if any("bootmgfw.efi" in f or f.startswith("bootmgr") for f in lowered):
        names.append("bootmgr")
    return names


def _check_encrypted(fs_type: str, partition: int | None, findings: list[Finding]) -> None:
    if fs_type == "bitlocker":
        where = f"partition {partition}" if partition else "the disk"
        findings.append(
            Finding(
                severity="warning",
                code="bitlocker_volume",
                message=f"{where} is a BitLocker-encrypted volume: it cannot be inspected or prepared, and "
                "without the source's TPM Windows stops at the recovery-key screen; suspend BitLocker "
                "(manage-bde -protectors -disable) on the source before replication",
                partition=partition,
            )
        )


def _os_family(inspection: DiskInspection) -> OsFamily:
    parts = inspection.partitions
    filesystems = [p.filesystem.type for p in parts if p.filesystem]
    if inspection.whole_disk_filesystem:
        filesystems.append(inspection.whole_disk_filesystem.type)
    loaders = inspection.boot_loaders
    windows = ("bootmgr" in loaders or "ntldr" in loaders) or (
        inspection.mbr_boot_code == "windows" and any(t in ("ntfs", "bitlocker") for t in filesystems)
    )
    linux = (
        any(t in LINUX_FS for t in filesystems)
        or any(c.cmdlines for c in inspection.boot_configs)
        or any(name in loaders for name in ("syslinux", "extlinux", "grub", "systemd-boot"))
    )
    if windows and linux:
        if inspection.mbr_boot_code == "windows":
            return "windows"
        if inspection.mbr_boot_code in ("grub", "syslinux"):
            return "linux"
        inspection.findings.append(
            Finding(
                severity="info",
                code="multiple_operating_systems",
                message="both Windows and Linux boot files are present; the OS family is left unknown",
            )
        )
        return "unknown"
    return "windows" if windows else "linux" if linux else "unknown"


def _boot_mode(inspection: DiskInspection) -> BootMode:
    esp = [p for p in inspection.partitions if p.is_esp]
    has_code = inspection.mbr_boot_code not in ("empty", "absent")
    if inspection.table == "gpt":
        if esp:
            return "uefi"
        if any(p.type == BIOS_BOOT_GUID for p in inspection.partitions) and has_code:
            return "bios"
        return "unknown"
    if inspection.table == "mbr":
        if has_code:
            return "bios"
        return "uefi" if esp else "unknown"
    whole = inspection.whole_disk_filesystem
    if whole and inspection.boot_signature and inspection.boot_loaders:
        return "bios"
    return "unknown"
