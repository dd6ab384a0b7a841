"""Login throttling on the metadata store: the counters of :mod:`shared.policies.login_throttle`
kept as :class:`LoginThrottle` records, so every API process (Lambda instances, the embedded
server's threads) sees the same counts.

Concurrency: a counter is read, changed by the pure policy and written back with the store's
conditional ``update``; a writer that loses the race retries a few times and then gives up the
increment (a lost increment under a storm of parallel guesses is acceptable; a crash is not).
Store errors while counting never turn a login into a 500: the throttle fails open and logs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.domain.login_throttle import LoginThrottle
from shared.errors import ConflictError, LifeboatError, NotFoundError, TooManyRequestsError
from shared.policies.login_throttle import (
    Counter,
    LoginThrottleSettings,
    Scope,
    check,
    expires_at,
    record_failure,
)
from shared.ports.metadata_store import MetadataStore, every

log = logging.getLogger("lifeboat.auth")
_RACE_RETRIES = 3


@dataclass(frozen=True)
class Lockout:
    """A lockout that a failure started (for the audit log)."""

    scope: Scope
    key: str
    until: datetime


def _keys(username: str, address: str) -> list[tuple[Scope, str]]:
    return [(Scope.USER, username[:128]), (Scope.ADDRESS, address[:128])]


class LoginThrottler:
    """Counters of failed logins per username and per client address."""

    def __init__(self, store: MetadataStore, settings: LoginThrottleSettings, now: datetime) -> None:
        self.store, self.settings, self.now = store, settings, now

    def _get(self, scope: Scope, key: str) -> LoginThrottle | None:
        try:
            return self.store.get(LoginThrottle, LoginThrottle.id_for(scope, key))
        except NotFoundError:
            return None

    def check(self, username: str, address: str) -> None:
        """Raise :class:`TooManyRequestsError` (with ``retry_after``) while either key must wait."""
        if not self.settings.enabled:
            return
        waits = []
        for scope, key in _keys(username, address):
            try:
                record = self._get(scope, key)
            except LifeboatError:
                log.exception("login throttle: cannot read the %s counter; not throttling", scope)
                continue
            if record is None:
                continue
            decision = check(record.counter(), self.now, self.settings, scope)
            if not decision.allowed:
                waits.append(decision)
        if waits:
            longest = max(waits, key=lambda d: d.retry_after)
            raise TooManyRequestsError(
                f"too many failed logins: try again in {longest.retry_after} s",
                retry_after=longest.retry_after,
            )

    def failed(self, username: str, address: str) -> list[Lockout]:
        """Count one failure against both keys; the lockouts this failure started."""
        started: list[Lockout] = []
        if not self.settings.enabled:
            return started
        for scope, key in _keys(username, address):
            try:
                lockout = self._count(scope, key)
            except LifeboatError:
                log.exception("login throttle: cannot count a failure against the %s counter", scope)
                continue
            if lockout is not None:
                started.append(lockout)
        return started

    def _count(self, scope: Scope, key: str) -> Lockout | None:
        for _ in range(_RACE_RETRIES):
            record = self._get(scope, key)
            counter, locked = record_failure(
                record.counter() if record else Counter(), self.now, self.settings, scope
            )
            expiry = expires_at(counter, self.settings, scope) or self.now
            base = record or LoginThrottle(
                id=LoginThrottle.id_for(scope, key),
                scope=scope,
                key=key,
                created_at=self.now,
                updated_at=self.now,
            )
            new = base.model_copy(update={
                "failures": counter.failures, "window_start": counter.window_start,
                "last_failure_at": counter.last_failure_at, "locked_until": counter.locked_until,
                "expires": int(expiry.timestamp()) + 1,
            })  # fmt: skip
            try:
                if record is None:
                    self.store.create(new)
                else:
                    self.store.update(new)
            except (ConflictError, NotFoundError):
                continue  # another attempt counted first (or an admin cleared it): read again
            if locked and counter.locked_until is not None:
                return Lockout(scope, key, counter.locked_until)
            return None
        log.warning("login throttle: lost a %s increment to concurrent attempts", scope)
        return None

    def succeeded(self, username: str) -> None:
        """A right password: the user's counter starts afresh (the address's does not)."""
        try:
            self.clear(Scope.USER, username)
        except LifeboatError:
            log.exception("login throttle: cannot reset the user counter")

    def clear(self, scope: Scope, key: str) -> bool:
        """Delete the counter of one key; whether there was one."""
        try:
            self.store.delete(LoginThrottle, LoginThrottle.id_for(scope, key[:128]))
        except NotFoundError:
            return False
        return True

    def lockouts(self) -> list[LoginThrottle]:
        """Keys locked now, soonest unlock first; counters that stopped mattering are deleted
        on the way (the SQLite store has no TTL)."""
        locked = []
        for record in every(self.store, LoginThrottle):
            if record.locked_until is not None and record.locked_until > self.now:
                locked.append(record)
            elif datetime.fromtimestamp(record.expires, UTC) <= self.now:
                try:
                    self.store.delete(LoginThrottle, record.id, revision=record.revision)
                except (ConflictError, NotFoundError):
                    pass
        return sorted(locked, key=lambda r: (r.locked_until or self.now, r.key))
