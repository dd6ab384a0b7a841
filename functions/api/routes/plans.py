"""Protection plans: CRUD, life cycle (protect, pause, resume), replicate now, recover, clean up tests."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from functions.api import schemas
from functions.api.core import (
    Cursor,
    IdemKey,
    IdPath,
    Limit,
    _idempotent,
    _stamps,
    _time,
    created,
    ctl,
    current,
    page_of,
    public,
    route,
)
from shared.domain.base import new_id
from shared.domain.identity import Permission
from shared.domain.inventory import Site
from shared.domain.plans import PlanState, ProtectionPlan
from shared.domain.recovery import RecoveryMode
from shared.services import failback, plans, recovery


# --- plans -----------------------------------------------------------------------------------
@route("GET", "/plans", Permission.READ)
def list_plans(
    limit: Limit = 100, cursor: Cursor = None, state: Annotated[PlanState | None, Query()] = None
) -> dict[str, Any]:
    where = {"state": str(state)} if state else None
    return page_of(ctl().store.query(ProtectionPlan, where=where, limit=limit, cursor=cursor))


@route("POST", "/plans", Permission.OPERATE)
def create_plan(
    body: Annotated[schemas.PlanIn, Body()],
):  # -> Response (powertools reads annotations as schemas)
    data = body.model_dump()
    data["id"] = data.get("id") or new_id("plan")
    plan = ProtectionPlan(**data, **_stamps())  # the plan's own rules first, then its references
    for site_id in (plan.source_site_id, plan.target_site_id):
        ctl().store.get(Site, site_id)
    return created(ctl().store.create(plan))


@route("GET", "/plans/<plan_id>", Permission.READ)
def get_plan(plan_id: IdPath) -> dict[str, Any]:
    return public(ctl().store.get(ProtectionPlan, plan_id))


@route("PUT", "/plans/<plan_id>", Permission.OPERATE)
def update_plan(plan_id: IdPath, body: Annotated[schemas.PlanUpdate, Body()]) -> dict[str, Any]:
    plan = ctl().store.get(ProtectionPlan, plan_id)
    changed = ProtectionPlan(**{**plan.model_dump(), **body.model_dump()})
    return public(ctl().store.update(changed))


@route("DELETE", "/plans/<plan_id>", Permission.OPERATE)
def delete_plan(plan_id: IdPath):  # -> Response (powertools reads annotations as schemas)
    ctl().store.delete(ProtectionPlan, plan_id)
    return Response(status_code=204, content_type="application/json", body="")


@route("POST", "/plans/<plan_id>/protect", Permission.OPERATE)
def protect_plan(plan_id: IdPath) -> dict[str, Any]:
    return public(plans.protect(ctl(), plan_id))


@route("POST", "/plans/<plan_id>/pause", Permission.OPERATE)
def pause_plan(plan_id: IdPath) -> dict[str, Any]:
    return public(plans.set_state(ctl(), plan_id, PlanState.PAUSED, allowed_from={PlanState.ACTIVE}))


@route("POST", "/plans/<plan_id>/resume", Permission.OPERATE)
def resume_plan(plan_id: IdPath) -> dict[str, Any]:
    """Replicate forward again: a paused plan, or a failed-over one whose origin is back (the
    recovered machines are left as they are and the failback cycle ends)."""
    return public(failback.resume_forward(ctl(), plan_id, actor=current().subject))


@route("POST", "/plans/<plan_id>/replicate-now", Permission.OPERATE)
def replicate_now(
    plan_id: IdPath, idempotency_key: IdemKey = None
):  # -> Response (powertools reads annotations as schemas)
    return _idempotent(
        idempotency_key, lambda: created(plans.replicate_now(ctl(), plan_id, actor=current().subject))
    )


@route("POST", "/plans/<plan_id>/recover", Permission.OPERATE)
def recover_plan(
    plan_id: IdPath, body: Annotated[schemas.RecoverIn, Body()], idempotency_key: IdemKey = None
):  # -> Response (powertools reads annotations as schemas)
    def start() -> Response:
        job = recovery.start(
            ctl(), plan_id, mode=RecoveryMode(body.mode), point_time=_time(body.point_time, "point_time"),
            actor=current().subject,
        )  # fmt: skip
        return created(job)

    return _idempotent(idempotency_key, start)


@route("POST", "/plans/<plan_id>/cleanup-test", Permission.OPERATE)
def cleanup_test(
    plan_id: IdPath, idempotency_key: IdemKey = None
):  # -> Response (powertools reads annotations as schemas)
    return _idempotent(
        idempotency_key, lambda: created(recovery.start_cleanup(ctl(), plan_id, actor=current().subject))
    )
