"""vmware sites: their vCenter connection and its password (which only a node configured
for the site gets). Inventory syncs, for vmware and kvm sites alike: :mod:`shared.services.inventory`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.inventory import Site, SiteKind
from shared.domain.jobs import Job
from shared.domain.vsphere import VCenterConnection, VCenterTls
from shared.errors import InvalidInputError, InvalidStateError, NotFoundError
from shared.services.context import Control
from shared.services.inventory import request_sync


class VCenterIn(BaseModel):
    """What an operator gives to connect a site to its vCenter (the password is kept in the
    control plane's vault and never served back)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=512)
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024, repr=False)
    tls: VCenterTls = Field(default_factory=VCenterTls)
    quiesce: bool = False


def _vmware_site(ctl: Control, site_id: str) -> Site:
    site = ctl.store.get(Site, site_id)
    if site.site_kind is not SiteKind.VMWARE:
        raise InvalidInputError(f"site {site_id} is a {site.site_kind} site; only vmware sites have a vCenter")
    return site


def set_vcenter(ctl: Control, site_id: str, body: VCenterIn, *, actor: str) -> tuple[Site, Job]:
    """Store the connection (password sealed in the vault), then queue a sync that proves it.

    Nothing is stored half: the new secret is deleted if the site update fails, the old
    one only once the site points at the new one."""
    if ctl.secrets is None:
        raise InvalidStateError("this control plane has no secret vault configured")
    site = _vmware_site(ctl, site_id)
    connection_fields = body.model_dump(exclude={"password"})
    VCenterConnection(**connection_fields, password_ref="pending:")  # validate before storing anything
    ref = ctl.secrets.put(f"site {site_id} vCenter password", body.password)
    try:
        updated = ctl.store.update(site.model_copy(update={
            "vcenter": VCenterConnection(**connection_fields, password_ref=ref)}))  # fmt: skip
    except BaseException:
        ctl.secrets.delete(ref)
        raise
    if site.vcenter is not None and site.vcenter.password_ref != ref:
        ctl.secrets.delete(site.vcenter.password_ref)
    job = request_sync(ctl, site_id, actor=actor, reason=f"vCenter connection set by {actor}")
    return updated, job


def clear_vcenter(ctl: Control, site_id: str) -> Site:
    site = _vmware_site(ctl, site_id)
    if site.vcenter is None:
        return site
    updated = ctl.store.update(site.model_copy(update={"vcenter": None}))
    if ctl.secrets is not None:
        ctl.secrets.delete(site.vcenter.password_ref)
    return updated


def source_password(ctl: Control, site_id: str) -> str:
    site = _vmware_site(ctl, site_id)
    if site.vcenter is None:
        raise NotFoundError(f"site {site_id} has no vCenter connection")
    if ctl.secrets is None:
        raise InvalidStateError("this control plane has no secret vault configured")
    return ctl.secrets.get(site.vcenter.password_ref)
