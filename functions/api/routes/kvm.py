"""kvm sites: the QMP sockets of the host's VMs (their inventory, syncs and plan machines
are the routes of :mod:`functions.api.routes.vsphere`, shared by vmware and kvm sites)."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body

from functions.api.core import IdPath, ctl, current, public, route
from shared.domain.identity import Permission
from shared.domain.kvm import KvmHostConnection
from shared.services import kvm


@route("PUT", "/sites/<site_id>/kvm", Permission.OPERATE)
def set_kvm(site_id: IdPath, body: Annotated[KvmHostConnection, Body()]) -> dict[str, Any]:
    """Give a kvm site the QMP sockets of its VMs (paths on the host of the node that reads the
    site; the list replaces the previous one). Queues an inventory sync, whose job names the
    sockets that did not answer."""
    site, job = kvm.set_kvm(ctl(), site_id, body, actor=current().subject)
    return {**public(site), "sync_job": public(job)}


@route("DELETE", "/sites/<site_id>/kvm", Permission.OPERATE)
def clear_kvm(site_id: IdPath) -> dict[str, Any]:
    """Forget a kvm site's QMP sockets; its inventory stays."""
    return public(kvm.clear_kvm(ctl(), site_id))
