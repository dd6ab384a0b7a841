"""Lambda entry point of the scheduler (EventBridge, every minute)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws_composition import control
from shared.services.context import Control
from shared.services.scheduler import tick

logger = Logger(service="lifeboat-scheduler")
metrics = Metrics(namespace="Lifeboat", service="scheduler")


def handle(event: dict[str, Any], *, ctl: Control | None = None) -> dict[str, Any]:
    report = tick(ctl or control())
    metrics.add_metric("JobsCreated", MetricUnit.Count, len(report.created))
    metrics.add_metric("RpoAlertsOpened", MetricUnit.Count, len(report.alerts_opened))
    for error in report.errors:
        logger.warning("scheduling error", extra={"error": error})
    return {"created": report.created, "alerts_opened": report.alerts_opened, "lost_jobs": report.lost_jobs}


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event)
