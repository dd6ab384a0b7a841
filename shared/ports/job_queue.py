"""The JobQueue port: at-least-once delivery of job ids to nodes.

Contract (every adapter passes ``tests/contract/test_job_queue.py``):

* ``send`` enqueues a JSON-able ``body`` (at most 64 KiB serialised) and returns a message
  id. With ``dedup_key``, a second send of the same key while the first message is still
  in the queue (not yet acked or dead-lettered) is a no-op returning the first id.
* ``receive`` hands out up to ``max_messages`` visible messages and hides each for
  ``visibility_seconds``; a message not acked by then becomes visible again (redelivery
  after a consumer crash). ``Message.receive_count`` counts deliveries, including this one.
* A message delivered ``max_receives`` times without an ack moves to the dead-letter
  queue instead of being delivered again; ``dead_letters`` lists those.
* ``ack`` deletes a message (idempotent); ``extend`` pushes its visibility deadline
  (a heartbeat while a long job runs); ``release`` makes it visible again after
  ``delay_seconds`` (give up now, let another consumer retry). With a stale receipt (the
  message was redelivered to someone else since) the SQLite adapter makes ``ack``/``release``
  no-ops and ``extend`` raise :class:`ConflictError`; SQS accepts old receipts, so callers
  MUST NOT rely on either: the job service only acts on the receipt of the delivery that
  won the job's conditional claim. A message that is gone makes ``extend`` raise
  :class:`ConflictError` on every adapter.
* ``receive`` returns at most 10 messages per call (the SQS limit). Deduplication is strict
  on SQLite and on SQS FIFO queues (for SQS: 5 minutes from the first send); on SQS
  standard queues it is best effort, and the conditional job claim is the real guard.
* Safe to use from many threads and, for durable adapters, many processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    id: str
    receipt: str
    body: dict[str, Any]
    receive_count: int


class JobQueue(Protocol):
    def send(self, body: dict[str, Any], *, dedup_key: str | None = None, delay_seconds: int = 0) -> str:
        """Enqueue ``body``; return the message id."""

    def receive(self, *, max_messages: int = 1, visibility_seconds: int = 300) -> list[Message]:
        """Up to ``max_messages`` messages, each hidden for ``visibility_seconds``."""

    def ack(self, message: Message) -> None:
        """Delete the message: the work is done."""

    def extend(self, message: Message, visibility_seconds: int) -> None:
        """Keep the message hidden for ``visibility_seconds`` from now."""

    def release(self, message: Message, *, delay_seconds: int = 0) -> None:
        """Make the message visible again after ``delay_seconds``."""

    def dead_letters(self, *, limit: int = 100) -> list[Message]:
        """Messages that exceeded ``max_receives`` deliveries."""
