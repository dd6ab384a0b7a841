"""Lambda entry point of the scheduler (EventBridge, every minute).

The tick counts what it did (JobsCreated, RpoAlertsOpened, RpoLagSeconds per plan) through
the control's metrics port; the EMF documents are printed when the invocation ends.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws_composition import control
from shared.services.context import Control
from shared.services.scheduler import tick

logger = Logger(service="lifeboat-scheduler")


def handle(event: dict[str, Any], *, ctl: Control | None = None) -> dict[str, Any]:
    ctl = ctl or control()
    try:
        report = tick(ctl)
    finally:
        ctl.metrics.flush()
    for error in report.errors:
        logger.warning("scheduling error", extra={"error": error})
    return {"created": report.created, "alerts_opened": report.alerts_opened, "lost_jobs": report.lost_jobs}


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event)
