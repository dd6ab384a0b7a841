"""kvm sites: the QMP sockets of the host's VMs, which the site's replication node reads.

A kvm site's VMs are directly-run QEMU processes, each with a QMP socket
(``-qmp unix:PATH,server=on,wait=off``) on the host of the node that reads the site; the
control plane stores the paths only (no secret: the node's access to the socket files is
the credential). libvirt-managed VMs are not covered: libvirt holds their monitor.
"""

from __future__ import annotations

from shared.domain.inventory import Site, SiteKind
from shared.domain.jobs import Job
from shared.domain.kvm import KvmHostConnection
from shared.errors import ConflictError, InvalidInputError
from shared.services.context import Control
from shared.services.inventory import request_sync


def _kvm_site(ctl: Control, site_id: str) -> Site:
    site = ctl.store.get(Site, site_id)
    if site.site_kind is not SiteKind.KVM:
        raise InvalidInputError(
            f"site {site_id} is a {site.site_kind} site; only kvm sites have a KVM host connection"
        )
    return site


def set_kvm(ctl: Control, site_id: str, body: KvmHostConnection, *, actor: str) -> tuple[Site, Job]:
    """Store the site's QMP sockets (replacing the previous list whole), then queue a sync
    that discovers the VMs behind them (its job names the sockets that did not answer)."""
    site = _kvm_site(ctl, site_id)
    try:
        updated = ctl.store.update(site.model_copy(update={"kvm": body}))
    except ConflictError as exc:
        raise ConflictError(f"site {site_id} changed meanwhile; try again", site_id=site_id) from exc
    job = request_sync(ctl, site_id, actor=actor, reason=f"KVM host connection set by {actor}")
    return updated, job


def clear_kvm(ctl: Control, site_id: str) -> Site:
    """Forget the site's QMP sockets; its inventory stays (plans naming its VMs still resolve
    and are refused with the reason when they run)."""
    site = _kvm_site(ctl, site_id)
    if site.kvm is None:
        return site
    return ctl.store.update(site.model_copy(update={"kvm": None}))
