"""Lambda entry point: Step Functions execution status changes (an EventBridge rule on the
recovery and test-cleanup state machines) end their jobs and store their reports.

The execution's name is the job id (shared.services.recovery starts it so). EventBridge
carries the output when it fits (``outputDetails.included``); otherwise it is read with
``DescribeExecution``. Events can arrive twice: a job that has already ended is left alone.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.aws_composition import control
from shared.services import completion
from shared.services.context import Control

logger = Logger(service="lifeboat-recovery-events")
ENDED = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


def handle(event: dict[str, Any], *, ctl: Control | None = None, sfn: Any = None) -> dict[str, Any]:
    detail = event.get("detail") or {}
    status, job_id = detail.get("status"), detail.get("name")
    if status not in ENDED or not job_id:
        return {"ignored": status}
    raw = detail.get("output")
    if status == "SUCCEEDED" and raw is None:
        if sfn is None:
            import boto3

            sfn = boto3.client("stepfunctions")
        raw = sfn.describe_execution(executionArn=detail["executionArn"]).get("output")
    output = json.loads(raw) if raw else None
    error = f"{detail.get('error') or ''} {detail.get('cause') or ''}".strip() or None
    ctl = ctl or control()
    try:
        job = completion.complete_from_workflow(ctl, job_id, status=status, output=output, error=error)
    finally:
        ctl.metrics.flush()
    if job is None:
        return {"job_id": job_id, "already_ended": True}
    logger.info("workflow ended", extra={"job_id": job_id, "status": status, "job_state": str(job.state)})
    return {"job_id": job_id, "state": str(job.state)}


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event)
