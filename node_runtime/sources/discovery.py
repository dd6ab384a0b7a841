"""Discover a source site's inventory, whatever its kind (a node runs this for an inventory-sync job)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from node_runtime.sources.kvm.inventory import discover as discover_kvm
from node_runtime.sources.vsphere.connection import Endpoint, connect
from node_runtime.sources.vsphere.inventory import discover as discover_vsphere
from shared.domain.kvm import KvmHostConnection
from shared.domain.vsphere import InventoryObject, InventoryVm, VCenterConnection
from shared.errors import SourceError


@dataclass
class Discovered:
    vms: list[InventoryVm]
    objects: list[InventoryObject] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)  # kvm: "socket: why"
    message: str = ""


def discover_site(source: dict[str, Any], *, site_id: str, secret: Callable[[str], str],
                  say: Callable[[str], None]) -> Discovered:  # fmt: skip
    """A vmware site through its vCenter (``secret`` resolves the password reference), or a
    kvm site through its QMP sockets: a socket that does not answer is reported, not fatal
    (its VM may be off, and is marked missing), unless none answers."""
    now = datetime.now(UTC)
    if source.get("kind") == "kvm":
        sockets = KvmHostConnection.model_validate(source["kvm"]).qmp_sockets
        say(f"asking {len(sockets)} QMP socket(s)")
        kvm = discover_kvm(sockets, site_id=site_id, now=now)
        unreachable = "; ".join(kvm.unreachable)[:3000]  # the job's error and message are bounded
        if not kvm.vms:
            raise SourceError(f"none of the {len(sockets)} QMP socket(s) of site {site_id} answered "
                              f"(no VM found): {unreachable}", site_id=site_id)  # fmt: skip
        note = f"; {len(kvm.unreachable)} unreachable: {unreachable}" if kvm.unreachable else ""
        return Discovered(kvm.vms, unreachable=kvm.unreachable,
                          message=f"discovered {len(kvm.vms)} VMs behind {len(sockets)} QMP socket(s){note}")  # fmt: skip
    conn = VCenterConnection.model_validate(source["vcenter"])
    endpoint = Endpoint(site_id=site_id, url=conn.url, username=conn.username, password=secret(conn.password_ref),
                        tls=conn.tls)  # fmt: skip
    say(f"connecting to {conn.url}")
    session = connect(endpoint)
    try:
        found = discover_vsphere(session, site_id=site_id, now=now)
    finally:
        session.close()
    return Discovered(found.vms, found.objects,
                      message=f"discovered {len(found.vms)} VMs and {len(found.objects)} other objects")  # fmt: skip
