"""JobQueue on Amazon SQS through boto3.

Mapping onto the port:

* ``send`` -> ``SendMessage`` with the body as JSON. ``receive`` -> ``ReceiveMessage``
  (at most 10 per call, SQS's limit; ``VisibilityTimeout`` as asked; the short
  ``WaitTimeSeconds`` of the constructor, default 1 s so SQS queries all its servers
  instead of sampling). ``receive_count`` is SQS's ``ApproximateReceiveCount``.
* ``ack`` -> ``DeleteMessage``; ``extend`` -> ``ChangeMessageVisibility`` (an invalid or
  not-in-flight receipt becomes :class:`ConflictError`); ``release`` ->
  ``ChangeMessageVisibility(delay)`` (stale receipts ignored).
* Dead-lettering is SQS's own: the source queue's ``RedrivePolicy.maxReceiveCount`` is the
  port's ``max_receives`` (see :func:`create_queues`). SQS moves a message on the receive
  that finds it visible with ``ApproximateReceiveCount >= maxReceiveCount``.
  ``dead_letters`` peeks at the DLQ (receive, then visibility back to 0) without deleting.

**Dedup.** On a FIFO queue (URL ending ``.fifo``) ``dedup_key`` becomes the
``MessageDeduplicationId`` (its SHA-256, to fit SQS's charset) and every message gets its
own random ``MessageGroupId`` (no ordering, full parallelism). SQS FIFO dedup is a fixed
5-minute window from the first send, not "while the message is in the queue", and a
deduplicated send returns a fresh message id rather than the first one. On a *standard*
queue SQS cannot dedup at all: ``dedup_key`` is best-effort (recorded as a message
attribute only) and duplicates are possible — the control plane additionally dedups
through the metadata store's conditional writes, and job handlers are idempotent because
delivery is at-least-once anyway. FIFO queues accept no per-message delay, so
``send(delay_seconds>0)`` on one raises :class:`InvalidInputError`.

SQS also accepts *old* receipt handles of a message for ``DeleteMessage`` and
``ChangeMessageVisibility``: on SQS a stale ``ack`` may delete a message that was since
redelivered (the work it stands for is done, so this is harmless), and a stale
``extend`` raises :class:`ConflictError` only once the message is gone or not in flight.

Throttling, 5xx and connection failures become :class:`TransientStoreError` with the SDK
error chained as ``__cause__``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from shared.adapters.aws.s3_store import default_config
from shared.adapters.local.sqlite_queue import encode_body
from shared.errors import (
    ConflictError,
    InvalidInputError,
    StoreAccessError,
    StoreError,
    TransientStoreError,
)
from shared.ports.job_queue import Message

_SQS_MAX_BATCH = 10
_MAX_VISIBILITY = 12 * 3600
_MAX_DELAY = 900
_DLQ_PEEK_VISIBILITY = 30
_DLQ_RETENTION = 14 * 24 * 3600

_STALE_CODES = frozenset({"ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidReceiptHandle"})
_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "KmsThrottled",
        "OverLimit",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
    }
)
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "InvalidSecurity",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "UnrecognizedClientException",
        "KmsAccessDenied",
    }
)
_MISSING_QUEUE_CODES = frozenset({"NonExistentQueue", "QueueDoesNotExist"})
_INPUT_CODES = frozenset({"InvalidParameterValue", "MissingParameter", "InvalidMessageContents"})


def _code(exc: ClientError) -> str:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code.removeprefix("AWS.SimpleQueueService.")


def _check_seconds(name: str, value: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidInputError(f"{name} must be an integer in [0, {maximum}], got {value!r}")
    return value


def create_queues(
    name: str, max_receives: int, client: Any, *, fifo: bool = False, visibility_seconds: int = 300
) -> tuple[str, str]:
    """Create queue ``name`` and its DLQ ``name-dlq``; return ``(queue_url, dlq_url)``.

    The queue's ``RedrivePolicy`` sends a message to the DLQ once it has been received
    ``max_receives`` times without a delete. With ``fifo`` both queues are FIFO (``.fifo``
    is appended to the names when missing). Idempotent when the attributes match. Used by
    tests and embedded setups; in AWS the CDK stack creates the same pair.
    """
    base = name.removesuffix(".fifo")
    suffix = ".fifo" if fifo else ""
    fifo_attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
    try:
        dlq_url: str = client.create_queue(
            QueueName=f"{base}-dlq{suffix}",
            Attributes={"MessageRetentionPeriod": str(_DLQ_RETENTION), **fifo_attrs},
        )["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)})
        queue_url: str = client.create_queue(
            QueueName=f"{base}{suffix}",
            Attributes={
                "RedrivePolicy": redrive,
                "VisibilityTimeout": str(visibility_seconds),
                **fifo_attrs,
            },
        )["QueueUrl"]
    except (ClientError, BotoCoreError) as exc:
        raise _translate(exc, name, "create_queues") from exc
    return queue_url, dlq_url


def _translate(exc: Exception, where: str, action: str) -> StoreError | InvalidInputError:
    fields: dict[str, object] = {"queue": where}
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        fields.update(code=code, status=status)
        message = exc.response.get("Error", {}).get("Message", "")
        if code in _TRANSIENT_CODES or status == 429 or status >= 500:
            return TransientStoreError(f"SQS {action} on {where} failed: {code or status}", **fields)
        if code in _ACCESS_CODES or status in (401, 403):
            return StoreAccessError(
                f"access refused by SQS ({code or status}) on {action} {where}; check the credentials "
                "and the queue policy",
                **fields,
            )
        if code in _MISSING_QUEUE_CODES:
            return StoreError(f"SQS queue {where} does not exist ({action})", **fields)
        if code in _INPUT_CODES:
            return InvalidInputError(f"SQS rejected {action} on {where}: {code}: {message}", **fields)
        return StoreError(f"SQS {action} on {where} failed: {code or status}: {message}", **fields)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return StoreAccessError(f"no usable AWS credentials for SQS {action} on {where}: {exc}", **fields)
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return TransientStoreError(f"SQS {action} on {where} failed: {exc}", **fields)
    return StoreError(f"SQS {action} on {where} failed: {exc}", **fields)


class SqsJobQueue:
    """The SQS queue at ``queue_url``; dead letters are read from ``dlq_url``.

    When ``dlq_url`` is omitted it is found on first use of ``dead_letters`` from the
    queue's ``RedrivePolicy``. ``client`` is a boto3 SQS client (built from the standard
    AWS environment when omitted). ``wait_seconds`` is the ``WaitTimeSeconds`` of each
    receive (0-20; 0 is short polling). The constructor does no I/O.
    """

    def __init__(
        self,
        queue_url: str,
        *,
        dlq_url: str | None = None,
        client: Any = None,
        wait_seconds: int = 1,
    ) -> None:
        if not queue_url:
            raise InvalidInputError("SQS queue URL must not be empty")
        self.queue_url = queue_url
        self.dlq_url = dlq_url
        self.fifo = queue_url.endswith(".fifo")
        self.wait_seconds = _check_seconds("wait_seconds", wait_seconds, 20)
        if client is None:
            client = boto3.session.Session().client("sqs", config=default_config())
        self._client = client

    def _fail(self, exc: Exception, action: str, url: str | None = None) -> StoreError | InvalidInputError:
        return _translate(exc, url or self.queue_url, action)

    # --- the port -------------------------------------------------------------------------
    def send(self, body: dict[str, Any], *, dedup_key: str | None = None, delay_seconds: int = 0) -> str:
        kwargs: dict[str, Any] = {"QueueUrl": self.queue_url, "MessageBody": encode_body(body)}
        _check_seconds("delay_seconds", delay_seconds, _MAX_DELAY)
        if self.fifo:
            if delay_seconds:
                raise InvalidInputError(
                    "SQS FIFO queues take no per-message delay; use a standard queue for delayed jobs",
                    queue=self.queue_url,
                )
            kwargs["MessageGroupId"] = uuid.uuid4().hex
            kwargs["MessageDeduplicationId"] = (
                hashlib.sha256(dedup_key.encode("utf-8")).hexdigest()
                if dedup_key is not None
                else uuid.uuid4().hex
            )
        else:
            if delay_seconds:
                kwargs["DelaySeconds"] = delay_seconds
            if dedup_key is not None:
                kwargs["MessageAttributes"] = {"dedup_key": {"DataType": "String", "StringValue": dedup_key}}
        try:
            response = self._client.send_message(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "send") from exc
        return str(response["MessageId"])

    def _receive(self, url: str, count: int, visibility: int, action: str) -> list[dict[str, Any]]:
        try:
            response = self._client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=count,
                VisibilityTimeout=visibility,
                WaitTimeSeconds=self.wait_seconds,
                AttributeNames=["ApproximateReceiveCount"],
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, action, url) from exc
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    @staticmethod
    def _decode(raw: dict[str, Any], receipt: str) -> Message | None:
        try:
            body = json.loads(raw["Body"])
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        return Message(str(raw["MessageId"]), receipt, body, count)

    def receive(self, *, max_messages: int = 1, visibility_seconds: int = 300) -> list[Message]:
        """Up to ``min(max_messages, 10)`` messages.

        A message whose body is not a JSON object (not sent by this adapter) is skipped and
        left hidden; the redrive policy dead-letters it after ``max_receives`` tries.
        """
        if max_messages < 1:
            raise InvalidInputError(f"max_messages must be >= 1, got {max_messages}")
        _check_seconds("visibility_seconds", visibility_seconds, _MAX_VISIBILITY)
        raws = self._receive(self.queue_url, min(max_messages, _SQS_MAX_BATCH), visibility_seconds, "receive")
        out = []
        for raw in raws:
            message = self._decode(raw, str(raw["ReceiptHandle"]))
            if message is not None:
                out.append(message)
        return out

    def ack(self, message: Message) -> None:
        try:
            self._client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message.receipt)
        except ClientError as exc:
            if _code(exc) in _STALE_CODES:
                return
            raise self._fail(exc, "ack") from exc
        except BotoCoreError as exc:
            raise self._fail(exc, "ack") from exc

    def _change_visibility(self, message: Message, seconds: int, action: str) -> ClientError | None:
        """Return the SDK error when the receipt is stale (message gone or not in flight)."""
        try:
            self._client.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message.receipt, VisibilityTimeout=seconds
            )
        except ClientError as exc:
            if _code(exc) in _STALE_CODES:
                return exc
            raise self._fail(exc, action) from exc
        except BotoCoreError as exc:
            raise self._fail(exc, action) from exc
        return None

    def extend(self, message: Message, visibility_seconds: int) -> None:
        _check_seconds("visibility_seconds", visibility_seconds, _MAX_VISIBILITY)
        stale = self._change_visibility(message, visibility_seconds, "extend")
        if stale is not None:
            raise ConflictError(
                f"message {message.id} in {self.queue_url} was acked, dead-lettered or is no longer in"
                " flight; this receipt is stale",
                message_id=message.id,
                queue=self.queue_url,
            ) from stale

    def release(self, message: Message, *, delay_seconds: int = 0) -> None:
        _check_seconds("delay_seconds", delay_seconds, _MAX_VISIBILITY)
        self._change_visibility(message, delay_seconds, "release")

    def _find_dlq(self) -> str | None:
        try:
            attrs = self._client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"]
            ).get("Attributes", {})
            if "RedrivePolicy" not in attrs:
                return None
            arn = str(json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"])
            _, _, _, _, account, dlq_name = arn.split(":", 5)
            url: str = self._client.get_queue_url(QueueName=dlq_name, QueueOwnerAWSAccountId=account)[
                "QueueUrl"
            ]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, "find the dead-letter queue of") from exc
        return url

    def dead_letters(self, *, limit: int = 100) -> list[Message]:
        """Peek at up to ``limit`` DLQ messages without deleting them.

        Each batch is received with a short visibility (so the next batch sees new ones),
        then made visible again. Receipts are empty (they are not receipts of this queue);
        ``receive_count`` is the DLQ's approximate count, which peeks also raise.
        """
        if self.dlq_url is None:
            self.dlq_url = self._find_dlq()
            if self.dlq_url is None:
                return []
        dlq = self.dlq_url
        seen: dict[str, Message] = {}
        receipts: list[str] = []
        try:
            while len(seen) < limit:
                raws = self._receive(
                    dlq, min(limit - len(seen), _SQS_MAX_BATCH), _DLQ_PEEK_VISIBILITY, "dead_letters"
                )
                if not raws:
                    break
                for raw in raws:
                    receipts.append(str(raw["ReceiptHandle"]))
                    message = self._decode(raw, "")
                    if message is not None and message.id not in seen and len(seen) < limit:
                        seen[message.id] = message
        finally:
            self._unhide(dlq, receipts)
        return list(seen.values())

    def _unhide(self, url: str, receipts: list[str]) -> None:
        for start in range(0, len(receipts), _SQS_MAX_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0}
                for i, r in enumerate(receipts[start : start + _SQS_MAX_BATCH])
            ]
            try:
                self._client.change_message_visibility_batch(QueueUrl=url, Entries=entries)
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, "dead_letters", url) from exc
