"""Sites (where disks live or recover to) and nodes (workers that move the data)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import ClassVar

from pydantic import Field, field_validator

from shared.domain.base import Name, Record, Slug
from shared.domain.recovery import TargetConfig

NODE_STALE_AFTER = timedelta(minutes=2)


class SiteKind(StrEnum):
    AWS = "aws"
    AZURE = "azure"
    VMWARE = "vmware"
    KVM = "kvm"
    LOCAL = "local"


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

    @field_validator("credentials_ref")
    @classmethod
    def _is_a_reference(cls, v: str | None) -> str | None:
        if v is not None and ":" not in v:
            raise ValueError("credentials_ref must be a reference such as env:NAME or aws-secretsmanager:ARN")
        return v


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

    def online(self, now: datetime) -> bool:
        return self.heartbeat_at is not None and now - self.heartbeat_at <= NODE_STALE_AFTER
