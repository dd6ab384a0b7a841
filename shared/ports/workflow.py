"""The WorkflowStarter port: hand a recovery run to a workflow engine that runs it on its own.

Contract:

* ``start(flow, execution_name, payload)`` starts the flow named ``flow``
  (``recovery`` or ``test-cleanup``: the definitions in functions/recovery/) with
  ``payload`` (JSON) as its input, under ``execution_name`` (the job id), and returns
  the engine's execution id.
* Idempotent per ``execution_name``: starting the same name again with the same payload
  returns the first execution's id (Step Functions' own rule) instead of starting another.
* Unknown ``flow``: :class:`~shared.errors.InvalidInputError`. Engine unreachable or
  throttling: :class:`~shared.errors.TransientStoreError` (the caller fails the job).
* The outcome comes back asynchronously (in AWS: an EventBridge execution-status event
  handled by functions/recovery/execution_events.py), never through this port.
"""

from __future__ import annotations

from typing import Any, Protocol

FLOWS = ("recovery", "test-cleanup")


class WorkflowStarter(Protocol):
    def start(self, flow: str, execution_name: str, payload: dict[str, Any]) -> str: ...
