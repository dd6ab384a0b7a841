"""Reports over time: RPO compliance over a period, recovery readiness and storage.

Each answers JSON by default and CSV with ``?format=csv`` (a download). The figures and
their rules are the policies' (``shared/policies/rpo_compliance.py``, ``readiness.py``,
``storage_report.py``); ``docs/reports.md`` explains them to users."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import BaseModel, ValidationError

from functions.api import report_csv
from functions.api.core import ctl, route
from shared.domain.identity import Permission
from shared.policies.readiness import PlanReadiness
from shared.policies.rpo_compliance import PlanCompliance, ReportPeriod
from shared.policies.storage_report import StorageReport
from shared.services import reports

#: the period when a report is asked for without one: the last 30 days
DEFAULT_PERIOD = timedelta(days=30)

Format = Annotated[str, Query(pattern=r"^(json|csv)$", description="json (default) or csv (a download).")]
PlanFilter = Annotated[
    str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="Only this plan.")
]
Time = Annotated[str | None, Query(max_length=64, description="ISO 8601 time; without an offset it is UTC.")]


class RpoComplianceReport(BaseModel):
    generated_at: datetime
    period_start: datetime
    period_end: datetime
    plans: list[PlanCompliance]


class ReadinessReport(BaseModel):
    generated_at: datetime
    stale_after_days: int
    plans: list[PlanReadiness]


class StorageReportResponse(StorageReport):
    generated_at: datetime


def _responses(model: type[BaseModel]) -> dict[int, Any]:
    return {
        200: {
            "description": "The report (JSON, or CSV with format=csv)",
            "content": {"application/json": {"model": model}, "text/csv": {"schema": {"type": "string"}}},
        }
    }


def _invalid(name: str, msg: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", name), "msg": msg, "type": kind}])


def _time(value: str, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(name, f"not an ISO 8601 time: {value!r}", "datetime_parsing") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _period(start: str | None, end: str | None) -> ReportPeriod:
    """The period asked for (default: the 30 days before ``end``, itself now by default; an
    end after now is now: the future has no points yet); a bad one is a 422 naming the parameter."""
    now = ctl().now()
    t_end = min(_time(end, "end"), now) if end else now
    t_start = _time(start, "start") if start else t_end - DEFAULT_PERIOD
    if t_start >= now:
        raise _invalid("start", "start must be before now", "value_error")
    try:
        return ReportPeriod(start=t_start, end=t_end)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise _invalid("start", str(first["msg"]).removeprefix("Value error, "), "value_error") from exc


def _csv(body: str, name: str) -> Response:
    return Response(
        status_code=200,
        content_type="text/csv; charset=utf-8",
        body=body,
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def _stamp(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ")


@route("GET", "/reports/rpo-compliance", Permission.READ, responses=_responses(RpoComplianceReport))
def rpo_compliance_report(
    start: Time = None, end: Time = None, plan_id: PlanFilter = None, format: Format = "json"
):  # -> dict | Response (powertools reads annotations as schemas)
    """RPO compliance per plan and machine over ``[start, end)`` (default: the last 30 days, at most
    366): achieved-RPO percentiles, the share of the period within target, and every breach interval."""
    period = _period(start, end)
    plans = reports.compliance(ctl(), period, plan_id)
    if format == "csv":
        return _csv(
            report_csv.compliance_csv(plans), f"rpo-compliance-{_stamp(period.start)}-{_stamp(period.end)}"
        )
    doc = RpoComplianceReport(
        generated_at=ctl().now(), period_start=period.start, period_end=period.end, plans=plans
    )
    return doc.model_dump(mode="json")


@route("GET", "/reports/readiness", Permission.READ, responses=_responses(ReadinessReport))
def readiness_report(
    plan_id: PlanFilter = None,
    stale_after_days: Annotated[
        int, Query(ge=1, le=3650, description="A successful test older than this is stale.")
    ] = 30,
    format: Format = "json",
):  # -> dict | Response
    """Recovery readiness per plan: the last successful and failed test recoveries, their ages,
    the last measured RTO (total and per stage) and a state (ready, stale, never-tested, failed)."""
    plans = reports.readiness_of_plans(ctl(), plan_id=plan_id, stale_after=timedelta(days=stale_after_days))
    if format == "csv":
        return _csv(report_csv.readiness_csv(plans), f"readiness-{_stamp(ctl().now())}")
    doc = ReadinessReport(generated_at=ctl().now(), stale_after_days=stale_after_days, plans=plans)
    return doc.model_dump(mode="json")


@route("GET", "/reports/storage", Permission.READ, responses=_responses(StorageReportResponse))
def storage_report(plan_id: PlanFilter = None, format: Format = "json"):  # -> dict | Response
    """Storage per disk, machine and repository: bytes protected, logical and stored (after
    deduplication and compression), point counts and the reduction ratios."""
    report = reports.storage(ctl(), plan_id=plan_id)
    if format == "csv":
        return _csv(report_csv.storage_csv(report), f"storage-{_stamp(ctl().now())}")
    doc = StorageReportResponse(generated_at=ctl().now(), **report.model_dump())
    return doc.model_dump(mode="json")
