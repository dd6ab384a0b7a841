"""The failback cycle of a plan: reverse protection after a failover, then failback."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel, ConfigDict, Field

from functions.api.core import IdemKey, IdPath, _idempotent, created, ctl, current, public, route
from shared.domain.identity import Permission
from shared.services import failback


class FailbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verify: bool = Field(
        default=False,
        description="Read and hash every origin block the points say is unchanged, and rewrite those that differ "
        "(needed when the origin cannot say what changed: a raw image, a removed bitmap).",
    )


@route("GET", "/plans/<plan_id>/failback", Permission.READ)
def get_failback(plan_id: IdPath) -> dict[str, Any]:
    """The plan's failback cycle: phase, recovered machines, reverse lineages, history."""
    return public(failback.get(ctl(), plan_id))


@route("POST", "/plans/<plan_id>/reverse-protect", Permission.OPERATE)
def reverse_protect(plan_id: IdPath, idempotency_key: IdemKey = None):  # -> Response
    """Replicate the recovered machines into the repository now (and every RPO after)."""
    return _idempotent(idempotency_key, lambda: created(failback.start_reverse(ctl(), plan_id, actor=current().subject)))


@route("POST", "/plans/<plan_id>/failback", Permission.OPERATE)
def fail_back(plan_id: IdPath, body: Annotated[FailbackIn, Body()], idempotency_key: IdemKey = None):  # -> Response
    """Write the origin disks back to the latest reverse point and resume forward protection."""
    return _idempotent(idempotency_key, lambda: created(
        failback.start_failback(ctl(), plan_id, verify=body.verify, actor=current().subject)))  # fmt: skip
