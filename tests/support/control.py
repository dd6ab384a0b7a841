"""An in-process control plane on real SQLite adapters, driven through API Gateway events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from functions.api import app as api
from functions.embedded.http_server import _LambdaContext, to_event
from shared.adapters.local.sealed_secrets import SealedSecretVault
from shared.adapters.local.sqlite_metadata import SqliteMetadataStore
from shared.adapters.local.sqlite_queue import SqliteJobQueue
from shared.domain.identity import Role, User
from shared.services import auth
from shared.services.context import Control

PASSWORD = "correct-horse-battery"


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 25, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Reply:
    status: int
    body: Any


class InProcessApi:
    def __init__(self, tmp: Path) -> None:
        self.clock = Clock()
        queue_clock = lambda: self.clock.now.timestamp()  # noqa: E731
        self.ctl = Control(
            store=SqliteMetadataStore(tmp / "metadata.db"),
            queue=SqliteJobQueue(tmp / "queue.db", max_receives=3, clock=queue_clock),
            jwt_secret="test-secret-" + "x" * 32,
            now=self.clock,
        )
        self.ctl.secrets = SealedSecretVault(self.ctl.store, b"k" * 32)
        self.configure()
        self.tokens: dict[str, str] = {}
        for role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER):
            self.ctl.store.create(User(id=f"user-{role}", username=str(role), password_hash=auth.hash_password(PASSWORD),
                                       roles=[role]))  # fmt: skip
            self.tokens[str(role)] = self.call(
                "POST", "/auth/login", {"username": str(role), "password": PASSWORD}
            ).body["access_token"]
        for n in (1, 2):
            _, secret = auth.create_api_token(self.ctl.store, name=f"node{n}", owner="tests", roles=[Role.NODE],
                                              node_id=f"node-{n}")  # fmt: skip
            self.tokens[f"node{n}"] = secret
        self.tokens["node"] = self.tokens["node1"]
        _, self.tokens["enrollment"] = auth.create_api_token(self.ctl.store, name="enroll", owner="tests",
                                                             roles=[Role.ENROLLMENT])  # fmt: skip

    def configure(self) -> None:
        """Point the API module at this instance's ports (one instance at a time)."""
        api.configure(self.ctl)

    def call(self, method: str, path: str, body: Any = None, *, as_: str | None = None,
             raw: str | None = None, headers: dict[str, str] | None = None) -> Reply:  # fmt: skip
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if as_:
            hdrs["Authorization"] = f"Bearer {self.tokens[as_]}"
        data = raw.encode() if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        resp = api.resolve(to_event(method, path, hdrs, data, "127.0.0.1"), _LambdaContext())
        text = resp.get("body") or ""
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return Reply(int(resp["statusCode"]), parsed)
