"""KVM sites: the QEMU processes a node reads VMs from, and how their VMs are named."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


class KvmHostConnection(BaseModel):
    """A KVM host's VMs, reached through their QMP unix sockets on the host where the
    site's replication node runs (``-qmp unix:PATH,server=on,wait=off``)."""

    model_config = ConfigDict(extra="forbid")

    qmp_sockets: list[str] = Field(
        min_length=1, max_length=256,
        description="Absolute paths of the VMs' QMP sockets, one per VM, on the node's host.",
    )  # fmt: skip

    @field_validator("qmp_sockets")
    @classmethod
    def _absolute(cls, v: list[str]) -> list[str]:
        for path in v:
            if not path.startswith("/") or "\0" in path or len(path) > 107:
                raise ValueError(f"a QMP socket is an absolute unix socket path of at most 107 bytes: {path!r}")
        if len(set(v)) != len(v):
            raise ValueError("each QMP socket may be listed once")
        return v


_ZERO_UUID = "00000000-0000-0000-0000-000000000000"


def kvm_moref(name: str, uuid: str) -> str:
    """The id a KVM VM keeps across restarts: its SMBIOS UUID (``-uuid``), else its name (``-name``)."""
    if uuid and uuid != _ZERO_UUID:
        return f"uuid-{uuid.lower()}"
    if name:
        return "name-" + re.sub(r"[^A-Za-z0-9._-]", "_", name)[:58]
    return ""
