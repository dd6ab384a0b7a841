"""NotificationSender for webhooks (stdlib ``urllib``): one signed JSON POST per attempt.

The body is compact JSON: ``{"text": <summary>, "lifeboat": {...}}`` (Slack's and Teams'
legacy connectors show ``text``). Headers: ``X-Lifeboat-Timestamp`` (Unix seconds) and
``X-Lifeboat-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``, plus
``X-Lifeboat-Event`` and ``X-Lifeboat-Delivery`` (the notification id: the same on every retry,
for receivers that de-duplicate). Redirects are not followed (a 3xx is a rejection).
Outcomes as :mod:`shared.ports.notifier` says: 2xx delivered; 408, 429, 5xx, timeouts and
connection errors retried (``Retry-After`` honoured); any other status rejected.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from shared.domain.notifications import NotificationChannel
from shared.ports.notifier import Delivery

RETRIED_STATUSES = frozenset({408, 429})
USER_AGENT = "Lifeboat-Notify/1"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` over ``timestamp + "." + body`` (what receivers recompute)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


class WebhookSender:
    def __init__(self, *, timeout: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.timeout = timeout
        self.clock = clock
        self._opener = urllib.request.build_opener(_NoRedirect)

    def send(self, channel: NotificationChannel, message: dict[str, Any], *, subject: str,
             secret: str | None) -> Delivery:  # fmt: skip
        if channel.url is None:
            return Delivery("rejected", detail="the channel has no url")
        body = json.dumps(message, separators=(",", ":"), sort_keys=True, default=str).encode()
        now = self.clock()
        timestamp = str(int(now))
        lifeboat = message.get("lifeboat") or {}
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "X-Lifeboat-Timestamp": timestamp,
                   "X-Lifeboat-Event": str(lifeboat.get("event", "")),
                   "X-Lifeboat-Delivery": str(lifeboat.get("notification_id", ""))}  # fmt: skip
        if secret is not None:
            headers["X-Lifeboat-Signature"] = signature(secret, timestamp, body)
        request = urllib.request.Request(channel.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(4096)
                return Delivery("delivered", status=response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            detail = f"HTTP {status}: {_excerpt(exc)}"
            if status >= 500 or status in RETRIED_STATUSES:
                return Delivery("retry", status=status, detail=detail,
                                retry_after=_retry_after(exc.headers.get("Retry-After"), now))  # fmt: skip
            return Delivery("rejected", status=status, detail=detail)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return Delivery("retry", detail=f"{type(exc).__name__}: {reason}"[:500])


def _excerpt(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(200).decode("utf-8", "replace").strip() or exc.reason
    except OSError:
        return str(exc.reason)
