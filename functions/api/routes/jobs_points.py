"""Recovery points (read only) and jobs: listing, cancelling, and the node's progress and completion."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from functions.api import schemas
from functions.api.core import Cursor, IdPath, Limit, _time, ctl, current, page_of, public, route
from shared.domain.identity import Permission
from shared.domain.jobs import Job, JobProgress, JobState
from shared.domain.points import RecoveryPoint
from shared.services import completion, jobs


# --- recovery points -------------------------------------------------------------------------
@route("GET", "/points", Permission.READ)
def list_points(
    plan_id: Annotated[str | None, Query(max_length=128)] = None,
    machine_id: Annotated[str | None, Query(max_length=128)] = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[str | None, Query(max_length=64)] = None,
    newest_first: bool = True,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    where = {k: v for k, v in (("plan_id", plan_id), ("machine_id", machine_id)) if v}
    page = ctl().store.query(
        RecoveryPoint, where=where or None, after=_time(after, "after"), before=_time(before, "before"),
        descending=newest_first, limit=limit, cursor=cursor,
    )  # fmt: skip
    return page_of(page)


@route("GET", "/points/<point_id>", Permission.READ)
def get_point(point_id: IdPath) -> dict[str, Any]:
    return public(ctl().store.get(RecoveryPoint, point_id))


# --- jobs ------------------------------------------------------------------------------------
@route("GET", "/jobs", Permission.READ)
def list_jobs(
    state: Annotated[JobState | None, Query()] = None,
    plan_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    where = {k: str(v) for k, v in (("state", state), ("plan_id", plan_id)) if v}
    return page_of(ctl().store.query(Job, where=where or None, descending=True, limit=limit, cursor=cursor))


@route("GET", "/jobs/<job_id>", Permission.READ)
def get_job(job_id: IdPath) -> dict[str, Any]:
    return public(ctl().store.get(Job, job_id))


@route("POST", "/jobs/<job_id>/cancel", Permission.OPERATE)
def cancel_job(job_id: IdPath) -> dict[str, Any]:
    return public(jobs.cancel(ctl(), job_id))


@route("POST", "/jobs/<job_id>/progress", Permission.NODE_WORK)
def job_progress(job_id: IdPath, body: Annotated[schemas.ProgressIn, Body()]) -> dict[str, Any]:
    return public(jobs.report_progress(ctl(), current(), job_id, JobProgress(**body.model_dump())))


@route("POST", "/jobs/<job_id>/complete", Permission.NODE_WORK)
def job_complete(job_id: IdPath, body: Annotated[schemas.CompleteIn, Body()]) -> dict[str, Any]:
    done = completion.complete(
        ctl(), current(), job_id, state=JobState(body.state), result=body.result, error=body.error
    )
    return public(done)
