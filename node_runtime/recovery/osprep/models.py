"""What OS preparation reports: per-disk inspections, findings a person can act on, and patches.

Every model forbids unknown fields so a recovery-flow state can carry them as JSON unchanged.
Offsets are absolute byte offsets on the disk they name; partition numbers are 1-based, as
Linux (``sda1``) and ``sfdisk`` count them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["info", "warning", "error"]
OsFamily = Literal["linux", "windows", "unknown"]
BootMode = Literal["bios", "uefi", "unknown"]
Platform = Literal["qemu", "aws", "azure"]
PLATFORMS: tuple[str, ...] = ("qemu", "aws", "azure")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Finding(_Model):
    """One observation. ``error`` means the machine will not boot as it is; ``code`` is stable for UIs."""

    severity: Severity
    code: str
    message: str
    disk_index: int | None = None
    partition: int | None = None


class Patch(_Model):
    """Bytes to write at ``offset`` on disk ``disk_index`` before the first boot.

    ``original_hex`` holds the bytes the inspection read there: a caller SHOULD check the disk
    still holds them before writing, so a patch is never applied twice or to another disk.
    """

    disk_index: int
    offset: int = Field(ge=0)
    data_hex: str
    original_hex: str
    reason: str

    @property
    def data(self) -> bytes:
        return bytes.fromhex(self.data_hex)

    @property
    def original(self) -> bytes:
        return bytes.fromhex(self.original_hex)


class FilesystemInfo(_Model):
    """What a superblock says. ``type`` is one of fat12, fat16, fat32, exfat, ext2, ext3, ext4, xfs,
    ntfs, swap, lvm2_pv, bitlocker."""

    type: str
    label: str | None = None
    uuid: str | None = None
    features: list[str] = Field(default_factory=list)


class BootConfig(_Model):
    """A boot-loader configuration file read from a FAT partition, with where its bytes live."""

    partition: int
    path: str
    loader: Literal["syslinux", "extlinux", "grub", "systemd-boot"]
    text: str
    #: kernel command lines, one per boot entry that loads a Linux kernel
    cmdlines: list[str] = Field(default_factory=list)
    size: int
    #: bytes the file's clusters hold (size rounded up to the cluster size)
    allocated: int
    #: absolute disk offsets of the file's cluster runs, as (offset, length) pairs in file order
    extents: list[tuple[int, int]] = Field(default_factory=list)
    #: absolute disk offset of the file's 32-byte short directory entry (size field at +28)
    dirent_offset: int | None = None


class PartitionInfo(_Model):
    number: int
    scheme: Literal["mbr", "gpt"]
    start: int
    size: int
    #: MBR: the type byte as ``0x83``; GPT: the type GUID, lower case
    type: str
    type_name: str
    active: bool = False
    name: str | None = None
    #: GPT unique partition GUID (what ``PARTUUID=`` names), or ``<disk signature>-<NN>`` on MBR
    partuuid: str | None = None
    is_esp: bool = False
    filesystem: FilesystemInfo | None = None
    #: boot-loader files and markers seen on this partition (e.g. ``ldlinux.sys``, ``EFI/BOOT/BOOTX64.EFI``)
    boot_files: list[str] = Field(default_factory=list)


class DiskInspection(_Model):
    size: int
    sector_size: int = 512
    table: Literal["mbr", "gpt", "none"]
    boot_signature: bool
    #: what the first 440 bytes look like: empty, syslinux, grub, windows, unknown (non-zero, unrecognised)
    mbr_boot_code: Literal["empty", "syslinux", "grub", "windows", "unknown", "absent"]
    disk_signature: str | None = None
    disk_guid: str | None = None
    partitions: list[PartitionInfo] = Field(default_factory=list)
    #: a filesystem found at offset 0 of a disk without a partition table
    whole_disk_filesystem: FilesystemInfo | None = None
    boot_loaders: list[str] = Field(default_factory=list)
    boot_configs: list[BootConfig] = Field(default_factory=list)
    os_family: OsFamily = "unknown"
    boot_mode: BootMode = "unknown"
    findings: list[Finding] = Field(default_factory=list)


class OsPreparation(_Model):
    """The result of :func:`prepare`. ``disks[0]`` is the boot disk; ``bootable`` is False when any
    finding of severity ``error`` concerns the boot disk or the machine as a whole."""

    platform: Platform
    os_family: OsFamily
    boot_mode: BootMode
    disks: list[DiskInspection]
    findings: list[Finding]
    patches: list[Patch]
    bootable: bool
