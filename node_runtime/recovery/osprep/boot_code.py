"""Recognising boot code: the MBR's first 440 bytes and a volume's boot sector."""

from __future__ import annotations

MBR_CODE_SIZE = 440


def classify_mbr_code(sector0: bytes) -> str:
    """``empty``, ``grub``, ``syslinux``, ``windows`` or ``unknown`` for the MBR boot code area.

    By strings each loader carries: GRUB's boot.img says ``GRUB``; syslinux's mbr.bin/gptmbr.bin
    say ``Multiple active partitions``; the Windows (and DOS) MBR says ``Invalid partition table``.
    """
    code = sector0[:MBR_CODE_SIZE]
    if code == bytes(len(code)):
        return "empty"
    if b"GRUB" in code:
        return "grub"
    if b"Multiple active partitions" in code:
        return "syslinux"
    if b"Invalid partition table" in code:
        return "windows"
    return "unknown"


def volume_boot_loader(boot_sector: bytes) -> str | None:
    """The loader a volume boot record starts, judged by its OEM name and messages, or None."""
    oem = boot_sector[3:11]
    if oem in (b"SYSLINUX", b"EXTLINUX"):
        return oem.decode().lower()
    if b"BOOTMGR" in boot_sector or "BOOTMGR".encode("utf-16-le") in boot_sector:
        return "bootmgr"
    if b"NTLDR" in boot_sector:
        return "ntldr"
    return None
