"""Recovery: where a plan recovers to, what one recovery run does, and what it reports.

The records here travel through the recovery flow (Step Functions or the local runner)
as JSON, so every model forbids unknown fields and stays small.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.base import Record, Slug
from shared.domain.hardware import Firmware
from shared.domain.points import DiskPoint


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecoveryMode(StrEnum):
    TEST = "test"  # isolated networks, replication continues, cleaned up afterwards
    FAILOVER = "failover"  # the source is lost: replication stops, machines stay
    MIGRATION = "migration"  # a final incremental first, then cutover


# --- where a site recovers to ----------------------------------------------------------------
class _TargetBase(_Model):
    prepare_guest: bool = Field(
        default=True,
        description="Prepare each recovered guest for this platform (drivers, fstab, network, registry: "
        "the Prep Node, docs/prep.md) when a node runs the recovery.",
    )


class QemuTargetConfig(_TargetBase):
    platform: Literal["qemu"] = "qemu"
    work_dir: str = Field(min_length=1, max_length=1024, description="Where recovered images and VMs live.")
    image_format: Literal["raw", "qcow2"] = "raw"


class AwsTargetConfig(_TargetBase):
    platform: Literal["aws"] = "aws"
    region: str = Field(min_length=1, max_length=64)
    kms_key_arn: str | None = Field(default=None, max_length=2048)
    default_instance_type: str = Field(default="t3.small", max_length=64)


class AzureTargetConfig(_TargetBase):
    """Where recovered machines go on Azure (the identity of the node or function needs the
    recovery role of docs/deploy-azure.md on ``resource_group`` and blob access to the container)."""

    platform: Literal["azure"] = "azure"
    subscription_id: str = Field(pattern=r"^[0-9a-fA-F-]{36}$", description="Subscription of the recovery.")
    resource_group: str = Field(min_length=1, max_length=90, pattern=r"^[-\w._()]+$")
    location: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9]+$")
    container_url: str = Field(
        min_length=1, max_length=1024, pattern=r"^https?://",
        description="Staging container for recovered VHD page blobs (a general-purpose v2 account in `location`).",
    )  # fmt: skip
    storage_account_id: str = Field(
        pattern=r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Storage/storageAccounts/[^/]+$",
        description="ARM id of the staging container's storage account (managed disks import from it).",
    )
    default_vm_size: str = Field(
        default="Standard_B2s", max_length=64, pattern=r"^(Standard|Basic)_[A-Za-z0-9_]+$"
    )
    os_type: Literal["Linux", "Windows"] = "Linux"
    isolated_subnets: list[str] = Field(
        default_factory=list, max_length=64,
        description="When set, the only subnets a plan may map as test networks.",
    )  # fmt: skip
    poll_seconds: float = Field(
        default=10.0, ge=0.1, le=300,
        description="How often VM state and the boot-diagnostics log are read while waiting (Azure "
        "refreshes the log every few minutes).",
    )  # fmt: skip
    arm_endpoint: str | None = Field(
        default=None, pattern=r"^https://", max_length=256,
        description="Azure Resource Manager endpoint (default: the public cloud's).",
    )  # fmt: skip


TargetConfig = Annotated[
    QemuTargetConfig | AwsTargetConfig | AzureTargetConfig, Field(discriminator="platform")
]


# --- records exchanged with targets ----------------------------------------------------------
class Resource(_Model):
    """Something a recovery created on a platform: enough to find and delete it later."""

    type: str = Field(
        description="file, qemu-vm, qemu-process, ebs-snapshot, ami, ec2-instance, eni, page-blob, "
        "managed-disk, azure-nic, azure-vm ..."
    )
    id: str = Field(description="The platform's id or path.")
    detail: dict[str, str] = Field(default_factory=dict)


class DiskArtifact(_Model):
    """One reconstructed disk on the target."""

    disk_id: str
    point_id: str
    disk_size: int = Field(ge=0)
    format: str = Field(description="raw, qcow2, ebs-snapshot, vhd ...")
    location: str = Field(description="Path, snapshot id or blob URL.")
    bytes_written: int = Field(default=0, ge=0)
    resources: list[Resource] = Field(default_factory=list)


OsFamily = Literal["linux", "windows", "unknown"]


class InstanceSpec(_Model):
    """The machine to create, from the plan."""

    machine_id: str
    name: str
    run_id: str
    instance_type: str | None = None
    firmware: Firmware = Field(default=Firmware.BIOS, description="As captured with the point (BIOS or EFI).")
    os_family: OsFamily = Field(
        default="unknown", description="What OS preparation found on the disks (unknown before it ran)."
    )
    tags: dict[str, str] = Field(default_factory=dict)


class NicSpec(_Model):
    """One NIC, already mapped: ``network`` is the target (or isolated test) network."""

    source_network: str
    network: str
    security_groups: list[str] = Field(default_factory=list)
    private_ip: str | None = None
    isolated: bool = Field(default=False, description="A test recovery's network: no route to production.")
    isolate_on_target: bool = Field(
        default=False,
        description="A test NIC whose plan maps no test network: the target isolates it itself "
        "(QEMU restricted networking; on Azure a virtual network of the run's own, mirroring `network`).",
    )


class Instance(_Model):
    """A machine on the target. ``resources`` accumulates as the flow goes on."""

    instance_id: str
    machine_id: str
    state: str = Field(default="defined", description="defined, running, stopped ...")
    resources: list[Resource] = Field(default_factory=list)
    addresses: list[str] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)


class ValidationSpec(_Model):
    marker: str | None = Field(
        default=None, description="Text the guest prints on its serial console when up."
    )
    timeout_seconds: int = Field(default=300, ge=1, le=7200)


class Evidence(_Model):
    """What boot validation saw."""

    ok: bool
    method: str = Field(description="serial-marker, status-checks, power-state ...")
    seconds: float = Field(ge=0, description="From the start of validation to the verdict.")
    excerpt: str = Field(default="", description="Serial-console excerpt or status-check summary.")
    reason: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)


# --- one recovery run: the flow's input ------------------------------------------------------
class MachineRun(_Model):
    """One machine to recover: its chosen point, mapped NICs and boot check."""

    machine_id: Slug
    name: str
    instance_type: str | None = None
    firmware: Firmware = Firmware.BIOS
    recovery_point_id: str = Field(description="The RecoveryPoint record chosen for this machine.")
    point_time: datetime
    disks: list[DiskPoint] = Field(min_length=1)
    nics: list[NicSpec] = Field(default_factory=list)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)


class GroupRun(_Model):
    name: str
    order: int = Field(ge=0)
    delay_seconds: int = Field(default=0, ge=0)
    machines: list[MachineRun] = Field(min_length=1)


class RunSpec(_Model):
    """What every state of the flow needs to know about the run."""

    run_id: Slug
    job_id: Slug
    plan_id: Slug
    plan_name: str
    mode: RecoveryMode
    target: TargetConfig
    repository_url: str
    credentials_ref: str | None = None
    requested_point_time: datetime | None = None
    started_at: datetime


class FlowInput(_Model):
    """The recovery flow's execution input (built by the control plane)."""

    run: RunSpec
    groups: list[GroupRun] = Field(min_length=1)
    notes: list[str] = Field(default_factory=list, description="Point-selection reasons.")


# --- what a run reports ----------------------------------------------------------------------
class StageTiming(_Model):
    stage: str
    started_at: datetime
    finished_at: datetime
    seconds: float = Field(ge=0)
    ok: bool = True


class CleanupOutcome(_Model):
    deleted: list[Resource] = Field(default_factory=list)
    already_gone: list[Resource] = Field(default_factory=list)
    failed: list[str] = Field(
        default_factory=list, description="Resources that could not be deleted, with why."
    )


class MachineReport(_Model):
    machine_id: str
    name: str
    group: str
    status: Literal["recovered", "validation-failed", "failed"]
    recovery_point_id: str
    point_time: datetime
    stages: list[StageTiming] = Field(default_factory=list)
    rto_seconds: float | None = Field(default=None, description="Run start to this machine validated.")
    instance_id: str | None = None
    addresses: list[str] = Field(default_factory=list)
    evidence: Evidence | None = None
    os: dict[str, Any] = Field(default_factory=dict, description="OS preparation summary and findings.")
    failed_stage: str | None = None
    error: str | None = None
    resources: list[Resource] = Field(default_factory=list, description="What stays on the target.")
    cleanup: CleanupOutcome | None = Field(default=None, description="Compensation after a failure.")


class GroupReport(_Model):
    name: str
    order: int
    delay_seconds: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    machines: list[MachineReport] = Field(default_factory=list)


class RecoveryReport(Record):
    """One recovery run, as measured: stored when the run ends, served as JSON and HTML."""

    kind: ClassVar[str] = "report"
    indexed: ClassVar[tuple[str, ...]] = ("plan_id", "job_id", "mode")

    plan_id: Slug
    plan_name: str = ""
    job_id: Slug
    mode: RecoveryMode
    platform: str
    state: Literal["succeeded", "partial", "failed"]
    started_at: datetime
    finished_at: datetime
    rto_seconds: float | None = Field(default=None, description="Run start to the last machine validated.")
    requested_point_time: datetime | None = None
    notes: list[str] = Field(default_factory=list)
    groups: list[GroupReport] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    cleanup_state: Literal["not-needed", "pending", "running", "cleaned", "cleanup-failed"] = "not-needed"
    cleanup_job_id: str | None = None
    cleanup: CleanupOutcome | None = None

    def machines(self) -> list[MachineReport]:
        return [m for g in self.groups for m in g.machines]
