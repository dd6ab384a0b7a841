"""NotificationSender for SNS topics: ``Publish`` with a subject, the notification's JSON as the
message and ``event``/``severity`` message attributes (for subscription filter policies).

Throttling, SNS-side faults and network errors are retried; any other refusal (no such
topic, access denied, a KMS key the caller may not use) is a rejection: retrying cannot
help until someone changes the configuration.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.domain.notifications import NotificationChannel
from shared.ports.notifier import Delivery

_TRANSIENT = {"Throttling", "ThrottlingException", "ThrottledException", "InternalError", "InternalFailure",
              "ServiceUnavailable", "KMSThrottlingException", "RequestTimeout"}  # fmt: skip


class SnsSender:
    def __init__(self, *, client: Any = None, region: str | None = None) -> None:
        self._client = client
        self._region = region

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client("sns", region_name=self._region,
                                        config=Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 1}))  # fmt: skip
        return self._client

    def send(self, channel: NotificationChannel, message: dict[str, Any], *, subject: str,
             secret: str | None) -> Delivery:  # fmt: skip
        if channel.topic_arn is None:
            return Delivery("rejected", detail="the channel has no topic_arn")
        lifeboat = message.get("lifeboat") or {}
        attributes = {name: {"DataType": "String", "StringValue": str(lifeboat.get(name) or "unknown")}
                      for name in ("event", "severity")}  # fmt: skip
        args: dict[str, Any] = {"TopicArn": channel.topic_arn, "Subject": subject[:100],
                                "Message": json.dumps(message, separators=(",", ":"), sort_keys=True, default=str),
                                "MessageAttributes": attributes}  # fmt: skip
        if channel.topic_arn.endswith(".fifo"):
            args["MessageGroupId"] = "lifeboat"
            args["MessageDeduplicationId"] = str(lifeboat.get("notification_id") or "")[:128] or "lifeboat"
        try:
            answer = self.client.publish(**args)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) or None
            detail = f"SNS {code}: {exc.response.get('Error', {}).get('Message', '')}"[:500]
            if code in _TRANSIENT or (status or 0) >= 500:
                return Delivery("retry", status=status, detail=detail)
            return Delivery("rejected", status=status, detail=detail)
        except BotoCoreError as exc:
            return Delivery("retry", detail=f"SNS: {exc}"[:500])
        return Delivery("delivered", status=200, detail=str(answer.get("MessageId", "")))
