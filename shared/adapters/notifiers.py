"""The NotificationSender each composition root wires: webhooks over HTTP, SNS through boto3
(created on first use, so a control plane without SNS channels never imports it)."""

from __future__ import annotations

from typing import Any

from shared.adapters.webhook_notifier import WebhookSender
from shared.domain.notifications import ChannelKind, NotificationChannel
from shared.ports.notifier import Delivery, NotificationSender


class ChannelRouter:
    """Sends each channel's notifications with the sender of its kind."""

    def __init__(self, *, webhook: NotificationSender | None = None, sns: NotificationSender | None = None,
                 timeout: float = 5.0) -> None:  # fmt: skip
        self.webhook = webhook or WebhookSender(timeout=timeout)
        self._sns = sns

    @property
    def sns(self) -> NotificationSender:
        if self._sns is None:
            from shared.adapters.aws.sns_notifier import SnsSender

            self._sns = SnsSender()
        return self._sns

    def send(self, channel: NotificationChannel, message: dict[str, Any], *, subject: str,
             secret: str | None) -> Delivery:  # fmt: skip
        sender = self.webhook if channel.channel_kind is ChannelKind.WEBHOOK else self.sns
        return sender.send(channel, message, subject=subject, secret=secret)
