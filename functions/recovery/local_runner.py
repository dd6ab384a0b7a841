"""Run the recovery flow and the test cleanup in this process (embedded mode, node runners).

The same ASL JSON that Step Functions runs is executed by :mod:`shared.workflow.asl`,
each Task calling its handler from :mod:`functions.recovery.handlers` in-process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from functions.recovery.definition import RECOVERY_FLOW, TEST_CLEANUP, function_name, render, task_names
from functions.recovery.handlers import bind
from functions.recovery.models import CleanupRunState, RunState
from functions.recovery.ports import RecoveryPorts
from shared.domain.recovery import CleanupOutcome, FlowInput, RecoveryReport
from shared.errors import LifeboatError
from shared.workflow.asl import Execution, ExecutionStatus, run_state_machine


class RecoveryFlowError(LifeboatError):
    """The flow itself failed (not one machine: those are in the report)."""


def _run(name: str, data: dict[str, Any], ports: RecoveryPorts, *, execution: str,
         sleep: Callable[[float], object]) -> Execution:  # fmt: skip
    handlers = bind(ports)
    resources = {function_name(task): handlers[task] for task in task_names(name)}
    return run_state_machine(
        render(name), data, resources=resources, sleep=sleep, execution_name=execution,
        state_machine_name=name.split(".")[0],
    )  # fmt: skip


def run_recovery(
    flow: FlowInput, ports: RecoveryPorts, *, sleep: Callable[[float], object] = time.sleep
) -> tuple[RecoveryReport, Execution]:
    """Run one recovery; the report covers every machine, failed ones included."""
    execution = _run(
        RECOVERY_FLOW,
        RunState.of(flow).model_dump(mode="json"),
        ports,
        execution=flow.run.run_id,
        sleep=sleep,
    )
    if execution.status is not ExecutionStatus.SUCCEEDED:
        raise RecoveryFlowError(
            f"recovery flow {execution.status}: {execution.error}: {execution.cause}", run_id=flow.run.run_id
        )
    return RecoveryReport.model_validate(execution.output["report"]), execution


def run_cleanup(
    params: dict[str, Any], ports: RecoveryPorts, *, sleep: Callable[[float], object] = time.sleep
) -> CleanupOutcome:
    """Delete what a test recovery left (``params``: target and machines' resources)."""
    state = CleanupRunState.model_validate({"target": params["target"], "machines": params["machines"]})
    execution = _run(
        TEST_CLEANUP, state.model_dump(mode="json"), ports, execution=str(params.get("report_id", "cleanup")),
        sleep=sleep,
    )  # fmt: skip
    if execution.status is not ExecutionStatus.SUCCEEDED:
        raise RecoveryFlowError(f"test cleanup {execution.status}: {execution.error}: {execution.cause}")
    return CleanupOutcome.model_validate(execution.output["cleanup"])
