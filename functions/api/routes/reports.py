"""What happened and how it went: the audit trail, alerts, the RPO report and recovery reports."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import TypeAdapter

from functions.api.core import Cursor, IdPath, Limit, ctl, page_of, public, route
from functions.api.report_html import render_report_html
from shared.domain.audit import Alert, AuditEvent
from shared.domain.identity import Permission
from shared.domain.recovery import RecoveryMode, RecoveryReport
from shared.policies.scheduling import RpoStatus, rpo_status
from shared.services import recovery


# --- audit ---------------------------------------------------------------------------------------
@route("GET", "/audit", Permission.ADMINISTER)
def list_audit(
    actor: Annotated[str | None, Query(max_length=128)] = None, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    where = {"actor": actor} if actor else None
    return page_of(ctl().store.query(AuditEvent, where=where, descending=True, limit=limit, cursor=cursor))


# --- reports and alerts ----------------------------------------------------------------------
@route("GET", "/alerts", Permission.READ)
def list_alerts(
    state: Annotated[str | None, Query(pattern=r"^(open|resolved)$")] = "open",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    where = {"state": state} if state else None
    return page_of(ctl().store.query(Alert, where=where, descending=True, limit=limit, cursor=cursor))


@route("GET", "/reports/rpo", Permission.READ)
def rpo_report() -> dict[str, Any]:
    from shared.services.scheduler import load_state

    state = load_state(ctl())
    statuses = rpo_status(state.plans, state.last_points, ctl().now())
    return {
        "generated_at": ctl().now().isoformat(),
        "plans": TypeAdapter(list[RpoStatus]).dump_python(statuses, mode="json"),
    }


@route("GET", "/recoveries", Permission.READ)
def list_recoveries(
    plan_id: Annotated[str | None, Query(max_length=128)] = None,
    mode: Annotated[RecoveryMode | None, Query()] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Recovery reports, newest first."""
    where = {k: str(v) for k, v in (("plan_id", plan_id), ("mode", mode)) if v}
    page = ctl().store.query(RecoveryReport, where=where or None, descending=True, limit=limit, cursor=cursor)
    return page_of(page)


@route("GET", "/recoveries/<report_id>", Permission.READ)
def get_recovery(report_id: IdPath) -> dict[str, Any]:
    """One recovery run's report: per machine and per stage timings, validation evidence, errors."""
    return public(recovery.report_for(ctl(), report_id))


@route("GET", "/recoveries/<report_id>/html", Permission.READ)
def get_recovery_html(report_id: IdPath):  # -> Response (powertools reads annotations as schemas)
    """The same report as a self-contained HTML page (download it with Accept: text/html)."""
    page = render_report_html(recovery.report_for(ctl(), report_id))
    return Response(
        status_code=200, content_type="text/html; charset=utf-8", body=page,
        headers={"Content-Disposition": f'attachment; filename="recovery-{report_id}.html"'},
    )  # fmt: skip
