"""The Azure Functions app (Python v2 programming model): the REST API and the scheduler.

* ``api``: one HTTP trigger on ``{*path}`` for every method, anonymous at the platform
  level because the API authenticates every call itself (Lifeboat JWTs and API tokens, or
  an Entra ID principal from App Service Authentication: see :mod:`functions.azure.entra`).
  The request becomes the API Gateway event that ``functions.api.app.resolve`` takes.
* ``scheduler``: a timer trigger every minute running one scheduler tick (the same
  ``shared.services.scheduler.tick`` as the Lambda behind EventBridge).
* The recovery flow on Durable Functions (:mod:`functions.azure.durable_flow`; task hub
  ``lifeboat`` in host.json): orchestrators ``recovery_flow``, ``test_cleanup`` and
  ``flow_branch`` (one parallel Map iteration), activities ``flow_task`` (one Task state's
  handler) and ``flow_finished`` (ends the job), and ``flow_starter``, a queue trigger on
  ``LIFEBOAT_FLOW_QUEUE`` (default ``lifeboat-flows``, connection ``LIFEBOAT_STORAGE``) with
  the Durable client binding, which starts what the API's
  :class:`~shared.adapters.azure.durable_starter.DurableQueueStarter` asked for.

The deployment package puts a one-line ``function_app.py`` at its root that imports
``app`` from here (the host indexes the root module); see docs/deploy-azure.md.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from functions.api import app as api
from functions.azure import composition, durable_flow, http_adapter
from shared.adapters.azure.durable_starter import decode_start
from shared.services.scheduler import tick

log = logging.getLogger("lifeboat.azure")

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

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


# --- the recovery flow on Durable Functions -------------------------------------------------------
recovery_flow = app.orchestration_trigger(context_name="context")(durable_flow.recovery_flow)
test_cleanup = app.orchestration_trigger(context_name="context")(durable_flow.test_cleanup)
flow_branch = app.orchestration_trigger(context_name="context")(durable_flow.flow_branch)


@app.activity_trigger(input_name="request", activity=durable_flow.TASK)
def flow_task(request: dict[str, Any]) -> dict[str, Any]:
    return durable_flow.run_task(request, composition.recovery_ports())


@app.activity_trigger(input_name="request", activity=durable_flow.FINISHED)
def flow_finished(request: dict[str, Any]) -> dict[str, Any]:
    outcome = durable_flow.finish(request, composition.control())
    log.info("workflow ended", extra={**outcome, "status": request["status"]})
    return outcome


@app.function_name("flow_starter")
@app.queue_trigger(
    arg_name="message", queue_name=composition.flow_queue(os.environ), connection=composition.STORAGE
)
@app.durable_client_input(client_name="client")
async def flow_starter(message: func.QueueMessage, client: df.DurableOrchestrationClient) -> None:
    """Start the orchestration a start request names, once: an existing instance is left alone
    (a redelivered message, or a second request for the same job)."""
    flow, instance_id, payload = decode_start(message.get_body())
    status = await client.get_status(instance_id)
    if status is not None and status.runtime_status is not None:
        log.info(
            "flow %s already started",
            instance_id,
            extra={"job_id": instance_id, "status": str(status.runtime_status)},
        )
        return
    orchestrator, _ = durable_flow.FLOWS[flow]
    await client.start_new(orchestrator, instance_id, payload)
    log.info("flow %s started", instance_id, extra={"job_id": instance_id, "flow": flow})
