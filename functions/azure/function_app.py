"""The Azure Functions app (Python v2 programming model): the REST API and the scheduler.

* ``api``: one HTTP trigger on ``{*path}`` for every method, anonymous at the platform
  level because the API authenticates every call itself (Lifeboat JWTs and API tokens, or
  an Entra ID principal from App Service Authentication: see :mod:`functions.azure.entra`).
  The request becomes the API Gateway event that ``functions.api.app.resolve`` takes.
* ``scheduler``: a timer trigger every minute running one scheduler tick (the same
  ``shared.services.scheduler.tick`` as the Lambda behind EventBridge).

The deployment package puts a one-line ``function_app.py`` at its root that imports
``app`` from here (the host indexes the root module); see docs/deploy-azure.md.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import azure.functions as func

from functions.api import app as api
from functions.azure import composition, http_adapter
from shared.services.scheduler import tick

log = logging.getLogger("lifeboat.azure")

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

#: every minute, at second 0 (NCRONTAB with seconds)
SCHEDULE = "0 * * * * *"
#: log markers of the Log Analytics alert rules
RPO_BREACH = "lifeboat.rpo_breach"
DEAD_LETTER = "lifeboat.dead_letter"


def _resolve(event: dict[str, Any], context: Any) -> dict[str, Any]:
    api.configure(composition.control())
    return api.resolve(event, context)


@app.function_name("api")
@app.route(route="{*path}", methods=list(func.HttpMethod), auth_level=func.AuthLevel.ANONYMOUS)
def http_api(req: func.HttpRequest) -> func.HttpResponse:
    return http_adapter.handle(req, resolver=_resolve, env=os.environ)


@app.function_name("scheduler")
@app.timer_trigger(schedule=SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
def scheduler(timer: func.TimerRequest) -> None:
    report = tick(composition.control())
    log.info(
        "scheduler tick",
        extra={"created": report.created, "alerts_opened": report.alerts_opened,
               "alerts_resolved": report.alerts_resolved, "lost_jobs": report.lost_jobs,
               "past_due": timer.past_due},
    )  # fmt: skip
    # fixed markers that the Bicep log alerts (bicep/modules/alerts.bicep) search for
    for alert_id in report.alerts_opened:
        log.warning("%s alert %s opened", RPO_BREACH, alert_id)
    for job_id in report.lost_jobs:
        log.error("%s job %s failed: its message was dead-lettered", DEAD_LETTER, job_id)
    for error in report.errors:
        log.warning("scheduling error: %s", error)
