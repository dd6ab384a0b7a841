"""Plan actions: protect, pause, resume, replicate now (recovery runs: :mod:`shared.services.recovery`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.domain.inventory import Site, SiteKind
from shared.domain.jobs import Job, JobKind
from shared.domain.plans import PlanState, ProtectionPlan
from shared.errors import ConflictError, InvalidInputError, InvalidStateError
from shared.services import inventory, jobs
from shared.services.context import Control


def replication_params(
    ctl: Control, plan: ProtectionPlan, sites: Mapping[str, Site] | None = None
) -> dict[str, Any]:
    """The snapshot a node needs to run one plan run, taken when the job is created
    (``sites``: an already-read id -> site map, to spare one read per plan)."""
    def site_of(site_id: str) -> Site:
        return sites[site_id] if sites and site_id in sites else ctl.store.get(Site, site_id)

    site = site_of(plan.target_site_id)
    source = None
    vmware = False
    if any(m.vm is not None for m in plan.machines):
        source_site = site_of(plan.source_site_id)
        source = inventory.source_params(source_site)
        if source is None:
            raise InvalidInputError(
                f"plan {plan.id} protects VMs, but its source site {plan.source_site_id} is not a vmware site "
                "with a vCenter connection nor a kvm site with QMP sockets", plan_id=plan.id,
            )  # fmt: skip
        vmware = source_site.site_kind is SiteKind.VMWARE
    return {
        "plan_id": plan.id,
        "target_site_id": site.id,
        "repository_url": site.repository_url,
        "credentials_ref": site.credentials_ref,
        "bandwidth_limit_mbps": plan.bandwidth_limit_mbps,
        "machines": [m.model_dump(mode="json") for m in plan.machines],
        **({"source": source} if source else {}),
        **({"quiesce": plan.quiesce} if vmware else {}),  # VMware Tools quiescing; a KVM VM has none
    }


def set_state(ctl: Control, plan_id: str, to: PlanState, *, allowed_from: set[PlanState]) -> ProtectionPlan:
    for _ in range(5):
        plan = ctl.store.get(ProtectionPlan, plan_id)
        if plan.state == to:
            return plan
        if plan.state not in allowed_from:
            raise InvalidStateError(f"plan {plan_id} is {plan.state}; cannot become {to}", plan_id=plan_id)
        try:
            return ctl.store.update(plan.model_copy(update={"state": to}))
        except ConflictError:
            continue
    raise ConflictError(f"plan {plan_id} kept changing; try again", plan_id=plan_id)


def protect(ctl: Control, plan_id: str) -> ProtectionPlan:
    plan = ctl.store.get(ProtectionPlan, plan_id)
    ctl.store.get(Site, plan.target_site_id)  # the target must exist before protecting
    ctl.store.get(Site, plan.source_site_id)
    replication_params(ctl, plan)  # refuses a plan its sites cannot serve (VMs without a connection)
    return set_state(ctl, plan_id, PlanState.ACTIVE, allowed_from={PlanState.DRAFT, PlanState.PAUSED})


def replicate_now(ctl: Control, plan_id: str, *, actor: str) -> Job:
    plan = ctl.store.get(ProtectionPlan, plan_id)
    if plan.state is PlanState.DRAFT:  # pausing stops scheduling only; manual runs stay allowed
        raise InvalidStateError(f"plan {plan_id} is a draft: protect it first", plan_id=plan_id)
    if plan.state not in (PlanState.ACTIVE, PlanState.PAUSED):  # the origin is not the live copy
        raise InvalidStateError(f"plan {plan_id} is {plan.state}: its machines run on the recovery site; "
                                "protect them in reverse, then fail back", plan_id=plan_id)  # fmt: skip
    job = jobs.new_job(
        JobKind.REPLICATION, plan_id=plan_id, reason=f"replicate now by {actor}", created_by=actor,
        params=replication_params(ctl, plan),
    )  # fmt: skip
    created, _ = jobs.submit(ctl, job)
    return created
