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
