"""AWS Lambda entry points of the recovery flow: one function per Task of the definitions.

Each is ``handler(event, context)``: it runs the same handler as the local runner with
ports built once per execution environment (targets from the run's own
``recovery_target``, repositories opened read-only from their URL). CDK points each
Task's Lambda at ``functions.recovery.lambda_handlers.<snake_case task name>``.
"""

from __future__ import annotations

import re
from typing import Any

from functions.recovery.handlers import HANDLERS, Handler
from functions.recovery.ports import RecoveryPorts
from functions.recovery.reading import CachedTargets, open_existing_repository
from functions.recovery.targets import build_target

_ports: RecoveryPorts | None = None


def ports() -> RecoveryPorts:
    global _ports
    if _ports is None:
        _ports = RecoveryPorts(
            target_for=CachedTargets(build_target), open_repository=open_existing_repository
        )
    return _ports


def entry_name(task: str) -> str:
    """``ReconstructDisks`` -> ``reconstruct_disks`` (the attribute CDK names as the handler)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", task).lower()


def _entry(handler: Handler) -> Any:
    def entry(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return handler(event, ports())

    return entry


for _task, _handler in HANDLERS.items():
    globals()[entry_name(_task)] = _entry(_handler)
