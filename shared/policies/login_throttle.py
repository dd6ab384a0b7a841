"""Login throttling: when a login attempt may be checked at all, with reasons the UI can show.

A pure policy: it reads no clock and touches no store. Callers keep one :class:`Counter` per
key (a username, and separately the client's address), pass it with ``now`` and get a
:class:`Decision` before the password is checked, and a new counter after a failure.

Rules (per key, each scope with its own thresholds in :class:`LoginThrottleSettings`):

- Failures are counted in a fixed window that starts at the first failure; a failure after
  the window ends starts a new count at 1.
- Backoff: once a key has more than ``*_free_failures`` failures, the next attempt MUST
  wait ``backoff_base_seconds * 2**k`` (k = 0, 1, 2 ... for each further failure, capped at
  ``backoff_max_seconds``) after the last failure.
- Lockout: the failure that brings the count to ``*_lockout_failures`` locks the key for
  ``lockout_seconds``; every attempt before ``locked_until`` is refused, whatever the
  password (a right password during lockout is no oracle). When the lockout ends the key
  starts afresh.
- A refused attempt is not a failure: it neither counts nor extends anything.
- Success resets the user's counter (the caller deletes it); an address counter is never
  reset by success, so a valid account cannot launder an address's guesses.

Invariants (MUST): ``retry_after`` of a refusal is a whole number of seconds >= 1;
:func:`expires_at` is never before the moment the counter stops mattering (the end of the
window, of the backoff or of the lockout), so a store may delete the counter then.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Counter",
    "Decision",
    "LoginThrottleSettings",
    "Scope",
    "check",
    "client_address",
    "expires_at",
    "record_failure",
]


class Scope(StrEnum):
    USER = "user"
    ADDRESS = "address"


class LoginThrottleSettings(BaseModel):
    """Thresholds of the login throttle (a setting of :class:`shared.services.context.Control`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    window_seconds: int = Field(default=900, ge=1, description="Failures are counted in this window.")
    user_free_failures: int = Field(default=2, ge=0, description="Failures of one username before backoff.")
    user_lockout_failures: int = Field(default=5, ge=1, description="Failures of one username that lock it.")
    address_free_failures: int = Field(
        default=10, ge=0, description="Failures from one address before backoff."
    )
    address_lockout_failures: int = Field(
        default=20, ge=1, description="Failures from one address that lock it."
    )
    lockout_seconds: int = Field(default=900, ge=1)
    backoff_base_seconds: int = Field(default=1, ge=1)
    backoff_max_seconds: int = Field(default=30, ge=1)
    #: peers whose ``X-Forwarded-For`` is believed (a reverse proxy in front of ``lifeboat up``);
    #: empty: the socket peer is the client, whatever headers say
    trusted_proxies: tuple[str, ...] = ()

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for v in value:
            ipaddress.ip_network(v, strict=False)  # ValueError names the bad entry
        return value

    def free(self, scope: Scope) -> int:
        return self.user_free_failures if scope is Scope.USER else self.address_free_failures

    def lockout(self, scope: Scope) -> int:
        return self.user_lockout_failures if scope is Scope.USER else self.address_lockout_failures


@dataclass(frozen=True)
class Counter:
    """What is remembered about one key."""

    failures: int = 0
    window_start: datetime | None = None
    last_failure_at: datetime | None = None
    locked_until: datetime | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # seconds; >= 1 when refused
    reason: str = ""
    locked: bool = False


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


def _backoff(counter: Counter, settings: LoginThrottleSettings, scope: Scope) -> timedelta:
    over = counter.failures - settings.free(scope)
    if over <= 0:
        return timedelta(0)
    seconds = min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** min(over - 1, 30))
    return timedelta(seconds=seconds)


def _current(counter: Counter, now: datetime, settings: LoginThrottleSettings) -> Counter:
    """The counter as it stands at ``now``: an ended lockout or window starts afresh."""
    if counter.locked_until is not None:
        return counter if now < counter.locked_until else Counter()
    if counter.window_start is not None and now >= counter.window_start + timedelta(
        seconds=settings.window_seconds
    ):
        return Counter()
    return counter


def check(counter: Counter, now: datetime, settings: LoginThrottleSettings, scope: Scope) -> Decision:
    """May an attempt for this key be checked at ``now``?"""
    if not settings.enabled:
        return Decision(True)
    c = _current(counter, now, settings)
    if c.locked_until is not None:
        return Decision(
            False, _seconds(c.locked_until - now), f"{scope} locked after {c.failures} failures", True
        )
    if c.last_failure_at is not None:
        ready = c.last_failure_at + _backoff(c, settings, scope)
        if now < ready:
            return Decision(False, _seconds(ready - now), f"{scope} backing off after {c.failures} failures")
    return Decision(True)


def record_failure(
    counter: Counter, now: datetime, settings: LoginThrottleSettings, scope: Scope
) -> tuple[Counter, bool]:
    """The counter after one more failure at ``now``, and whether this failure started a lockout."""
    c = _current(counter, now, settings)
    if c.locked_until is not None:  # a refused attempt is not a failure (callers check first)
        return c, False
    failures = c.failures + 1
    new = replace(c, failures=failures, window_start=c.window_start or now, last_failure_at=now)
    if failures >= settings.lockout(scope):
        return replace(new, locked_until=now + timedelta(seconds=settings.lockout_seconds)), True
    return new, False


def expires_at(counter: Counter, settings: LoginThrottleSettings, scope: Scope) -> datetime | None:
    """When the counter stops mattering (a store may delete it then); None for an empty counter."""
    moments = [
        counter.locked_until,
        counter.window_start + timedelta(seconds=settings.window_seconds) if counter.window_start else None,
        counter.last_failure_at + _backoff(counter, settings, scope) if counter.last_failure_at else None,
    ]
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def client_address(source_ip: str, forwarded_for: str | None, trusted_proxies: tuple[str, ...]) -> str:
    """The client's address: the socket peer (API Gateway's ``sourceIp``), or, when that peer is a
    trusted proxy, the right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy."""
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in networks)

    if not networks or not forwarded_for or not trusted(source_ip):
        return source_ip
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return source_ip  # a forged or garbled hop: fall back to the proxy itself
    return source_ip
