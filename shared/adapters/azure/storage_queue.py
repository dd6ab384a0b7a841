"""JobQueue on Azure Queue storage (or Azurite) through azure-storage-queue.

Mapping onto the port:

* ``send`` -> Put Message with the body as compact JSON **text** (no base64: base64 would
  shrink the usable body to 48 KiB under Azure's 64 KiB message limit) and a time-to-live
  of "never" (``-1``), so a job is never silently dropped after Azure's default 7 days.
  The text is XML-safe: JSON escapes control characters, and the two non-characters XML
  forbids (U+FFFE, U+FFFF) are written as JSON escapes too. Azure's 64 KiB limit counts
  the whole message, and a dead-lettered message is wrapped in a small envelope (below),
  so a body may be at most 64 KiB minus :data:`ENVELOPE_RESERVE` bytes: a little under the
  port's 64 KiB (:class:`InvalidInputError` beyond). ``delay_seconds`` becomes the
  message's initial visibility timeout.
* ``receive`` -> Get Messages (at most 10 per call, the port's limit) with the asked
  visibility timeout; ``receive_count`` is Azure's ``DequeueCount``. Azure refuses a
  visibility timeout of 0 on Get Messages, so ``visibility_seconds=0`` receives with 1 s
  and makes the message visible again at once (Update Message).
* ``ack`` -> Delete Message; ``extend``/``release`` -> Update Message with the new
  visibility timeout.

**Pop receipts.** The receipt is Azure's pop receipt, and Azure checks it strictly: a
redelivery issues a new one and the old one is refused (``PopReceiptMismatch``), so this
adapter honours the stale-receipt clauses exactly like SQLite: a stale ``ack`` or
``release`` does nothing, a stale ``extend`` raises :class:`ConflictError` (as does
``extend`` of a message that is gone). But Azure *also* issues a new pop receipt on every
Update Message, i.e. on our own ``extend`` and ``release``, while the port's
:class:`Message` (and the copy the job service keeps in the job record) holds the receipt
of the delivery. The adapter therefore remembers, per delivery, the latest pop receipt
it obtained (thread-safe, in process), and resolves a message's receipt through that map.
**Open limitation:** the map is per process. A delivery extended in one process and
acked or extended in another (e.g. two Azure Functions instances serving one node's
heartbeats) uses the delivery's original pop receipt there, which Azure refuses: the
``extend`` raises :class:`ConflictError` and the ``ack`` is a no-op (the message comes
back after its visibility timeout and the job service acks it then, because the job is
finished). Sharing the map through a table is the fix if that deployment shape is used.

**Dead letters.** Azure queues have no redrive policy, so the adapter does it: the
receive that finds a message with ``DequeueCount > max_receives`` (its last allowed
delivery has happened) copies it to the dead-letter queue and deletes it instead of
delivering it — the same moment as SQS and SQLite, so a message is delivered at most
``max_receives`` times. The copy is sent first, then the original deleted: a crash in
between leaves a duplicate, never a loss. In the dead-letter queue the message is the
envelope ``{"id": <original id>, "receive_count": <deliveries>, "body": <body>}``.
``dead_letters`` peeks (up to 32, Azure's peek limit) or, for larger limits, receives
batches with a short visibility and makes them visible again; receipts are empty.

**Dedup.** Azure Queue storage cannot deduplicate; ``dedup_key`` is accepted and ignored
(best effort, as on SQS standard queues). The control plane's conditional job claim in
the metadata store is the real guard, and delivery is at-least-once anyway.

Throttling (``ServerBusy``, 429, 503), other 5xx and connection failures become
:class:`TransientStoreError`; refused credentials :class:`StoreAccessError`; a missing
queue :class:`StoreError`; the SDK error is chained as ``__cause__``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from enum import Enum
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.queue import ExponentialRetry, QueueClient, QueueServiceClient

from shared.adapters.azure.error_codes import ACCESS_CODES
from shared.adapters.local.sqlite_queue import encode_body
from shared.errors import (
    ConflictError,
    InvalidInputError,
    StoreAccessError,
    StoreError,
    TransientStoreError,
)
from shared.ports.job_queue import JobQueue, Message

#: Azure's limit on a message (the whole text).
MAX_MESSAGE_BYTES = 64 * 1024
#: Bytes of every message kept free for the dead-letter envelope.
ENVELOPE_RESERVE = 128

_BATCH = 10  # the port's per-call limit (Azure allows 32)
_PEEK_MAX = 32
_MAX_VISIBILITY = 12 * 3600
_MAX_DELAY = 900
_DLQ_PEEK_VISIBILITY = 30
_RECEIPT_CACHE = 100_000

_STALE_CODES = frozenset({"PopReceiptMismatch", "MessageNotFound"})
_TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError"})
_INVALID_CODES = frozenset(
    {"RequestBodyTooLarge", "MessageTooLarge", "OutOfRangeQueryParameterValue", "InvalidXmlDocument"}
)


def _code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    if isinstance(code, Enum):
        code = code.value
    return str(code or "")


def _check_seconds(name: str, value: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidInputError(f"{name} must be an integer in [0, {maximum}], got {value!r}")
    return value


def service_from_connection_string(connection_string: str, *, retries: int = 1) -> QueueServiceClient:
    """A QueueServiceClient for ``connection_string`` with ``retries`` quick SDK retries (the SDK's
    default waits 15 s before its first retry; the retry policy that matters is a wrapper's job)."""
    return QueueServiceClient.from_connection_string(
        connection_string,
        retry_policy=ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=retries, random_jitter_range=1
        ),
        connection_timeout=10,
        read_timeout=30,
    )


def _wire_text(body: dict[str, Any]) -> str:
    text = encode_body(body).replace("\ufffe", "\\ufffe").replace("\uffff", "\\uffff")
    size = len(text.encode("utf-8"))
    if size > MAX_MESSAGE_BYTES - ENVELOPE_RESERVE:
        raise InvalidInputError(
            f"job message body is {size} bytes serialised; Azure Queue storage takes at most"
            f" {MAX_MESSAGE_BYTES - ENVELOPE_RESERVE}",
            size=size,
        )
    return text


class AzureStorageJobQueue:
    """Azure queue ``queue_name``; dead letters go to ``dead_letter_queue_name``.

    ``queue_service_or_connection_string`` is a ``QueueServiceClient`` or a storage
    connection string. ``max_receives`` is the number of deliveries after which an unacked
    message is dead-lettered. ``dead_letter_queue_name`` defaults to ``<queue_name>-dlq``.
    The constructor does no I/O; :meth:`create_queues` creates both queues.
    """

    def __init__(
        self,
        queue_service_or_connection_string: QueueServiceClient | str,
        queue_name: str,
        *,
        dead_letter_queue_name: str | None = None,
        max_receives: int = 5,
    ) -> None:
        if not queue_name:
            raise InvalidInputError("Azure queue name must not be empty")
        if isinstance(max_receives, bool) or not isinstance(max_receives, int) or max_receives < 1:
            raise InvalidInputError(f"max_receives must be >= 1, got {max_receives!r}")
        service = queue_service_or_connection_string
        if isinstance(service, str):
            service = service_from_connection_string(service)
        self.queue_name = queue_name
        self.dead_letter_queue_name = dead_letter_queue_name or f"{queue_name}-dlq"
        self.max_receives = max_receives
        self._service: QueueServiceClient = service
        # text in, text out: the encoding policy is explicit (no base64, see the module docstring)
        self._queue: QueueClient = service.get_queue_client(
            queue_name, message_encode_policy=None, message_decode_policy=None
        )
        self._dlq: QueueClient = service.get_queue_client(
            self.dead_letter_queue_name, message_encode_policy=None, message_decode_policy=None
        )
        self._lock = threading.Lock()
        self._latest: OrderedDict[tuple[str, str], str] = OrderedDict()

    @classmethod
    def create_queues(
        cls,
        queue_service_or_connection_string: QueueServiceClient | str,
        queue_name: str,
        *,
        dead_letter_queue_name: str | None = None,
        max_receives: int = 5,
    ) -> AzureStorageJobQueue:
        """Create the queue and its dead-letter queue unless they exist; return the adapter."""
        queue = cls(
            queue_service_or_connection_string,
            queue_name,
            dead_letter_queue_name=dead_letter_queue_name,
            max_receives=max_receives,
        )
        for client in (queue._dlq, queue._queue):
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
            except AzureError as exc:
                raise queue._fail(exc, "create", client.queue_name) from exc
        return queue

    # --- plumbing -----------------------------------------------------------------------
    def _fail(self, exc: AzureError, action: str, name: str | None = None) -> StoreError | InvalidInputError:
        name = name or self.queue_name
        code = _code(exc)
        status = int(getattr(exc, "status_code", None) or 0)
        fields: dict[str, object] = {"queue": name, "code": code, "status": status}
        if code == "QueueNotFound":
            return StoreError(f"Azure queue {name!r} does not exist ({action})", **fields)
        if isinstance(exc, ClientAuthenticationError) or code in ACCESS_CODES or status in (401, 403):
            return StoreAccessError(
                f"access refused by Azure ({code or status}) on {action} {name}; check the account key or SAS",
                **fields,
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return TransientStoreError(
                f"Azure queue {action} on {name} failed: {type(exc).__name__}", **fields
            )
        if code in _TRANSIENT_CODES or status in (408, 429) or status >= 500:
            return TransientStoreError(f"Azure queue {action} on {name} failed: {code or status}", **fields)
        if code in _INVALID_CODES or status == 413:
            return InvalidInputError(f"Azure refused {action} on {name}: {code or status}", **fields)
        return StoreError(f"Azure queue {action} on {name} failed: {code or status or exc}", **fields)

    def _remember(self, message_id: str, delivery: str, current: str) -> None:
        with self._lock:
            self._latest[(message_id, delivery)] = current
            self._latest.move_to_end((message_id, delivery))
            while len(self._latest) > _RECEIPT_CACHE:
                self._latest.popitem(last=False)

    def _current(self, message: Message) -> str:
        with self._lock:
            return self._latest.get((message.id, message.receipt), message.receipt)

    def _forget(self, message: Message) -> None:
        with self._lock:
            self._latest.pop((message.id, message.receipt), None)

    def _update(self, message: Message, seconds: int, action: str) -> AzureError | None:
        """Update Message with the delivery's latest pop receipt; the SDK error when it is stale."""
        try:
            updated = self._queue.update_message(
                message.id, pop_receipt=self._current(message), visibility_timeout=seconds
            )
        except AzureError as exc:
            if _code(exc) in _STALE_CODES:
                return exc
            raise self._fail(exc, action) from exc
        self._remember(message.id, message.receipt, str(updated.pop_receipt))
        return None

    def _bury(self, raw: Any) -> None:
        """Move ``raw`` (received with DequeueCount > max_receives) to the dead-letter queue."""
        content = str(raw.content)
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        body_text = content if isinstance(body, dict) else json.dumps({"_raw": content})
        envelope = f'{{"id":{json.dumps(str(raw.id))},"receive_count":{int(raw.dequeue_count or 0) - 1},"body":{body_text}}}'
        try:
            self._dlq.send_message(envelope, time_to_live=-1)
        except AzureError as exc:
            raise self._fail(exc, "dead-letter", self.dead_letter_queue_name) from exc
        try:
            self._queue.delete_message(raw.id, pop_receipt=raw.pop_receipt)
        except AzureError as exc:
            if _code(exc) not in _STALE_CODES:
                raise self._fail(exc, "dead-letter") from exc

    # --- the port -------------------------------------------------------------------------
    def send(self, body: dict[str, Any], *, dedup_key: str | None = None, delay_seconds: int = 0) -> str:
        """Enqueue ``body``; ``dedup_key`` is ignored (Azure queues cannot deduplicate)."""
        text = _wire_text(body)
        _check_seconds("delay_seconds", delay_seconds, _MAX_DELAY)
        try:
            sent = self._queue.send_message(text, visibility_timeout=delay_seconds or None, time_to_live=-1)
        except AzureError as exc:
            raise self._fail(exc, "send") from exc
        return str(sent.id)

    def receive(self, *, max_messages: int = 1, visibility_seconds: int = 300) -> list[Message]:
        """Up to ``min(max_messages, 10)`` messages.

        Exhausted messages met on the way are dead-lettered and do not count; a message
        whose text is not a JSON object (not sent by this adapter) is left hidden, so it is
        dead-lettered after ``max_receives`` tries.
        """
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1:
            raise InvalidInputError(f"max_messages must be >= 1, got {max_messages!r}")
        _check_seconds("visibility_seconds", visibility_seconds, _MAX_VISIBILITY)
        want = min(max_messages, _BATCH)
        out: list[Message] = []
        for _ in range(8):  # bounded: each round either delivers or dead-letters something
            count = want - len(out)
            try:
                raws = list(
                    self._queue.receive_messages(
                        messages_per_page=count,
                        max_messages=count,
                        visibility_timeout=max(1, visibility_seconds),
                    )
                )
            except AzureError as exc:
                raise self._fail(exc, "receive") from exc
            buried = 0
            for raw in raws:
                if int(raw.dequeue_count or 0) > self.max_receives:
                    self._bury(raw)
                    buried += 1
                    continue
                try:
                    body = json.loads(str(raw.content))
                except ValueError:
                    continue
                if not isinstance(body, dict):
                    continue
                message = Message(str(raw.id), str(raw.pop_receipt), body, int(raw.dequeue_count or 0))
                if visibility_seconds == 0 and self._update(message, 0, "receive") is not None:
                    continue  # gone or redelivered in the meantime
                out.append(message)
            if not raws or not buried or len(out) >= want:
                break
        return out

    def ack(self, message: Message) -> None:
        try:
            self._queue.delete_message(message.id, pop_receipt=self._current(message))
        except AzureError as exc:
            if _code(exc) not in _STALE_CODES:
                raise self._fail(exc, "ack") from exc
        self._forget(message)

    def extend(self, message: Message, visibility_seconds: int) -> None:
        _check_seconds("visibility_seconds", visibility_seconds, _MAX_VISIBILITY)
        stale = self._update(message, visibility_seconds, "extend")
        if stale is not None:
            raise ConflictError(
                f"message {message.id} in Azure queue {self.queue_name!r} was acked, dead-lettered or"
                " redelivered; this receipt is stale",
                message_id=message.id,
                queue=self.queue_name,
            ) from stale

    def release(self, message: Message, *, delay_seconds: int = 0) -> None:
        _check_seconds("delay_seconds", delay_seconds, _MAX_VISIBILITY)
        self._update(message, delay_seconds, "release")

    @staticmethod
    def _dead(raw: Any) -> Message | None:
        try:
            envelope = json.loads(str(raw.content))
            return Message(
                str(envelope["id"]), "", dict(envelope["body"]), int(envelope.get("receive_count", 0))
            )
        except (ValueError, KeyError, TypeError):
            return None

    def dead_letters(self, *, limit: int = 100) -> list[Message]:
        """Up to ``limit`` dead-lettered messages, without consuming them; receipts are empty."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInputError(f"limit must be >= 1, got {limit!r}")
        out: list[Message] = []
        if limit <= _PEEK_MAX:
            try:
                raws = list(self._dlq.peek_messages(max_messages=limit))
            except AzureError as exc:
                raise self._fail(exc, "dead_letters", self.dead_letter_queue_name) from exc
            return [m for m in (self._dead(raw) for raw in raws) if m is not None]
        held: list[tuple[str, str]] = []
        try:
            while len(out) < limit:
                count = min(_PEEK_MAX, limit - len(out))
                raws = list(
                    self._dlq.receive_messages(
                        messages_per_page=count, max_messages=count, visibility_timeout=_DLQ_PEEK_VISIBILITY
                    )
                )
                if not raws:
                    break
                for raw in raws:
                    held.append((str(raw.id), str(raw.pop_receipt)))
                    message = self._dead(raw)
                    if message is not None:
                        out.append(message)
        except AzureError as exc:
            raise self._fail(exc, "dead_letters", self.dead_letter_queue_name) from exc
        finally:
            for message_id, receipt in held:
                try:
                    self._dlq.update_message(message_id, pop_receipt=receipt, visibility_timeout=0)
                except AzureError:
                    pass  # it reappears after the short peek visibility anyway
        return out[:limit]


if TYPE_CHECKING:  # mypy proves the adapter implements the port
    _conforms: JobQueue = AzureStorageJobQueue("UseDevelopmentStorage=true", "jobs")
