"""The recovery flow on Azure Durable Functions: the same ASL definitions, walked by an orchestrator.

``recovery_flow.asl.json`` and ``test_cleanup.asl.json`` stay the single source. The
orchestrators here walk their states (the subset they use, checked when a definition is
loaded: anything else is refused with its location) and call the same handlers
(:data:`functions.recovery.handlers.HANDLERS`) as activities:

* **Task** -> activity :data:`TASK` with ``{"task", "event", "retry_on"}``; the result goes
  to ``ResultPath``. A handler's exception becomes the ASL error ``{"Error": type name,
  "Cause": message}`` (as the local runner names it). The activity *returns* errors that no
  ``Retry`` rule names (no retry), and *raises* those that one does, so
  ``call_activity_with_retry`` retries exactly the transient errors, with the rule's
  ``IntervalSeconds``, ``MaxAttempts`` (+1: Durable counts the first attempt) and
  ``BackoffRate`` (``JitterStrategy`` is not expressible: Durable's retry timers are
  deterministic). Host-level failures of an activity are retried too, like the
  ``Lambda.*`` errors of the definitions.
* **Catch** -> the failure's ``{"Error", "Cause"}`` goes to the catcher's ``ResultPath`` (the
  same :class:`~functions.recovery.models.FlowError` a Step Functions Catch stores), then its
  ``Next``: compensation (``CleanupMachine``) and the reports see what they see in AWS.
* **Wait** -> a durable timer (``context.create_timer``) from ``current_utc_datetime``; none
  for 0 seconds.
* **Map** with ``MaxConcurrency: 1`` -> its iterations walked in order in this orchestrator;
  otherwise each iteration is a sub-orchestration (:data:`BRANCH`, instance id
  ``<parent>:<Map>.<index>``) and they run in batches of ``MaxConcurrency`` (0: up to
  :data:`~shared.workflow.asl.MAP_CONCURRENCY_LIMIT`) through ``context.task_all``.

An error that leaves a Task or a branch through Durable (retries exhausted, a failed
sub-orchestration) arrives as an exception whose text the extension wraps; the activity and
the branch put the ASL error in it as a marker (base64url, so JSON escaping keeps it intact)
that :func:`flow_error` reads back. The top-level orchestrators end with activity
:data:`FINISHED`, which ends the job the way functions/recovery/execution_events.py does for
Step Functions (:func:`shared.services.completion.complete_from_workflow`). Orchestrators do
no I/O and read time only from the context: they are deterministic under replay.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
from collections.abc import Generator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import azure.durable_functions as df

from functions.recovery.definition import RECOVERY_FLOW, TEST_CLEANUP, render
from shared.services import completion
from shared.services.context import Control
from shared.workflow.asl import MAP_CONCURRENCY_LIMIT

if TYPE_CHECKING:  # the handlers (OS preparation, targets) are imported by the activity only
    from functions.recovery.ports import RecoveryPorts

#: WorkflowStarter flow name -> (orchestrator function, definition)
FLOWS: dict[str, tuple[str, str]] = {
    "recovery": ("recovery_flow", RECOVERY_FLOW),
    "test-cleanup": ("test_cleanup", TEST_CLEANUP),
}
BRANCH = "flow_branch"
TASK = "flow_task"
FINISHED = "flow_finished"
#: how many times the job's ending is attempted (a store conflict or throttle is transient)
FINISH_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5000, max_number_of_attempts=5)

Orchestration = Generator[Any, Any, Any]
_MARKER = "lifeboat-flow-error:"
_MARKED = re.compile(re.escape(_MARKER) + r"([A-Za-z0-9_-]+=*)")
_PATH = re.compile(r"^\$(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ITEM = "$$.Map.Item.Value"
_PLAIN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
_FIELDS = {
    "Task": {"Type", "Comment", "Resource", "ResultPath", "Retry", "Catch", "Next", "End"},
    "Map": {"Type", "Comment", "ItemsPath", "ItemSelector", "ItemProcessor", "MaxConcurrency", "ResultPath",
            "Catch", "Next", "End"},
    "Wait": {"Type", "Comment", "Seconds", "SecondsPath", "Next", "End"},
}  # fmt: skip


# --- errors ------------------------------------------------------------------------------------
class FlowFailure(Exception):
    """An ASL error travelling through the walker; ``Catch`` rules match ``error``."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause} [{_MARKER}{_encode(error, cause)}]")
        self.error, self.cause = error, cause

    def as_json(self) -> dict[str, str]:
        return {"Error": self.error, "Cause": self.cause}


class RetryableTaskError(FlowFailure):
    """Raised by the activity for an error a ``Retry`` rule names, so Durable retries it."""


def _encode(error: str, cause: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"Error": error, "Cause": cause}).encode()).decode()


def flow_error(exc: BaseException) -> FlowFailure:
    """The ASL error of a failed Durable task: the marker's, else ``States.TaskFailed`` with the text."""
    if isinstance(exc, FlowFailure):
        return exc
    text = str(exc)
    found = _MARKED.search(text)
    if found:
        try:
            error = json.loads(base64.urlsafe_b64decode(found.group(1)))
            return FlowFailure(str(error["Error"]), str(error.get("Cause") or ""))
        except (ValueError, KeyError, TypeError):
            pass
    return FlowFailure("States.TaskFailed", text.strip())


def _matches(names: list[str], error: str) -> bool:
    if "States.ALL" in names or error in names:
        return True
    return "States.TaskFailed" in names and error != "States.Timeout"


# --- the definitions ---------------------------------------------------------------------------
@functools.cache
def definition(name: str) -> dict[str, Any]:
    """The ASL definition with each Task's ``Resource`` as its handler name, checked for the subset."""
    machine = render(name, arn=lambda task: task)
    _check(machine, "$")
    return machine


def _check(machine: Mapping[str, Any], where: str) -> None:
    for name, state in machine["States"].items():
        at, kind = f"{where}.States.{name}", state.get("Type")
        if kind not in _FIELDS:
            raise ValueError(f"{at}: state type {kind!r} is not supported by the Durable orchestrator")
        if extra := set(state) - _FIELDS[kind]:
            raise ValueError(f"{at}: fields {sorted(extra)} are not supported by the Durable orchestrator")
        paths = [state.get("ResultPath", "$"), state.get("ItemsPath", "$"), state.get("SecondsPath", "$")]
        paths += [c.get("ResultPath", "$") for c in state.get("Catch", [])]
        paths += [v for k, v in state.get("ItemSelector", {}).items() if k.endswith(".$") and v != _ITEM]
        if bad := [p for p in paths if not (isinstance(p, str) and _PATH.match(p))]:
            raise ValueError(f"{at}: paths {bad} are not supported (only $ and $.a.b)")
        if len(state.get("Retry", [])) > 1:
            raise ValueError(f"{at}: one Retry rule at most (Durable takes one retry policy per call)")
        if kind == "Task" and not _PLAIN_NAME.match(state["Resource"]):
            raise ValueError(f"{at}: Resource {state['Resource']!r} is not a handler name")
        if kind == "Map":
            _check(state["ItemProcessor"], f"{at}.ItemProcessor")


def _processor(flow: str, maps: list[str]) -> Mapping[str, Any]:
    """The state machine at ``maps`` (names of nested Map states) in ``flow``'s definition."""
    machine: Mapping[str, Any] = definition(flow)
    for name in maps:
        machine = machine["States"][name]["ItemProcessor"]
    return machine


def _get(data: Any, path: str) -> Any:
    for key in path.split(".")[1:]:
        data = data[key]
    return data


def _put(data: Any, path: str, value: Any) -> Any:
    """``data`` with ``value`` at ``path`` (a copy: the input is not changed)."""
    keys = path.split(".")[1:]
    if not keys:
        return value
    out = copy.copy(data)
    node = out
    for key in keys[:-1]:
        node[key] = copy.copy(node.get(key) or {})
        node = node[key]
    node[keys[-1]] = value
    return out


class _RetryOptions(df.RetryOptions):
    """``RetryOptions`` with the backoff the Python SDK does not expose (the extension reads it)."""

    def __init__(self, rule: Mapping[str, Any]) -> None:
        super().__init__(
            int(float(rule.get("IntervalSeconds", 1)) * 1000), int(rule.get("MaxAttempts", 3)) + 1
        )
        self.backoff = float(rule.get("BackoffRate", 2.0))
        self.max_delay = rule.get("MaxDelaySeconds")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(super().to_json())
        data["backoffCoefficient"] = self.backoff
        if self.max_delay:
            data["maxRetryIntervalInMilliseconds"] = int(self.max_delay) * 1000
        return data


# --- the walker ----------------------------------------------------------------------------------
Scope = tuple[str | int, ...]


def run_states(ctx: df.DurableOrchestrationContext, flow: str, scope: Scope, data: Any) -> Orchestration:
    """Walk the state machine at ``scope`` (Map names and item indexes) of definition ``flow``
    (its file name) from ``StartAt`` to an ``End``; its output. A failure no Catch takes is raised."""
    machine = _processor(flow, [s for s in scope if isinstance(s, str)])
    name = machine["StartAt"]
    while True:
        state = machine["States"][name]
        try:
            data = yield from _STATES[state["Type"]](ctx, flow, scope, name, state, data)
        except FlowFailure as failure:
            catcher = next(
                (c for c in state.get("Catch", []) if _matches(c["ErrorEquals"], failure.error)), None
            )
            if catcher is None:
                raise
            data, name = _put(data, catcher.get("ResultPath", "$"), failure.as_json()), catcher["Next"]
            continue
        if state.get("End"):
            return data
        name = state["Next"]


def _task(ctx: df.DurableOrchestrationContext, flow: str, scope: Scope, name: str,
          state: Mapping[str, Any], data: Any) -> Orchestration:  # fmt: skip
    rule = (state.get("Retry") or [None])[0]
    request = {"task": state["Resource"], "event": data, "retry_on": []}
    if rule is not None and int(rule.get("MaxAttempts", 3)) > 0:
        request["retry_on"] = list(rule["ErrorEquals"])
        call = ctx.call_activity_with_retry(TASK, _RetryOptions(rule), request)
    else:
        call = ctx.call_activity(TASK, request)
    try:
        answer = yield call
    except Exception as exc:  # retries exhausted, or the host failed the activity
        raise flow_error(exc) from None
    if "error" in answer:
        raise FlowFailure(answer["error"]["Error"], answer["error"].get("Cause") or "")
    return _put(data, state.get("ResultPath", "$"), answer["result"])


def _wait(ctx: df.DurableOrchestrationContext, flow: str, scope: Scope, name: str,
          state: Mapping[str, Any], data: Any) -> Orchestration:  # fmt: skip
    seconds = state["Seconds"] if "Seconds" in state else _get(data, state["SecondsPath"])
    if not (isinstance(seconds, int) and seconds >= 0):
        raise FlowFailure("States.Runtime", f"{name}: wait of {seconds!r} is not a non-negative integer")
    if seconds:
        yield ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=seconds))
    return data


def _map(ctx: df.DurableOrchestrationContext, flow: str, scope: Scope, name: str,
         state: Mapping[str, Any], data: Any) -> Orchestration:  # fmt: skip
    items = _get(data, state.get("ItemsPath", "$"))
    selector = state.get("ItemSelector")
    inputs = [
        item if selector is None else {
            k.removesuffix(".$"): (item if v == _ITEM else _get(data, v)) if k.endswith(".$") else v
            for k, v in selector.items()
        }
        for item in items
    ]  # fmt: skip
    limit = int(state.get("MaxConcurrency", 0)) or MAP_CONCURRENCY_LIMIT
    results: list[Any] = []
    if limit == 1:  # in order, in this orchestration
        for index, item in enumerate(inputs):
            results.append((yield from run_states(ctx, flow, (*scope, name, index), item)))
    else:
        for start in range(0, len(inputs), limit):
            branches = [
                ctx.call_sub_orchestrator(BRANCH, {"flow": flow, "scope": [*scope, name, i], "input": item},
                                          branch_id(ctx.instance_id, (*scope, name, i)))
                for i, item in enumerate(inputs[start : start + limit], start)
            ]  # fmt: skip
            try:
                results += yield ctx.task_all(branches)
            except Exception as exc:
                raise flow_error(exc) from None
    return _put(data, state.get("ResultPath", "$"), results)


_STATES = {"Task": _task, "Wait": _wait, "Map": _map}


def branch_id(parent: str, scope: Scope) -> str:
    return f"{parent}:{'.'.join(str(s) for s in scope)}"


# --- orchestrators -------------------------------------------------------------------------------
def run_flow(ctx: df.DurableOrchestrationContext, flow: str) -> Orchestration:
    """A top-level flow: the definition's output, then the job ended with it (re-raising a failure)."""
    _, name = FLOWS[flow]
    try:
        output = yield from run_states(ctx, name, (), ctx.get_input())
    except FlowFailure as failure:
        yield ctx.call_activity_with_retry(FINISHED, FINISH_RETRY, {
            "job_id": ctx.instance_id, "status": "FAILED", "output": None,
            "error": f"{failure.error} {failure.cause}".strip(),
        })  # fmt: skip
        raise
    yield ctx.call_activity_with_retry(
        FINISHED,
        FINISH_RETRY,
        {"job_id": ctx.instance_id, "status": "SUCCEEDED", "output": output, "error": None},
    )
    return output


# the parameter is named ``context``: the orchestration trigger binds that name
def recovery_flow(context: df.DurableOrchestrationContext) -> Orchestration:
    return (yield from run_flow(context, "recovery"))


def test_cleanup(context: df.DurableOrchestrationContext) -> Orchestration:
    return (yield from run_flow(context, "test-cleanup"))


def flow_branch(context: df.DurableOrchestrationContext) -> Orchestration:
    """One parallel Map iteration: ``{"flow", "scope", "input"}`` -> the iteration's output."""
    request = context.get_input()
    return (yield from run_states(context, request["flow"], tuple(request["scope"]), request["input"]))


# --- activities ----------------------------------------------------------------------------------
def run_task(request: Mapping[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    """Activity :data:`TASK`: ``{"result": ...}`` or ``{"error": {"Error", "Cause"}}``; raises
    :class:`RetryableTaskError` for an error named in ``retry_on``."""
    from functions.recovery.handlers import HANDLERS

    try:
        return {"result": HANDLERS[request["task"]](request["event"], ports)}
    except Exception as exc:
        error, cause = type(exc).__name__, str(exc)
        if _matches(list(request.get("retry_on") or []), error):
            raise RetryableTaskError(error, cause) from exc
        return {"error": {"Error": error, "Cause": cause}}


def finish(request: Mapping[str, Any], ctl: Control) -> dict[str, Any]:
    """Activity :data:`FINISHED`: end the job (named like the instance) as execution_events.py does."""
    job = completion.complete_from_workflow(
        ctl,
        request["job_id"],
        status=request["status"],
        output=request.get("output"),
        error=request.get("error"),
    )
    if job is None:
        return {"job_id": request["job_id"], "already_ended": True}
    return {"job_id": job.id, "state": str(job.state)}
