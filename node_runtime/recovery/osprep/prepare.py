"""Preparing a recovered machine's disks to boot on a platform: checks, findings and patches.

``disks[0]`` is the boot disk (the recovery flow orders disks that way). Nothing is written:
remediations come back as :class:`Patch` es for the caller to apply through its target.
"""

from __future__ import annotations

from node_runtime.recovery.osprep.inspect import FAT_TYPES, inspect_disk
from node_runtime.recovery.osprep.linux_boot import check_root, check_serial_console
from node_runtime.recovery.osprep.models import (
    PLATFORMS,
    DiskInspection,
    Finding,
    OsPreparation,
    PartitionInfo,
    Patch,
)
from node_runtime.recovery.osprep.partitions import (
    BIOS_BOOT_GUID,
    EXTENDED_TYPES,
    MBR_ENTRY_SIZE,
    MBR_TABLE_OFFSET,
)
from node_runtime.recovery.osprep.reader import CachedReader, ReadAt, read_at
from node_runtime.recovery.osprep.volume_boot import check_hidden_sectors, windows_driver_advice

#: boot code that chains to the active partition's boot sector (GRUB's boot.img does not)
CHAINING_MBR_CODE = ("syslinux", "windows", "unknown")
UEFI_FALLBACK = "EFI/BOOT/BOOTX64.EFI"

BOOT_MODE_NOTES = {
    ("qemu", "uefi"): "the QEMU target must start the machine with UEFI firmware (OVMF), not SeaBIOS",
    ("aws", "uefi"): "register the image with boot mode uefi (an instance type that supports UEFI)",
    ("aws", "bios"): "register the image with boot mode legacy-bios (x86-64 instance types)",
    ("azure", "uefi"): "create a Generation 2 VM (UEFI); Generation 1 cannot boot it",
    ("azure", "bios"): "create a Generation 1 VM (BIOS); Generation 2 cannot boot it",
}


def prepare(disks: list[tuple[ReadAt, int]], *, platform: str) -> OsPreparation:
    """Inspect every disk, check what ``platform`` needs to boot the machine, and propose patches.

    ``disks`` are ``(read, size)`` pairs, boot disk first. ``platform`` is qemu, aws or azure.
    Errors raised by a ``read`` propagate; malformed disks become findings.
    """
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}, not {platform!r}")
    if not disks:
        raise ValueError("prepare needs at least the boot disk")
    disks = [(CachedReader(read, size), size) for read, size in disks]
    inspections = [inspect_disk(read, size) for read, size in disks]
    findings: list[Finding] = []
    patches: list[Patch] = []
    for index, inspection in enumerate(inspections):
        for f in inspection.findings:
            f.disk_index = index
            if f.code == "bitlocker_volume" and index == 0:
                f.severity = "error"
        findings += inspection.findings
    boot = inspections[0]
    os_family = boot.os_family
    if os_family == "unknown":
        os_family = next((d.os_family for d in inspections if d.os_family != "unknown"), "unknown")

    boot_findings, boot_patches = _check_boot_disk(disks[0][0], disks[0][1], boot)
    findings += boot_findings
    patches += boot_patches

    if os_family == "linux":
        findings += _check_linux([read for read, _ in disks], inspections, platform, patches)
    elif os_family == "windows":
        findings.append(windows_driver_advice(platform).model_copy(update={"disk_index": 0}))
    else:
        findings.append(
            Finding(
                severity="warning",
                code="os_unknown",
                message="no operating system was recognised on the boot disk; nothing OS-specific was checked",
                disk_index=0,
            )
        )
    note = BOOT_MODE_NOTES.get((platform, boot.boot_mode))
    if note:
        findings.append(
            Finding(
                severity="info",
                code=f"boot_mode_{boot.boot_mode}",
                message=f"{boot.boot_mode.upper()} boot: {note}",
                disk_index=0,
            )
        )
    bootable = not any(f.severity == "error" and f.disk_index in (0, None) for f in findings)
    return OsPreparation(
        platform=platform,  # type: ignore[arg-type]
        os_family=os_family,
        boot_mode=boot.boot_mode,
        disks=inspections,
        findings=findings,
        patches=patches,
        bootable=bootable,
    )


def _finding(severity: str, code: str, message: str, partition: int | None = None) -> Finding:
    return Finding(severity=severity, code=code, message=message, disk_index=0, partition=partition)  # type: ignore[arg-type]


def _check_boot_disk(read: ReadAt, size: int, disk: DiskInspection) -> tuple[list[Finding], list[Patch]]:
    if disk.table == "none":
        if disk.whole_disk_filesystem and disk.boot_signature and disk.boot_loaders:
            return [], []
        return [
            _finding(
                "error",
                "no_boot_signature" if not disk.boot_signature else "not_bootable",
                "the boot disk has no partition table and no boot record (no 0x55AA signature at byte 510)"
                if not disk.boot_signature
                else "the boot disk has no partition table and its boot sector starts no known loader",
            )
        ], []
    if disk.table == "gpt":
        return _check_gpt_boot(disk), []
    return _check_mbr_boot(read, size, disk)


def _check_mbr_boot(read: ReadAt, size: int, disk: DiskInspection) -> tuple[list[Finding], list[Patch]]:
    findings: list[Finding] = []
    patches: list[Patch] = []
    esp = [p for p in disk.partitions if p.is_esp]
    if disk.mbr_boot_code == "empty":
        if esp:
            findings.append(
                _finding(
                    "info", "mbr_no_boot_code", "the MBR holds no boot code; the disk boots by UEFI only"
                )
            )
            findings += _check_esp(esp[0])
        else:
            findings.append(
                _finding(
                    "error",
                    "mbr_no_boot_code",
                    "the MBR boot code is all zero and there is no EFI system partition: BIOS firmware reports "
                    "no bootable device. Reinstall the boot loader on the source (grub-install / syslinux / bootsect)",
                )
            )
        return findings, patches
    parts = [p for p in disk.partitions if int(p.type, 16) not in EXTENDED_TYPES]
    active = [p for p in parts if p.active]
    if not active:
        target = _partition_to_activate(parts)
        if target is None:
            if disk.mbr_boot_code in CHAINING_MBR_CODE:
                findings.append(
                    _finding(
                        "error",
                        "no_active_partition",
                        "no partition is marked active and none looks bootable",
                    )
                )
            return findings, patches
        entry = MBR_TABLE_OFFSET + (target.number - 1) * MBR_ENTRY_SIZE
        why = (
            f"the {disk.mbr_boot_code} MBR boot code starts the active partition, and none is marked active"
            if disk.mbr_boot_code in CHAINING_MBR_CODE
            else "GRUB does not need it, but some BIOS firmware refuses a disk with no active partition"
        )
        reason = f"mark partition {target.number} ({target.type_name}) active: {why}"
        original = read_at(read, size, entry, 1)
        patches.append(
            Patch(disk_index=0, offset=entry, data_hex="80", original_hex=original.hex(), reason=reason)
        )
        findings.append(_finding("warning", "active_flag_set", reason, target.number))
        active = [target]
    if disk.mbr_boot_code in CHAINING_MBR_CODE and len(active) == 1:
        part = active[0]
        vbr = read_at(read, size, part.start, 512)
        if vbr[510:512] != b"\x55\xaa" or vbr[:440] == bytes(440):
            findings.append(
                _finding(
                    "error",
                    "active_partition_not_bootable",
                    f"the MBR boot code chains to active partition {part.number}, whose boot sector has no "
                    "boot code or no 0x55AA signature",
                    part.number,
                )
            )
        else:
            extra_findings, extra_patches = check_hidden_sectors(0, part, vbr, disk.sector_size)
            findings += extra_findings
            patches += extra_patches
    return findings, patches


def _partition_to_activate(parts: list[PartitionInfo]) -> PartitionInfo | None:
    """The partition holding the boot loader, else the first with a bootable-looking filesystem."""
    for p in parts:
        if p.boot_files:
            return p
    for p in parts:
        if p.filesystem and p.filesystem.type not in ("swap", "lvm2_pv", "bitlocker"):
            return p
    return None


def _check_gpt_boot(disk: DiskInspection) -> list[Finding]:
    esp = [p for p in disk.partitions if p.is_esp]
    if esp:
        return _check_esp(esp[0])
    if any(p.type == BIOS_BOOT_GUID for p in disk.partitions):
        if disk.mbr_boot_code in ("empty", "absent"):
            return [
                _finding(
                    "error",
                    "mbr_no_boot_code",
                    "GPT disk with a BIOS boot partition but no boot code in the protective MBR: "
                    "run grub-install on the source",
                )
            ]
        return []
    return [
        _finding(
            "error",
            "gpt_no_boot_partition",
            "GPT boot disk with neither an EFI system partition nor a BIOS boot partition",
        )
    ]


def _check_esp(esp: PartitionInfo) -> list[Finding]:
    fs = esp.filesystem
    if fs is None or fs.type not in FAT_TYPES:
        return [
            _finding(
                "error",
                "esp_not_fat",
                f"the EFI system partition {esp.number} holds {fs.type if fs else 'no recognised'} filesystem; "
                "UEFI firmware only reads FAT",
                esp.number,
            )
        ]
    efi_files = [f for f in esp.boot_files if f.lower().endswith(".efi")]
    if any(f.upper() == UEFI_FALLBACK for f in efi_files):
        return [
            _finding(
                "info", "uefi_fallback_present", f"the EFI system partition has {UEFI_FALLBACK}", esp.number
            )
        ]
    if efi_files:
        return [
            _finding(
                "warning",
                "uefi_fallback_missing",
                f"the EFI system partition has {', '.join(efi_files)} but no {UEFI_FALLBACK}; firmware boot "
                "entries (NVRAM) do not move with the disk, so a new VM only finds the fallback path. Copy the "
                "loader there (e.g. grub-install --removable, or bcdboot /f UEFI) on the source",
                esp.number,
            )
        ]
    return [
        _finding(
            "error", "uefi_no_loader", "the EFI system partition contains no EFI boot loader", esp.number
        )
    ]


def _check_linux(
    reads: list[ReadAt], inspections: list[DiskInspection], platform: str, patches: list[Patch]
) -> list[Finding]:
    findings: list[Finding] = []
    checked = False
    for index, disk in enumerate(inspections):
        for config in disk.boot_configs:
            if not config.cmdlines:
                continue
            checked = True
            console_findings, console_patches = check_serial_console(reads[index], index, config, platform)
            findings += console_findings
            patches += console_patches
            findings += check_root(index, config, platform, inspections)
    if not checked:
        findings.append(
            _finding(
                "info",
                "kernel_cmdline_not_checked",
                "no kernel command line was found on a FAT partition (GRUB's configuration usually lives in "
                "/boot on ext4 or XFS, which is not read): the serial console (console=ttyS0) and root= were "
                "not checked",
            )
        )
    return findings


__all__ = ["prepare"]
