"""Sites (where disks live or recover to) and nodes (workers that move the data)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.domain.base import Name, Record, Slug
from shared.domain.kvm import KvmHostConnection
from shared.domain.recovery import TargetConfig
from shared.domain.vsphere import VCenterConnection

NODE_STALE_AFTER = timedelta(minutes=2)


class SiteKind(StrEnum):
    AWS = "aws"
    AZURE = "azure"
    VMWARE = "vmware"
    KVM = "kvm"
    LOCAL = "local"


class InventorySyncStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: datetime
    job_id: str = ""
    ok: bool
    error: str | None = Field(default=None, max_length=2000)
    vms: int = 0


class Site(Record):
    """A place: a cloud region, a vCenter, a KVM host, or this machine."""

    kind: ClassVar[str] = "site"
    indexed: ClassVar[tuple[str, ...]] = ("site_kind",)

    name: Name
    site_kind: SiteKind
    region: str | None = Field(default=None, max_length=64)
    repository_url: str = Field(
        min_length=1,
        max_length=1024,
        description="Where this site's recovery points live: path, s3://bucket/prefix or azure://container/prefix.",
    )
    credentials_ref: str | None = Field(
        default=None,
        max_length=512,
        description="A reference to a secret (e.g. env:NAME, aws-secretsmanager:ARN), never the secret itself.",
    )

    recovery_target: TargetConfig | None = Field(
        default=None,
        description="Where machines recover to at this site (QEMU work dir, AWS region, Azure group).",
    )
    vcenter: VCenterConnection | None = Field(
        default=None, description="A vmware site's vCenter/ESXi (set through PUT /sites/{id}/vcenter)."
    )
    kvm: KvmHostConnection | None = Field(
        default=None,
        description="A kvm site's VMs: their QMP sockets on the node's host (set through PUT /sites/{id}/kvm).",
    )
    inventory_sync_minutes: int | None = Field(
        default=60, ge=5, le=10080, description="Scheduled inventory sync period (null: on demand only)."
    )
    last_inventory_sync: InventorySyncStatus | None = None
    inventory_job_id: str | None = Field(default=None, description="The latest inventory sync job.")

    @field_validator("credentials_ref")
    @classmethod
    def _is_a_reference(cls, v: str | None) -> str | None:
        if v is not None and ":" not in v:
            raise ValueError("credentials_ref must be a reference such as env:NAME or aws-secretsmanager:ARN")
        return v

    @model_validator(mode="after")
    def _connection_of_its_kind(self) -> Site:
        if self.vcenter is not None and self.site_kind is not SiteKind.VMWARE:
            raise ValueError("only a vmware site has a vCenter connection")
        if self.kvm is not None and self.site_kind is not SiteKind.KVM:
            raise ValueError("only a kvm site has a KVM host connection (QMP sockets)")
        return self

    @property
    def has_inventory_source(self) -> bool:
        """Whether a node can discover this site's VMs: a vmware site with its vCenter, a kvm
        site with its QMP sockets."""
        return (self.site_kind is SiteKind.VMWARE and self.vcenter is not None) or (
            self.site_kind is SiteKind.KVM and self.kvm is not None
        )


class NodeRole(StrEnum):
    REPLICATION = "replication"
    PREP = "prep"
    DEDUP = "dedup"


class Node(Record):
    """A worker process registered with the control plane."""

    kind: ClassVar[str] = "node"
    indexed: ClassVar[tuple[str, ...]] = ("site_id", "role")

    name: Name
    site_id: Slug
    role: NodeRole = NodeRole.REPLICATION
    software_version: str = Field(default="", max_length=64)
    capacity: int = Field(default=40, ge=1, le=1000, description="Concurrent disks this node replicates.")
    heartbeat_at: datetime | None = None
    running_jobs: int = Field(default=0, ge=0)
    source_sites: list[str] = Field(
        default_factory=list, max_length=64,
        description="vmware and kvm sites whose VMs this node is configured to read ('*': every one).",
    )  # fmt: skip

    revoked_at: datetime | None = Field(
        default=None, description="When an admin revoked its credentials; it must enroll again."
    )

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def may_read(self, site_id: str) -> bool:
        return "*" in self.source_sites or site_id in self.source_sites

    def online(self, now: datetime) -> bool:
        return self.heartbeat_at is not None and now - self.heartbeat_at <= NODE_STALE_AFTER
