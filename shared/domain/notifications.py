"""Notification channels (where events go) and the outbox of notifications (what to deliver).

A :class:`NotificationChannel` is configured by an operator: a webhook (Slack, Teams or any
HTTP receiver, signed with HMAC-SHA256) or an SNS topic, the events it wants and the sites or
plans it is scoped to. The place that detects an event writes one :class:`Notification` per
matching channel with an id derived from the event, so a detector that runs twice writes
nothing twice; the dispatcher (:mod:`shared.services.notify`) delivers them.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, model_validator

from shared.domain.base import Name, Record, Slug


class NotificationEvent(StrEnum):
    RPO_BREACH = "rpo_breach"
    RPO_RESOLVED = "rpo_resolved"
    JOB_FAILED = "job_failed"
    TEST_RECOVERY_FAILED = "test_recovery_failed"
    NODE_LOST = "node_lost"
    #: sent only by ``POST /notification-channels/{id}/test``, whatever the channel's events
    TEST = "test"


SEVERITY: dict[NotificationEvent, str] = {
    NotificationEvent.RPO_BREACH: "critical",
    NotificationEvent.RPO_RESOLVED: "info",
    NotificationEvent.JOB_FAILED: "warning",
    NotificationEvent.TEST_RECOVERY_FAILED: "critical",
    NotificationEvent.NODE_LOST: "critical",
    NotificationEvent.TEST: "info",
}


class ChannelKind(StrEnum):
    WEBHOOK = "webhook"
    SNS = "sns"


_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _webhook_url(value: str) -> str:
    """https, or http to a loopback address only (a receiver on the control plane's own host)."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an https:// URL with a host")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError(
            "http:// is allowed only for loopback addresses (127.0.0.1, ::1, localhost); use https://"
        )
    if parts.username or parts.password:
        raise ValueError("must not carry credentials (user:password@); the signature authenticates Lifeboat")
    return value


_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")


def _topic_arn(value: str) -> str:
    if not _TOPIC_ARN.match(value):
        raise ValueError("must be an SNS topic ARN (arn:aws:sns:<region>:<account>:<topic>)")
    return value


WebhookUrl = Annotated[str, Field(min_length=8, max_length=2048), AfterValidator(_webhook_url)]
TopicArn = Annotated[str, Field(max_length=512), AfterValidator(_topic_arn)]


def _subscribable(event: NotificationEvent) -> NotificationEvent:
    if event is NotificationEvent.TEST:
        raise ValueError("'test' is not subscribable; POST /notification-channels/{id}/test sends one")
    return event


SubscribableEvent = Annotated[NotificationEvent, AfterValidator(_subscribable)]


class NotificationChannel(Record):
    """Where notifications of some events, for some sites or plans, are sent.

    Scope: an event matches when ``site_ids`` is empty or names one of the event's sites,
    and ``plan_ids`` is empty or names the event's plan. A webhook's signing secret lives in
    the control plane's vault (``secret_ref``, never served)."""

    kind: ClassVar[str] = "notification_channel"

    name: Name
    channel_kind: ChannelKind
    url: WebhookUrl | None = Field(
        default=None, description="webhook: where to POST (https; http for loopback)."
    )
    topic_arn: TopicArn | None = Field(default=None, description="sns: the topic to publish to.")
    events: list[SubscribableEvent] = Field(min_length=1, max_length=8)
    site_ids: list[Slug] = Field(default_factory=list, max_length=100, description="Empty: every site.")
    plan_ids: list[Slug] = Field(default_factory=list, max_length=100, description="Empty: every plan.")
    enabled: bool = True
    secret_ref: str | None = Field(default=None, max_length=2048, description="Internal: the signing secret's vault reference.")  # fmt: skip

    @model_validator(mode="after")
    def _target(self) -> NotificationChannel:
        if self.channel_kind is ChannelKind.WEBHOOK and (self.url is None or self.topic_arn is not None):
            raise ValueError("a webhook channel needs url (and no topic_arn)")
        if self.channel_kind is ChannelKind.SNS and (self.topic_arn is None or self.url is not None):
            raise ValueError("an sns channel needs topic_arn (and no url)")
        if len(set(self.events)) != len(self.events):
            raise ValueError("events must not repeat")
        return self

    def wants(self, event: NotificationEvent, *, plan_id: str | None, site_ids: set[str]) -> bool:
        if not self.enabled or event not in self.events:
            return False
        if self.site_ids and not site_ids.intersection(self.site_ids):
            return False
        return not self.plan_ids or plan_id in self.plan_ids


class Notification(Record):
    """One event for one channel, in the outbox until delivered or given up (``dead``)."""

    kind: ClassVar[str] = "notification"
    indexed: ClassVar[tuple[str, ...]] = ("state", "channel_id")

    channel_id: Slug
    event: NotificationEvent
    severity: str = Field(pattern=r"^(info|warning|critical)$")
    state: Literal["pending", "delivered", "dead"] = "pending"
    text: str = Field(max_length=2048, description="The one-line summary (Slack/Teams `text`).")
    payload: dict[str, Any] = Field(default_factory=dict, description="The structured `lifeboat` object.")
    attempts: int = Field(default=0, ge=0)
    next_attempt_at: datetime
    last_status: int | None = Field(default=None, description="The receiver's last HTTP status, if any.")
    last_error: str = Field(default="", max_length=1024)
    delivered_at: datetime | None = None
