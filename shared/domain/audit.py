"""Audit events: who did what, when, to what, and how it ended. Append-only."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from shared.domain.base import Record


class AuditEvent(Record):
    kind: ClassVar[str] = "audit"
    indexed: ClassVar[tuple[str, ...]] = ("actor", "action")

    at: datetime
    actor: str = Field(max_length=128)
    action: str = Field(max_length=128, description="e.g. POST /plans, plan.protect, auth.login")
    target: str = Field(default="", max_length=256)
    outcome: str = Field(pattern=r"^(success|denied|failed)$")
    status: int = 0
    details: dict[str, Any] = Field(default_factory=dict)
    request_id: str = Field(default="", max_length=128)


class Alert(Record):
    """An open or resolved condition that needs attention (e.g. an RPO breach)."""

    kind: ClassVar[str] = "alert"
    indexed: ClassVar[tuple[str, ...]] = ("state", "plan_id")

    alert_kind: str = Field(max_length=64, description="e.g. rpo-breach, rpo-warning, job-failed")
    plan_id: str | None = None
    machine_id: str | None = None
    severity: str = Field(pattern=r"^(info|warning|critical)$")
    state: str = Field(default="open", pattern=r"^(open|resolved)$")
    message: str = Field(max_length=1024)
    raised_at: datetime
    resolved_at: datetime | None = None


class IdempotencyRecord(Record):
    """The stored answer to an action sent with an Idempotency-Key (replayed on retry)."""

    kind: ClassVar[str] = "idempotency"

    principal: str = Field(max_length=128)
    route: str = Field(max_length=256)
    status: int
    body: dict[str, Any] = Field(default_factory=dict)
