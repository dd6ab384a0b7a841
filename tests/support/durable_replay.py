"""Durable Functions orchestrations run in this process by replaying their history through the real SDK.

What the Durable extension does for an out-of-process orchestrator, done here with
``azure-functions-durable``'s own classes: each episode builds a
:class:`DurableOrchestrationContext` from the history JSON (the document the extension
sends) and runs the orchestrator through :class:`Orchestrator` (the SDK's replay executor)
from the start. The tasks the episode leaves open (``context.open_tasks``, with the ids the
SDK numbered them by) are then performed and their events appended, as DTFx appends them:

* activities (``CallActivity``/``CallActivityWithRetry``) run synchronously;
  ``TaskScheduled`` then ``TaskCompleted`` or ``TaskFailed`` (``Reason``/``Details`` shaped
  like the Azure Storage provider's: the exception text JSON-escaped in ``Details``);
* a retry is the SDK's own: its timer (delay = first interval x backoff^(attempt - 1), as the
  extension computes it from the retry options) fires, then the activity runs again;
* timers (``CreateTimer``) fire at once, but are recorded in :attr:`DurableReplay.timers`
  and move the orchestration clock (``current_utc_datetime``) to their ``fire_at``;
* sub-orchestrations run to their end through the same driver (recursively, so a
  ``task_all`` over them runs them one after the other).

A new episode starts with ``OrchestratorStarted`` at the driver's clock, until the
orchestrator returns (``Completed``) or raises (``Failed``, with the exception's text).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.durable_functions import DurableOrchestrationContext, Orchestrator
from azure.durable_functions.constants import DATETIME_STRING_FORMAT
from azure.durable_functions.models.actions.CallActivityAction import CallActivityAction
from azure.durable_functions.models.actions.CallActivityWithRetryAction import CallActivityWithRetryAction
from azure.durable_functions.models.actions.CallSubOrchestratorAction import CallSubOrchestratorAction
from azure.durable_functions.models.actions.CreateTimerAction import CreateTimerAction
from azure.durable_functions.models.actions.NoOpAction import NoOpAction
from azure.durable_functions.models.history.HistoryEventType import HistoryEventType as E
from azure.durable_functions.models.ReplaySchema import ReplaySchema
from azure.durable_functions.models.Task import RetryAbleTask, TaskBase, TaskState


@dataclass
class Instance:
    id: str
    name: str
    input: Any
    status: str = "Running"
    output: Any = None
    error: str | None = None
    episodes: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DurableReplay:
    #: orchestrator name -> the user's generator function
    orchestrators: Mapping[str, Callable[..., Any]]
    #: activity name -> f(input) -> JSON result
    activities: Mapping[str, Callable[[Any], Any]]
    clock: datetime
    instances: dict[str, Instance] = field(default_factory=dict)
    #: (instance id, fire_at) of every durable timer the orchestrations created
    timers: list[tuple[str, datetime]] = field(default_factory=list)
    #: (instance id, activity, seconds) of every retry delay
    retries: list[tuple[str, str, float]] = field(default_factory=list)
    #: (instance id, activity, input) of every activity execution, retries included
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    max_episodes: int = 500

    def run(self, name: str, input: Any, instance_id: str, *, parent: str | None = None) -> Instance:
        """Run orchestration ``name`` to its end; raises if ``instance_id`` was used before."""
        assert instance_id not in self.instances, f"instance {instance_id} exists"
        instance = self.instances[instance_id] = Instance(instance_id, name, input)
        history = instance.history
        history += [
            self._event(E.ORCHESTRATOR_STARTED),
            self._event(E.EXECUTION_STARTED, Name=name, Version="", Input=json.dumps(input)),
        ]
        while True:
            instance.episodes += 1
            assert instance.episodes <= self.max_episodes, (
                f"{instance_id}: no end after {self.max_episodes} episodes"
            )
            context = DurableOrchestrationContext.from_json(json.dumps({
                "history": history, "instanceId": instance_id, "isReplaying": False,
                "parentInstanceId": parent, "input": json.dumps(input),
                "upperSchemaVersion": ReplaySchema.V3.value,
            }))  # fmt: skip
            try:
                state = json.loads(Orchestrator(self.orchestrators[name]).handle(context))
            except Exception as exc:  # the executor re-raises the orchestrator's exception, chained
                instance.status, instance.error = "Failed", str(exc.__cause__ or exc)
                return instance
            if state["isDone"]:
                instance.status, instance.output = "Completed", state.get("output")
                return instance
            pending = [t for _, t in sorted(context.open_tasks.items()) if isinstance(t, TaskBase)]
            assert pending, f"{instance_id}: the orchestration waits on nothing"
            scheduled: list[dict[str, Any]] = []
            completed: list[dict[str, Any]] = []
            for task in pending:
                self._perform(instance_id, task, scheduled, completed)
            history += [*scheduled, self._event(E.ORCHESTRATOR_COMPLETED), self._event(E.ORCHESTRATOR_STARTED),
                        *completed]  # fmt: skip

    # --- one open task ---------------------------------------------------------------------------
    def _perform(self, instance_id: str, task: TaskBase, scheduled: list[dict[str, Any]],
                 completed: list[dict[str, Any]]) -> None:  # fmt: skip
        assert task.state is TaskState.RUNNING
        action = task.action_repr
        if isinstance(action, NoOpAction) and isinstance(task.parent, RetryAbleTask):
            retry = task.parent
            if retry.is_waiting_on_timer:  # the pause before the next attempt
                options = retry.retry_options.to_json()
                delay = (
                    options["firstRetryIntervalInMilliseconds"]
                    / 1000
                    * float(options.get("backoffCoefficient", 1)) ** (retry.num_attempts - 1)
                )
                if retry.num_attempts < retry.retry_options.max_number_of_attempts:
                    self.retries.append((instance_id, retry.actions.function_name, delay))
                fire_at = self._tick(delay)
                scheduled.append(self._event(E.TIMER_CREATED, EventId=task.id, FireAt=fire_at))
                completed.append(self._event(E.TIMER_FIRED, TimerId=task.id, FireAt=fire_at))
                return
            action = retry.actions  # the activity again
        if isinstance(action, CallActivityAction | CallActivityWithRetryAction):
            name = action.function_name
            scheduled.append(self._event(E.TASK_SCHEDULED, EventId=task.id, Name=name))
            completed.append(self._activity(instance_id, name, json.loads(action.input_), task.id))
        elif isinstance(action, CreateTimerAction):
            fire_at = action.fire_at
            self.timers.append((instance_id, fire_at))
            self.clock = max(self.clock, fire_at)
            text = fire_at.strftime(DATETIME_STRING_FORMAT)
            scheduled.append(self._event(E.TIMER_CREATED, EventId=task.id, FireAt=text))
            completed.append(self._event(E.TIMER_FIRED, TimerId=task.id, FireAt=text))
        elif isinstance(action, CallSubOrchestratorAction):
            sub_id = action.instance_id or f"{instance_id}:{task.id}"
            scheduled.append(self._event(E.SUB_ORCHESTRATION_INSTANCE_CREATED, EventId=task.id,
                                         Name=action.function_name, InstanceId=sub_id))  # fmt: skip
            sub = self.run(action.function_name, json.loads(action._input), sub_id, parent=instance_id)
            if sub.status == "Completed":
                completed.append(self._event(E.SUB_ORCHESTRATION_INSTANCE_COMPLETED, TaskScheduledId=task.id,
                                             Result=json.dumps(sub.output)))  # fmt: skip
            else:
                completed.append(self._event(
                    E.SUB_ORCHESTRATION_INSTANCE_FAILED, TaskScheduledId=task.id,
                    Reason=f"Orchestrator function '{action.function_name}' failed: {sub.error}", Details="",
                ))  # fmt: skip
        else:
            raise AssertionError(f"{instance_id}: the driver cannot perform {type(action).__name__}")

    def _activity(self, instance_id: str, name: str, argument: Any, task_id: int) -> dict[str, Any]:
        self.calls.append((instance_id, name, argument))
        try:
            result = self.activities[name](argument)
        except Exception as exc:  # as the Azure Storage provider records an activity's failure
            message = f"Result: Failure\nException: {type(exc).__name__}: {exc}\nStack: (in process)"
            return self._event(
                E.TASK_FAILED, TaskScheduledId=task_id, Reason=f"Activity function '{name}' failed: ",
                Details=json.dumps({"$type": "System.Exception, System.Private.CoreLib", "Message": message}),
            )  # fmt: skip
        return self._event(E.TASK_COMPLETED, TaskScheduledId=task_id, Result=json.dumps(result))

    def _tick(self, seconds: float) -> str:
        self.clock += timedelta(seconds=seconds)
        return self.clock.strftime(DATETIME_STRING_FORMAT)

    def _event(self, kind: E, **fields: Any) -> dict[str, Any]:
        self.clock += timedelta(milliseconds=1)  # history timestamps strictly increase
        return {"EventType": int(kind), "EventId": fields.pop("EventId", -1), "IsPlayed": False,
                "Timestamp": self.clock.strftime(DATETIME_STRING_FORMAT), **fields}  # fmt: skip
