"""A machine's virtual hardware as captured with a recovery point (and used by recovery)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Firmware(StrEnum):
    BIOS = "bios"
    EFI = "efi"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NicProfile(_Part):
    network: str = Field(default="", max_length=256, description="Source network / port group name.")
    mac: str = Field(default="", max_length=32)
    adapter: str = Field(default="", max_length=64, description="e.g. vmxnet3, e1000e, virtio.")


class DiskProfile(_Part):
    source: str = Field(max_length=1024, description="The disk's source reference in the plan.")
    capacity_bytes: int = Field(ge=0)
    bus: str = Field(default="", max_length=32, description="scsi, sata, ide, nvme, virtio.")
    controller: str = Field(default="", max_length=64, description="e.g. pvscsi, lsilogic.")
    unit: int = Field(default=0, ge=0, description="Position on its controller.")


class HardwareProfile(_Part):
    """CPUs, memory, firmware, NICs and disks in boot order (the first disk boots)."""

    cpus: int = Field(default=1, ge=1, le=768)
    memory_mb: int = Field(default=1024, ge=4, le=24 * 1024 * 1024)
    firmware: Firmware = Firmware.BIOS
    guest_os: str = Field(default="", max_length=128, description="e.g. vSphere guestId.")
    nics: list[NicProfile] = Field(default_factory=list, max_length=16)
    disks: list[DiskProfile] = Field(default_factory=list, max_length=64)
