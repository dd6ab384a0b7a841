"""Login throttling over the real embedded HTTP server (``lifeboat up``'s stack: bootstrap,
SQLite, the stdlib server on a loopback port), with the control plane's clock injected so
backoff and lockout windows pass without sleeping. The CLI runs as a separate process."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cli.embedded import bootstrap
from functions.api import app as api
from functions.embedded.http_server import make_server, serve_in_thread
from shared.domain.identity import Role
from shared.services import auth
from tests.support.control import Clock

pytestmark = pytest.mark.ops
PASSWORD = "dave-the-right-password"
WRONG = "sekrit-wrong-guess-%d"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Live:
    url: str
    clock: Clock
    admin: str  # an admin API token (no expiry: the clock moves hours)
    operator: str

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             headers: dict[str, str] | None = None, raw: bytes | None = None) -> Reply:  # fmt: skip
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, headers_in, text = resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            status, headers_in, text = exc.code, dict(exc.headers.items()), exc.read()
        return Reply(status, headers_in, json.loads(text) if text else None)

    def login(self, username: str, password: str, **kw: Any) -> Reply:
        return self.call("POST", "/auth/login", {"username": username, "password": password}, **kw)

    def fail_until_locked(self, username: str, *, step: float = 60.0) -> list[int]:
        """Wrong passwords, each after the backoff has passed, until one is refused; the statuses."""
        statuses = []
        for n in range(10):
            reply = self.login(username, WRONG % n)
            statuses.append(reply.status)
            if reply.status == 429:
                return statuses
            self.clock.advance(seconds=step)
        return statuses

    def audit(self, action: str) -> list[dict[str, Any]]:
        items = self.call("GET", "/audit?limit=500", token=self.admin).body["items"]
        return [e for e in items if e["action"] == action]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    env = bootstrap(tmp_path / "data")
    clock = Clock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    env.ctl.now = clock
    api.configure(env.ctl)
    server = make_server(api, "127.0.0.1", _free_port())
    thread = serve_in_thread(server)
    _, admin = auth.create_api_token(env.ctl.store, name="admin-tests", owner="tests", roles=[Role.ADMIN])
    _, operator = auth.create_api_token(
        env.ctl.store, name="operator-tests", owner="tests", roles=[Role.OPERATOR]
    )
    live = Live(f"http://127.0.0.1:{server.server_address[1]}", clock, admin, operator)
    try:
        created = live.call("POST", "/users", {"username": "dave", "password": PASSWORD, "roles": ["operator"]},
                            token=admin)  # fmt: skip
        assert created.status == 201, created.body
        yield live
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_lockout_refuses_even_the_right_password_until_an_admin_unlocks(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert live.fail_until_locked("dave") == [401] * 5 + [429]
    refused = live.login("dave", PASSWORD)
    assert refused.status == 429
    assert refused.body["error"]["code"] == "TooManyRequests"
    assert set(refused.body["error"]) == {"code", "message", "request_id", "details"}
    assert 0 < int(refused.headers["Retry-After"]) <= 900
    assert refused.body["error"]["message"].endswith(f"try again in {refused.headers['Retry-After']} s")

    [lockout] = live.audit("auth.lockout")
    assert (lockout["target"], lockout["outcome"], lockout["details"]["key"]) == (
        "user:dave",
        "denied",
        "dave",
    )
    listed = live.call("GET", "/auth/lockouts", token=live.admin).body["items"]
    assert [(i["scope"], i["key"], i["failures"]) for i in listed] == [("user", "dave", 5)]

    unlocked = live.call("POST", "/users/user-dave/unlock", token=live.admin)
    assert (unlocked.status, unlocked.body) == (
        200, {"scope": "user", "key": "dave", "cleared": True, "user_id": "user-dave"})  # fmt: skip
    assert [e["target"] for e in live.audit("auth.unlock")] == ["user:dave"]
    assert live.call("GET", "/auth/lockouts", token=live.admin).body["items"] == []
    assert live.login("dave", PASSWORD).status == 200

    # no password ever reaches the audit log or the logs
    everything = json.dumps(live.call("GET", "/audit?limit=500", token=live.admin).body)
    assert PASSWORD not in everything and "sekrit-wrong-guess" not in everything
    assert caplog.records, "the server logged nothing at DEBUG: the check below would prove nothing"
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert PASSWORD not in logged and "sekrit-wrong-guess" not in logged


def test_lockout_ends_by_itself_and_success_resets_the_user_count(live: Live) -> None:
    assert live.fail_until_locked("dave") == [401] * 5 + [429]
    live.clock.advance(seconds=901)
    assert live.login("dave", PASSWORD).status == 200
    # the success reset the user's count: two more failures are free again (no backoff)
    assert [live.login("dave", WRONG % n).status for n in range(2)] == [401, 401]


def test_backoff_answers_429_until_its_retry_after_passes(live: Live) -> None:
    assert [live.login("dave", WRONG % n).status for n in range(3)] == [401, 401, 401]
    early = live.login("dave", PASSWORD)
    assert (early.status, early.headers["Retry-After"]) == (429, "1")
    live.clock.advance(seconds=1)
    assert live.login("dave", WRONG % 3).status == 401
    early = live.login("dave", PASSWORD)
    assert (early.status, early.headers["Retry-After"]) == (429, "2")
    live.clock.advance(seconds=2)
    assert live.login("dave", PASSWORD).status == 200


def test_unknown_usernames_are_throttled_like_known_ones(live: Live) -> None:
    assert (
        live.fail_until_locked("nobody-by-this-name") == live.fail_until_locked("dave") == [401] * 5 + [429]
    )
    ghost, dave = live.login("nobody-by-this-name", "x"), live.login("dave", "x")
    assert ghost.status == dave.status == 429
    # the same answer, but for the seconds left (the ghost was locked 5 minutes earlier)
    assert re.sub(r"\d+", "N", ghost.body["error"]["message"]) == re.sub(
        r"\d+", "N", dave.body["error"]["message"]
    )
    assert int(ghost.headers["Retry-After"]) == int(dave.headers["Retry-After"]) - 300
    cleared = live.call("POST", "/auth/lockouts/clear", {"username": "nobody-by-this-name"}, token=live.admin)
    assert (cleared.status, cleared.body["cleared"]) == (200, True)


def test_address_throttling_applies_across_usernames_and_ignores_forwarded_for(live: Live) -> None:
    statuses = []
    for n in range(20):  # one guess per username, each from a "different" client per X-Forwarded-For
        statuses.append(live.login(f"user{n}", "x", headers={"X-Forwarded-For": f"198.51.100.{n}"}).status)
        live.clock.advance(seconds=31)  # past the address's backoff (capped at 30 s)
    assert statuses == [401] * 20
    refused = live.login("dave", PASSWORD)  # a fresh username, the right password: the address is locked
    assert refused.status == 429
    assert [e["target"] for e in live.audit("auth.lockout")] == ["address:127.0.0.1"]
    listed = live.call("GET", "/auth/lockouts", token=live.admin).body["items"]
    assert [(i["scope"], i["key"]) for i in listed] == [("address", "127.0.0.1")]

    cleared = live.call("POST", "/auth/lockouts/clear", {"address": "127.0.0.1"}, token=live.admin)
    assert (cleared.status, cleared.body) == (200, {"scope": "address", "key": "127.0.0.1", "cleared": True})
    assert live.login("dave", PASSWORD).status == 200


def test_only_administrators_see_or_clear_lockouts(live: Live) -> None:
    live.fail_until_locked("dave")
    for method, path, body in (("GET", "/auth/lockouts", None), ("POST", "/users/user-dave/unlock", None),
                               ("POST", "/auth/lockouts/clear", {"username": "dave"})):  # fmt: skip
        assert live.call(method, path, body, token=live.operator).status == 403
        assert live.call(method, path, body).status == 401
    assert live.login("dave", PASSWORD).status == 429  # still locked


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/users/user-nobody/unlock", None, 404),
        ("POST", "/users/-bad-id/unlock", None, 422),
        ("POST", "/auth/lockouts/clear", {}, 422),
        ("POST", "/auth/lockouts/clear", {"username": "dave", "address": "127.0.0.1"}, 422),
        ("POST", "/auth/lockouts/clear", {"address": "not-an-address"}, 422),
        ("POST", "/auth/lockouts/clear", {"username": ""}, 422),
        ("POST", "/auth/lockouts/clear", {"username": "dave", "extra": 1}, 422),
        ("POST", "/auth/lockouts/clear", "just a string", 422),
    ],
)
def test_malformed_unlocks_are_refused_and_change_nothing(
    live: Live, method: str, path: str, body: Any, status: int
) -> None:
    live.fail_until_locked("dave")
    reply = live.call(method, path, body, token=live.admin)
    assert reply.status == status, reply.body
    assert set(reply.body["error"]) == {"code", "message", "request_id", "details"}
    assert [i["key"] for i in live.call("GET", "/auth/lockouts", token=live.admin).body["items"]] == ["dave"]


def test_cli_lists_lockouts_and_unlocks_a_user(live: Live, tmp_path: Path) -> None:
    live.fail_until_locked("dave")
    env = {**os.environ, "LIFEBOAT_API": live.url, "LIFEBOAT_TOKEN": live.admin,
           "LIFEBOAT_CONFIG_DIR": str(tmp_path / "cfg"), "PYTHONPATH": os.getcwd()}  # fmt: skip

    def lifeboat(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli.main", *args], env={**env, **extra}, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip

    listed = lifeboat("users", "lockouts", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(i["scope"], i["key"]) for i in json.loads(listed.stdout)] == [("user", "dave")]
    locked_login = lifeboat("login", "--username", "dave", "--api", live.url, LIFEBOAT_API_PASSWORD=PASSWORD)
    assert locked_login.returncode == 15  # TooManyRequestsError's exit code
    assert "too many failed logins" in locked_login.stderr

    unlocked = lifeboat("users", "unlock", "dave")
    assert unlocked.returncode == 0, unlocked.stderr
    assert json.loads(unlocked.stdout)["cleared"] is True
    assert lifeboat("users", "unlock", "nobody-at-all").returncode == 4  # NotFoundError
    assert lifeboat("users", "unlock-address", "999.1.1.1").returncode == 2  # InvalidInputError
    assert live.login("dave", PASSWORD).status == 200
