"""Workflow engines for the recovery flow.

:mod:`shared.workflow.asl` interprets Amazon States Language locally, so the
recovery-flow definition that AWS Step Functions runs also runs in the embedded
control plane, calling Python task handlers in-process.
"""

from __future__ import annotations

from shared.workflow.asl import (
    SUPPORTED_INTRINSICS,
    Event,
    EventType,
    Execution,
    ExecutionStatus,
    InvalidDefinitionError,
    MissingTransitionError,
    StateTiming,
    TaskFailed,
    UnknownFieldError,
    UnknownResourceError,
    UnknownStateError,
    UnknownStateTypeError,
    UnreachableStateError,
    UnsupportedFeatureError,
    run_state_machine,
    validate_definition,
)

__all__ = [
    "SUPPORTED_INTRINSICS",
    "Event",
    "EventType",
    "Execution",
    "ExecutionStatus",
    "InvalidDefinitionError",
    "MissingTransitionError",
    "StateTiming",
    "TaskFailed",
    "UnknownFieldError",
    "UnknownResourceError",
    "UnknownStateError",
    "UnknownStateTypeError",
    "UnreachableStateError",
    "UnsupportedFeatureError",
    "run_state_machine",
    "validate_definition",
]
