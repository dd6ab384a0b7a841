"""Which source a job's machine is read through, as this node's configuration allows.

A node reads only what the control plane assigned through a configured source: a VM of a
vmware site (the connection comes from the site record, never from the plan), or a file
or block device under one of the node's allowed source roots (default: its data folder).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node_runtime.sources.files import FileMachine, check_allowed, load_extents
from node_runtime.sources.port import MachineSource
from node_runtime.sources.vsphere.connection import Endpoint
from node_runtime.sources.vsphere.source import VsphereMachine
from shared.domain.vsphere import VCenterConnection
from shared.errors import InvalidInputError, PermissionDeniedError

#: resolves a ``password_ref`` for a job (the agent asks the control plane or the cloud's vault)
SecretResolver = Callable[[str], str]


@dataclass(frozen=True)
class SourcePolicy:
    """What this node's configuration lets it read: paths under ``allowed_roots`` and the
    VMs of the vmware sites in ``source_sites`` (``"*"``: every site of its control plane)."""

    allowed_roots: Sequence[Path] = field(default_factory=list)
    source_sites: Sequence[str] = field(default_factory=list)

    def may_read_site(self, site_id: str) -> bool:
        return "*" in self.source_sites or site_id in self.source_sites


def machine_source(
    machine: dict[str, Any], params: dict[str, Any], *, policy: SourcePolicy, node_id: str, job_id: str,
    secret: SecretResolver,
) -> MachineSource:  # fmt: skip
    """The source of one machine of a replication job."""
    disks = machine["disks"]
    if machine.get("vm"):
        source = params.get("source") or {}
        if source.get("kind") != "vsphere" or not source.get("vcenter"):
            raise InvalidInputError(
                f"machine {machine['machine_id']} is a VM, but the plan's source site has no vCenter connection"
            )
        site_id = str(source.get("site_id", ""))
        if not policy.may_read_site(site_id):
            raise PermissionDeniedError(
                f"this node is not configured to read the VMs of site {site_id} (start it with --source-site {site_id})"
            )
        conn = VCenterConnection.model_validate(source["vcenter"])
        endpoint = Endpoint(site_id=site_id, url=conn.url, username=conn.username,
                            password=secret(conn.password_ref), tls=conn.tls)  # fmt: skip
        vm = machine["vm"]
        return VsphereMachine(
            endpoint, moref=vm["moref"], instance_uuid=vm.get("instance_uuid", ""),
            sources=[d["source"] for d in disks], node_id=node_id, job_id=job_id,
            quiesce=conn.quiesce if params.get("quiesce") is None else bool(params["quiesce"]),
        )  # fmt: skip
    for d in disks:  # refused before anything is opened or parsed, not in the middle of a run
        check_allowed(d["source"], policy.allowed_roots)
        if d.get("changed_extents"):
            check_allowed(d["changed_extents"], policy.allowed_roots)
    return FileMachine(
        [(d["source"], load_extents(d["changed_extents"]) if d.get("changed_extents") else None) for d in disks],
        policy.allowed_roots,
    )
