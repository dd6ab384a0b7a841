"""The login-throttle policy (shared/policies/login_throttle.py) with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from shared.policies.login_throttle import (
    Counter,
    LoginThrottleSettings,
    Scope,
    check,
    client_address,
    expires_at,
    record_failure,
)

pytestmark = pytest.mark.ops
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
S = LoginThrottleSettings()


def _after(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _fail(counter: Counter, at: datetime, scope: Scope = Scope.USER) -> tuple[Counter, bool]:
    assert check(counter, at, S, scope).allowed, "a failure is only counted after an allowed check"
    return record_failure(counter, at, S, scope)


def test_free_failures_then_doubling_backoff_capped() -> None:
    c = Counter()
    t = T0
    waits = []
    for _ in range(S.address_lockout_failures - 1):
        c, locked = _fail(c, t, Scope.ADDRESS)
        assert not locked
        d = check(c, t, S, Scope.ADDRESS)
        waits.append(d.retry_after)
        t += timedelta(seconds=d.retry_after)
    # 10 free failures, then 1, 2, 4, 8, 16 s and the 30 s cap
    assert waits == [0] * 10 + [1, 2, 4, 8, 16, 30, 30, 30, 30]


def test_backoff_refuses_until_its_end_and_refusals_do_not_count() -> None:
    c = Counter()
    for n in range(3):
        c, _ = _fail(c, _after(n * 100))
    refused = check(c, _after(200.2), S, Scope.USER)  # 3rd failure at 200 s: wait 1 s
    assert (refused.allowed, refused.retry_after, refused.locked) == (False, 1, False)
    assert "backing off after 3 failures" in refused.reason
    assert check(c, _after(201), S, Scope.USER).allowed
    assert c.failures == 3


def test_lockout_after_n_failures_refuses_everything_until_it_ends() -> None:
    c = Counter()
    started = []
    for n in range(S.user_lockout_failures):
        c, locked = _fail(c, _after(n * 60))
        started.append(locked)
    assert started == [False] * (S.user_lockout_failures - 1) + [True]
    locked_at = _after((S.user_lockout_failures - 1) * 60)
    assert c.locked_until == locked_at + timedelta(seconds=S.lockout_seconds)
    d = check(c, locked_at + timedelta(seconds=100), S, Scope.USER)
    assert (d.allowed, d.locked, d.retry_after) == (False, True, S.lockout_seconds - 100)
    # a failure reported while locked changes nothing (callers check first; no extension)
    assert record_failure(c, locked_at + timedelta(seconds=100), S, Scope.USER) == (c, False)
    # when the lockout ends the key starts afresh
    after = c.locked_until
    assert check(c, after, S, Scope.USER).allowed
    c2, locked = record_failure(c, after, S, Scope.USER)
    assert (c2.failures, locked, c2.window_start) == (1, False, after)


def test_failures_outside_the_window_start_a_new_count() -> None:
    c, _ = _fail(Counter(), T0)
    c, _ = _fail(c, _after(10))
    c, _ = _fail(c, _after(S.window_seconds + 1))
    assert (c.failures, c.window_start) == (1, _after(S.window_seconds + 1))


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    c = Counter(failures=3, window_start=T0, last_failure_at=T0)
    assert check(c, T0 + timedelta(milliseconds=999), S, Scope.USER).retry_after == 1
    c = Counter(failures=4, window_start=T0, last_failure_at=T0)
    assert check(c, T0 + timedelta(milliseconds=100), S, Scope.USER).retry_after == 2


def test_expires_at_covers_window_backoff_and_lockout() -> None:
    assert expires_at(Counter(), S, Scope.USER) is None
    c, _ = _fail(Counter(), T0)
    assert expires_at(c, S, Scope.USER) == _after(S.window_seconds)
    locked = Counter(failures=5, window_start=T0, last_failure_at=_after(800), locked_until=_after(1700))
    assert expires_at(locked, S, Scope.USER) == _after(1700)


def test_disabled_throttle_allows_everything() -> None:
    off = LoginThrottleSettings(enabled=False)
    c = Counter(failures=99, window_start=T0, last_failure_at=T0, locked_until=_after(900))
    assert check(c, T0, off, Scope.USER).allowed


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValidationError):
        LoginThrottleSettings(user_lockout_failures=0)
    with pytest.raises(ValidationError):
        LoginThrottleSettings(trusted_proxies=("not-an-address",))
    with pytest.raises(ValidationError):
        LoginThrottleSettings(lockout_secnds=10)  # type: ignore[call-arg]


def test_client_address_believes_forwarded_for_only_from_trusted_proxies() -> None:
    assert client_address("203.0.113.5", "198.51.100.1", ()) == "203.0.113.5"
    proxies = ("10.0.0.0/8",)
    assert client_address("203.0.113.5", "198.51.100.1", proxies) == "203.0.113.5"  # peer not trusted
    # the right-most hop that is not a trusted proxy: a client cannot prepend its way out
    assert client_address("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.3", proxies) == "198.51.100.1"
    assert client_address("10.0.0.2", None, proxies) == "10.0.0.2"
    assert client_address("10.0.0.2", "garbage", proxies) == "10.0.0.2"


def test_azure_events_take_the_address_the_front_end_added() -> None:
    import azure.functions as azure_functions

    from functions.azure.http_adapter import to_api_event

    req = azure_functions.HttpRequest(
        "POST", "https://app.example/auth/login", body=b"{}",
        headers={"X-Forwarded-For": "1.2.3.4, 203.0.113.8:50123", "Content-Type": "application/json"},
    )  # fmt: skip
    assert to_api_event(req, "r1")["requestContext"]["identity"]["sourceIp"] == "203.0.113.8"
