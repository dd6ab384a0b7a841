"""A node's start-up sweep of its own leftover replication snapshots on one vmware site."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from node_runtime.sources.vsphere import snapshots
from node_runtime.sources.vsphere.connection import Endpoint, connect
from shared.domain.vsphere import VCenterConnection


def sweep_site(source: dict[str, Any], node_id: str, secret: Callable[[str], str]) -> list[str]:
    """``source``: ``{"site_id", "vcenter"}`` as the control plane lists it for this node."""
    conn = VCenterConnection.model_validate(source["vcenter"])
    endpoint = Endpoint(site_id=str(source["site_id"]), url=conn.url, username=conn.username,
                        password=secret(conn.password_ref), tls=conn.tls)  # fmt: skip
    session = connect(endpoint)
    try:
        return snapshots.sweep(session, node_id)
    finally:
        session.close()
