"""The login throttle's memory: one counter per username and per client address."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from shared.domain.base import Record
from shared.policies.login_throttle import Counter, Scope


class LoginThrottle(Record):
    """Failed logins of one key (see :mod:`shared.policies.login_throttle`).

    The id is a digest of the key, so any username or address (IPv6 included) fits an id and
    one key has one record. ``expires`` (epoch seconds) is when the counter stops mattering:
    DynamoDB's TTL deletes it after that; other stores keep it until it is read or listed.
    """

    kind: ClassVar[str] = "login-throttle"
    indexed: ClassVar[tuple[str, ...]] = ("scope",)
    expires_field: ClassVar[str | None] = "expires"

    scope: Scope
    key: str = Field(max_length=128, description="The username or the client address.")
    failures: int = Field(default=0, ge=0)
    window_start: datetime | None = None
    last_failure_at: datetime | None = None
    locked_until: datetime | None = None
    expires: int = Field(default=0, ge=0, description="Epoch seconds after which the record may be deleted.")

    @staticmethod
    def id_for(scope: Scope, key: str) -> str:
        return f"lt-{scope}-" + hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()[:40]

    def counter(self) -> Counter:
        return Counter(self.failures, self.window_start, self.last_failure_at, self.locked_until)
