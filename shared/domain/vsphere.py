"""vSphere: a site's vCenter/ESXi connection and the inventory discovered through it."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.domain.base import Record, Slug
from shared.domain.hardware import DiskProfile, Firmware, HardwareProfile, NicProfile

_HEX = re.compile(r"^[0-9a-f]+$")


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


def normalise_thumbprint(value: str) -> str:
    """``AB:CD:...`` or ``abcd...`` -> lower-case hex without separators; SHA-1 (40),
    SHA-256 (64) or SHA-512 (128) hex digits."""
    hexed = value.replace(":", "").replace(" ", "").lower()
    if not _HEX.match(hexed) or len(hexed) not in (40, 64, 128):
        raise ValueError("a certificate thumbprint is 40, 64 or 128 hex digits (SHA-1/256/512), ':' allowed")
    return hexed


class VCenterTls(_Part):
    """How the node trusts the vCenter certificate. Default: the system CAs (and ``ca_pem``)
    with host-name checks. ``thumbprint`` pins the exact certificate instead; ``insecure``
    trusts anything and must be asked for explicitly."""

    thumbprint: str | None = Field(default=None, description="Pinned certificate thumbprint (SHA-256 hex).")
    ca_pem: str | None = Field(default=None, max_length=65536, description="Extra CA certificates (PEM).")
    insecure: bool = Field(default=False, description="Skip certificate checks (lab use only).")

    @field_validator("thumbprint")
    @classmethod
    def _thumbprint(cls, v: str | None) -> str | None:
        return normalise_thumbprint(v) if v else None

    @model_validator(mode="after")
    def _one_mode(self) -> VCenterTls:
        if self.insecure and (self.thumbprint or self.ca_pem):
            raise ValueError("insecure cannot be combined with a thumbprint or CA certificates")
        return self


class VCenterConnection(_Part):
    """Where a vmware site's vCenter (or ESXi host) answers; the password is held elsewhere
    (``password_ref``: ``lifeboat-secret:<id>`` sealed in the metadata store under the
    server key, or ``aws-secretsmanager:<arn>`` / ``env:NAME`` / ``file:/path`` for nodes)."""

    url: str = Field(min_length=8, max_length=512, description="https://vcenter.example.com/sdk")
    username: str = Field(min_length=1, max_length=256)
    password_ref: str = Field(min_length=3, max_length=512)
    tls: VCenterTls = Field(default_factory=VCenterTls)
    quiesce: bool = Field(
        default=False, description="Default for this site's plans: quiesced snapshots when VMware Tools run."
    )

    @field_validator("url")
    @classmethod
    def _https(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("the vCenter URL must be https://host[:port][/sdk]")
        return v if parts.path not in ("", "/") else f"{parts.scheme}://{parts.netloc}/sdk"


class PresenceState(StrEnum):
    PRESENT = "present"
    MISSING = "missing"  # not seen by the last sync: kept (plans still name it), marked


class InventoryNic(_Part):
    key: int
    label: str = ""
    network: str = ""
    mac: str = ""
    adapter: str = ""


class InventoryDisk(_Part):
    key: int = Field(description="The virtual device key: what plans name (source 'device:<key>').")
    label: str = ""
    capacity_bytes: int = Field(ge=0)
    file: str = Field(default="", description="Datastore path, e.g. '[ds1] vm1/vm1.vmdk'.")
    datastore: str = ""
    controller: str = ""
    bus: str = ""
    unit: int = 0
    change_id: str | None = None


class InventoryVm(Record):
    """A VM as the last sync saw it."""

    kind: ClassVar[str] = "inventory-vm"
    indexed: ClassVar[tuple[str, ...]] = ("site_id", "state")

    site_id: Slug
    moref: str = Field(max_length=64)
    instance_uuid: str = Field(default="", max_length=64)
    name: str = Field(max_length=256)
    datacenter: str = ""
    cluster: str = ""
    host: str = ""
    guest_id: str = ""
    power_state: str = ""
    tools_status: str = ""
    cpus: int = 1
    memory_mb: int = 0
    firmware: Firmware = Firmware.BIOS
    cbt_enabled: bool = False
    nics: list[InventoryNic] = Field(default_factory=list)
    disks: list[InventoryDisk] = Field(default_factory=list)
    state: PresenceState = PresenceState.PRESENT
    last_seen_at: datetime | None = None
    missing_since: datetime | None = None

    def hardware(self) -> HardwareProfile:
        return HardwareProfile(
            cpus=max(1, self.cpus), memory_mb=max(4, self.memory_mb), firmware=self.firmware,
            guest_os=self.guest_id,
            nics=[NicProfile(network=n.network, mac=n.mac, adapter=n.adapter) for n in self.nics],
            disks=[DiskProfile(source=disk_source(d.key), capacity_bytes=d.capacity_bytes, bus=d.bus,
                               controller=d.controller, unit=d.unit) for d in self.disks],
        )  # fmt: skip


class InventoryObjectType(StrEnum):
    DATACENTER = "datacenter"
    CLUSTER = "cluster"
    HOST = "host"
    DATASTORE = "datastore"
    NETWORK = "network"


class InventoryObject(Record):
    """Everything else a sync discovers: datacenters, clusters, hosts, datastores, networks."""

    kind: ClassVar[str] = "inventory-object"
    indexed: ClassVar[tuple[str, ...]] = ("site_id", "object_type")

    site_id: Slug
    object_type: InventoryObjectType
    moref: str = Field(max_length=64)
    name: str = Field(max_length=256)
    parent: str = ""
    details: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    state: PresenceState = PresenceState.PRESENT
    last_seen_at: datetime | None = None


DISK_SOURCE_PREFIX = "device:"


def disk_source(key: int) -> str:
    """The plan's ``source`` for a vSphere disk: its virtual device key."""
    return f"{DISK_SOURCE_PREFIX}{key}"


def device_key(source: str) -> int | None:
    """The device key a plan's disk ``source`` names, or ``None`` for a path."""
    if not source.startswith(DISK_SOURCE_PREFIX):
        return None
    rest = source[len(DISK_SOURCE_PREFIX) :]
    return int(rest) if rest.isdigit() else None


def inventory_id(site_id: str, moref: str) -> str:
    """Record id of an inventory item: stable across syncs (site + managed object id)."""
    return f"{site_id}.{re.sub(r'[^A-Za-z0-9._-]', '_', moref)}"[:128]
