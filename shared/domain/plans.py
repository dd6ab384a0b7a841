"""Protection plans: what to protect, how often, how long to keep it, and how to recover it."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.domain.base import Name, NetworkRef, Record, Slug
from shared.domain.vsphere import DISK_SOURCE_PREFIX, device_key
from shared.policies.retention import RetentionPolicy

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProtectedDisk(_Part):
    disk_id: Slug = Field(description="Repository disk id; unique across the repository.")
    source: str = Field(
        min_length=1, max_length=1024,
        description="Source: an image path or block device, or 'device:<key>' for a disk of the machine's vSphere VM.",
    )  # fmt: skip
    changed_extents: str | None = Field(
        default=None, max_length=1024, description="Optional file with the changed-extent list (CBT)."
    )
    block_size: int | None = Field(default=None, description="Block size for a new disk (64 KiB-4 MiB).")


class SourceVm(_Part):
    """The hypervisor VM a machine is read from (picked from the source site's inventory)."""

    moref: str = Field(min_length=1, max_length=64, description="Managed object id, e.g. vm-42.")
    instance_uuid: str = Field(
        default="", max_length=64, description="vCenter instance UUID: finds the VM again if its moref changed."
    )
    inventory_id: str | None = Field(default=None, max_length=128)


class ProtectedMachine(_Part):
    machine_id: Slug
    name: Name | None = None
    vm: SourceVm | None = Field(default=None, description="Set when the machine is a VM of the source site.")
    disks: list[ProtectedDisk] = Field(min_length=1, max_length=64)
    instance_type: str | None = Field(default=None, max_length=64)
    private_ip: str | None = Field(default=None, max_length=64, description="Fixed address of the first NIC.")
    networks: list[Name] = Field(
        default_factory=list, max_length=8,
        description="Source networks of the machine's NICs, in order; mapped by network_mapping.",
    )  # fmt: skip
    boot_marker: str | None = Field(
        default=None, max_length=256,
        description="Text the guest prints on its serial console once up (boot validation).",
    )  # fmt: skip

    @model_validator(mode="after")
    def _sources_match(self) -> ProtectedMachine:
        devices = [d.source.startswith(DISK_SOURCE_PREFIX) for d in self.disks]
        if self.vm is not None and not all(devices):
            raise ValueError(f"machine {self.machine_id}: a VM's disks are named 'device:<key>'")
        if self.vm is None and any(devices):
            raise ValueError(f"machine {self.machine_id}: 'device:<key>' disks need the machine's vm")
        if any(d and device_key(disk.source) is None for d, disk in zip(devices, self.disks, strict=True)):
            raise ValueError(f"machine {self.machine_id}: use 'device:<key>' with a numeric device key")
        return self


class ReplicationWindow(_Part):
    """Replication may start only between ``start`` and ``end`` (UTC, ``HH:MM``; may wrap midnight)."""

    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError("use HH:MM (24-hour, UTC)")
        return v


class NetworkMapping(_Part):
    source_network: Name
    target_network: NetworkRef = Field(description="Target subnet (an ARM subnet id on Azure) / bridge.")
    security_groups: list[str] = Field(default_factory=list, max_length=16)
    test_network: NetworkRef | None = Field(
        default=None,
        description="Isolated network used by test recoveries (none: the platform isolates them itself where it can).",
    )


class BootGroup(_Part):
    name: Name
    machines: list[Slug] = Field(min_length=1)
    delay_seconds: int = Field(default=0, ge=0, le=3600, description="Wait after the previous group booted.")


class ScriptHook(_Part):
    when: str = Field(pattern=r"^(pre|post)-(replication|recovery)$")
    command: str = Field(min_length=1, max_length=2048)
    timeout_seconds: int = Field(default=300, ge=1, le=3600)


class PlanState(StrEnum):
    DRAFT = "draft"  # saved, not yet protecting: the `protect` action activates it
    ACTIVE = "active"  # protected: forward replication on schedule
    PAUSED = "paused"
    # failback cycle (shared/services/failback.py): none of these replicate forward
    FAILED_OVER = "failed-over"  # machines run on the target; the origin is not protected
    REVERSE_PROTECTING = "reverse-protecting"  # the recovered machines replicate into the repository
    FAILING_BACK = "failing-back"  # the origin disks are being brought to the latest reverse point

    @property
    def replicates_forward(self) -> bool:
        return self is PlanState.ACTIVE


class ProtectionPlan(Record):
    kind: ClassVar[str] = "plan"
    indexed: ClassVar[tuple[str, ...]] = ("target_site_id", "state")

    name: Name
    source_site_id: Slug
    target_site_id: Slug
    machines: list[ProtectedMachine] = Field(min_length=1, max_length=500)
    rpo_minutes: int = Field(default=15, ge=1, le=10080)
    retention: RetentionPolicy = Field(default_factory=lambda: RetentionPolicy(keep_last=24, keep_daily=7))
    window: ReplicationWindow | None = None
    bandwidth_limit_mbps: float | None = Field(default=None, gt=0)
    network_mapping: list[NetworkMapping] = Field(default_factory=list, max_length=64)
    boot_groups: list[BootGroup] = Field(default_factory=list, max_length=32)
    scripts: list[ScriptHook] = Field(default_factory=list, max_length=16)
    boot_timeout_seconds: int = Field(
        default=300, ge=10, le=7200, description="Boot validation deadline per machine."
    )
    quiesce: bool | None = Field(
        default=None,
        description="VM snapshots quiesced through VMware Tools (when they run); null: the source site's default.",
    )
    state: PlanState = PlanState.DRAFT

    @model_validator(mode="after")
    def _consistent(self) -> ProtectionPlan:
        machine_ids = [m.machine_id for m in self.machines]
        if len(set(machine_ids)) != len(machine_ids):
            raise ValueError("machine ids must be unique within a plan")
        disk_ids = [d.disk_id for m in self.machines for d in m.disks]
        if len(set(disk_ids)) != len(disk_ids):
            raise ValueError("disk ids must be unique within a plan")
        grouped = [m for g in self.boot_groups for m in g.machines]
        unknown = set(grouped) - set(machine_ids)
        if unknown:
            raise ValueError(f"boot groups name unknown machines: {sorted(unknown)}")
        if len(set(grouped)) != len(grouped):
            raise ValueError("a machine may be in only one boot group")
        mapped = {m.source_network for m in self.network_mapping}
        if len(mapped) != len(self.network_mapping):
            raise ValueError("each source network may be mapped only once")
        unmapped = {n for m in self.machines for n in m.networks} - mapped
        if unmapped:
            raise ValueError(f"machines use networks with no mapping: {sorted(unmapped)}")
        return self

    def disk_ids(self) -> list[str]:
        return [d.disk_id for m in self.machines for d in m.disks]
