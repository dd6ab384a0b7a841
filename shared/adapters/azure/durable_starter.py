"""WorkflowStarter on Azure Durable Functions, through an Azure Storage queue.

The API runs in a synchronous function without a Durable client binding, so ``start``
puts a start request on a queue (``lifeboat-flows`` by default) and the function app's
queue trigger (``flow_starter`` in functions/azure/function_app.py), which has the client
binding, starts the orchestration with instance id = ``execution_name`` (the job id) unless
an instance with that id exists. The returned execution id is that instance id, known before
the orchestration exists: the port's idempotency per ``execution_name`` is the trigger's.

The message is compact JSON text (the app's host.json sets ``messageEncoding: none`` for
queue triggers) ``{"flow", "instance_id", "payload_z"}``, where ``payload_z`` is the flow
input as zlib-compressed JSON in base64: a plan's flow input repeats its field names per
machine and compresses about tenfold, which keeps large plans under Azure's 64 KiB message
limit (a message over it is refused with :class:`InvalidInputError` before sending). The
message never expires (time-to-live ``-1``). Throttling, 5xx and connection failures become
:class:`TransientStoreError`, refused credentials :class:`StoreAccessError`, a missing queue
:class:`StoreError`; the SDK error is chained.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.queue import QueueClient, QueueServiceClient

from shared.adapters.azure.error_codes import ACCESS_CODES
from shared.adapters.azure.storage_queue import MAX_MESSAGE_BYTES, service_from_connection_string
from shared.errors import InvalidInputError, StoreAccessError, StoreError, TransientStoreError
from shared.ports.workflow import FLOWS

DEFAULT_QUEUE = "lifeboat-flows"
_TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError"})


def encode_start(flow: str, instance_id: str, payload: dict[str, Any]) -> str:
    """The queue message text of one start request."""
    packed = zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 6)
    return json.dumps(
        {"flow": flow, "instance_id": instance_id, "payload_z": base64.b64encode(packed).decode()}
    )


def decode_start(text: str | bytes) -> tuple[str, str, dict[str, Any]]:
    """``(flow, instance_id, payload)`` of a message written by :func:`encode_start`."""
    try:
        message = json.loads(text)
        payload = json.loads(zlib.decompress(base64.b64decode(message["payload_z"])))
        flow, instance_id = message["flow"], message["instance_id"]
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise InvalidInputError(f"not a flow start message: {exc}") from exc
    if flow not in FLOWS or not isinstance(instance_id, str) or not isinstance(payload, dict):
        raise InvalidInputError(f"not a flow start message: flow {flow!r}, instance {instance_id!r}")
    return flow, instance_id, payload


class DurableQueueStarter:
    """Start requests on queue ``queue_name`` of ``queue_service_or_connection_string`` (no I/O here)."""

    def __init__(self, queue_service_or_connection_string: QueueServiceClient | str,
                 queue_name: str = DEFAULT_QUEUE) -> None:  # fmt: skip
        service = queue_service_or_connection_string
        if isinstance(service, str):
            service = service_from_connection_string(service)
        self.queue_name = queue_name
        self._queue: QueueClient = service.get_queue_client(
            queue_name, message_encode_policy=None, message_decode_policy=None
        )

    def create_queue(self) -> DurableQueueStarter:
        """Create the queue unless it exists (the deployment does this in Azure)."""
        try:
            self._queue.create_queue()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise self._fail(exc, "create") from exc
        return self

    def start(self, flow: str, execution_name: str, payload: dict[str, Any]) -> str:
        if flow not in FLOWS:
            raise InvalidInputError(f"no Durable orchestration for flow {flow!r}", flow=flow)
        text = encode_start(flow, execution_name, payload)
        if (size := len(text.encode())) > MAX_MESSAGE_BYTES:
            raise InvalidInputError(
                f"the {flow} start request is {size} bytes; an Azure queue message holds at most"
                f" {MAX_MESSAGE_BYTES}", size=size,
            )  # fmt: skip
        try:
            self._queue.send_message(text, time_to_live=-1)
        except AzureError as exc:
            raise self._fail(exc, "send") from exc
        return execution_name

    def _fail(self, exc: AzureError, action: str) -> StoreError:
        code = str(
            getattr(getattr(exc, "error_code", None), "value", None) or getattr(exc, "error_code", "") or ""
        )
        status = int(getattr(exc, "status_code", None) or 0)
        fields: dict[str, object] = {"queue": self.queue_name, "code": code, "status": status}
        what = f"Azure queue {action} on {self.queue_name}"
        if code == "QueueNotFound":
            return StoreError(f"Azure queue {self.queue_name!r} does not exist ({action})", **fields)
        if isinstance(exc, ClientAuthenticationError) or code in ACCESS_CODES or status in (401, 403):
            return StoreAccessError(f"{what}: access refused ({code or status})", **fields)
        if (isinstance(exc, ServiceRequestError | ServiceResponseError) or code in _TRANSIENT_CODES
                or status == 429 or status >= 500):  # fmt: skip
            return TransientStoreError(f"{what} failed: {code or status or exc}", **fields)
        return StoreError(f"{what} failed: {code or status}: {exc}", **fields)
