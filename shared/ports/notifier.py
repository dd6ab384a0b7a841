"""The NotificationSender port: deliver one notification to one channel, once.

Contract: ``send`` makes one attempt within its own timeout and never raises for the
receiver's failures; it answers a :class:`Delivery`: ``delivered`` (the receiver took it),
``retry`` (worth trying again: timeouts, connection errors, 5xx, 408, 429; ``retry_after``
in seconds when the receiver said so) or ``rejected`` (trying again cannot help: other 4xx,
a malformed target). Retries, backoff and giving up are the dispatcher's, not the sender's.
``secret`` (a webhook's HMAC key) never appears in ``detail``, logs or errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from shared.domain.notifications import NotificationChannel


@dataclass(frozen=True)
class Delivery:
    outcome: Literal["delivered", "retry", "rejected"]
    status: int | None = None
    detail: str = ""
    retry_after: float | None = None


class NotificationSender(Protocol):
    def send(self, channel: NotificationChannel, message: dict[str, Any], *, subject: str,
             secret: str | None) -> Delivery:  # fmt: skip
        """One attempt to deliver ``message`` (JSON: ``text`` and ``lifeboat``) to ``channel``."""
        ...
