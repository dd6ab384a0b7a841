"""Lambda entry point of the REST API (API Gateway REST proxy integration)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.api import app as api
from functions.aws_composition import control

logger = Logger(service="lifeboat-api")


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    ctl = control()
    api.configure(ctl, trust_authorizer=True)  # node routes: the node authorizer
    try:
        return api.resolve(event, context)
    finally:
        ctl.metrics.flush()  # what this request measured (job starts and ends, reports), as EMF
