"""Which source a job's machine is read through, as this node's configuration allows.

A node reads only what the control plane assigned through a configured source: a VM of a
vmware site (the connection comes from the site record, never from the plan), a VM behind
one of a kvm site's QMP sockets, or a file or block device under one of the node's allowed
source roots (default: its data folder); qcow2 images there are read through their
persistent dirty bitmaps.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node_runtime.sources.files import FileMachine, check_allowed, load_extents
from node_runtime.sources.kvm import inventory as kvm_inventory
from node_runtime.sources.kvm.offline import OfflineMachine, is_qcow2
from node_runtime.sources.kvm.source import DiskRef, KvmMachine
from node_runtime.sources.port import MachineSnapshot, MachineSource
from node_runtime.sources.vsphere.connection import Endpoint
from node_runtime.sources.vsphere.source import VsphereMachine
from shared.domain.kvm import KvmHostConnection
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
    #: where KVM reads keep their fleecing scratch images (on the KVM host: QEMU opens them)
    scratch_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "lifeboat-kvm")

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
        site_id = str(source.get("site_id", ""))
        if source.get("kind") not in ("vsphere", "kvm") or not (source.get("vcenter") or source.get("kvm")):
            raise InvalidInputError(
                f"machine {machine['machine_id']} is a VM, but the plan's source site has no vCenter or KVM host connection"
            )
        if not policy.may_read_site(site_id):
            raise PermissionDeniedError(
                f"this node is not configured to read the VMs of site {site_id} (start it with --source-site {site_id})"
            )
        if source["kind"] == "kvm":
            return _kvm_machine(machine, KvmHostConnection.model_validate(source["kvm"]), policy)
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
    if any(is_qcow2(d["source"]) for d in disks):
        if any(d.get("changed_extents") for d in disks):
            raise InvalidInputError(f"machine {machine['machine_id']}: qcow2 images track their own changes "
                                    "(dirty bitmaps); drop changed_extents")  # fmt: skip
        return OfflineMachine([DiskRef(d["disk_id"], d["source"]) for d in disks], scratch_dir=policy.scratch_dir)
    return FileMachine(
        [(d["source"], load_extents(d["changed_extents"]) if d.get("changed_extents") else None) for d in disks],
        policy.allowed_roots,
    )


class _KvmVm:
    """A KVM VM found again by its id among the site's QMP sockets when the run opens it."""

    def __init__(self, machine_id: str, moref: str, conn: KvmHostConnection, refs: list[DiskRef], scratch: Path) -> None:
        self.machine_id, self.moref, self.conn, self.refs, self.scratch = machine_id, moref, conn, refs, scratch

    def open(self) -> MachineSnapshot:
        socket = kvm_inventory.find_vm(self.conn.qmp_sockets, self.moref)
        return KvmMachine(socket, self.refs, scratch_dir=self.scratch, vm_id=self.machine_id,
                          hardware=kvm_inventory.hardware).open()  # fmt: skip


def _kvm_machine(machine: dict[str, Any], conn: KvmHostConnection, policy: SourcePolicy) -> MachineSource:
    refs = [DiskRef(d["disk_id"], d["source"]) for d in machine["disks"]]
    return _KvmVm(machine["machine_id"], machine["vm"]["moref"], conn, refs, policy.scratch_dir)
