"""JobQueue on one SQLite file: durable, safe across threads and processes.

Storage: one ``messages`` table shared by any number of named queues (``queue`` column)::

    id TEXT PRIMARY KEY, queue TEXT, body TEXT (JSON), dedup_key TEXT NULL,
    visible_at REAL, receive_count INTEGER, receipt TEXT NULL,
    state TEXT ('ready' | 'dead'), created_at REAL

An acked message is deleted; a dead-lettered one stays with ``state='dead'``. A partial
unique index on ``(queue, dedup_key) WHERE state='ready'`` makes ``dedup_key`` strict:
a key is taken exactly while its message is in the queue (not acked, not dead-lettered).

Concurrency: the database runs in WAL mode with a ``busy_timeout``; every write is one
``BEGIN IMMEDIATE`` transaction, which takes SQLite's single write lock up front, so two
consumers (threads or processes) can never select and claim the same visible message.
Each thread (and each process, after a fork) uses its own connection.

Receipts are random per delivery: a redelivery replaces the receipt, so the previous
holder's receipt goes stale (``extend`` raises :class:`ConflictError`, ``ack`` and
``release`` do nothing).

**Dead-letter moment.** A message moves to the dead-letter state *on the receive that
finds it visible with* ``receive_count >= max_receives`` — the same moment SQS's redrive
policy uses (a ``send`` with the message's ``dedup_key`` also does it first, so the key is
free again). ``release`` never dead-letters: a message released after its last allowed
delivery sits in the queue, visible, until the next ``receive`` moves it instead of
delivering it. So a message is delivered at most ``max_receives`` times.

Time comes from the injectable ``clock`` (seconds, like :func:`time.time`), so tests can
move time without sleeping. All processes sharing a file must share a clock in practice
(the wall clock).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from shared.adapters.local.sqlite_errors import translate_sqlite_errors
from shared.errors import ConflictError, InvalidInputError
from shared.ports.job_queue import Message

#: Largest serialised body the port accepts (see the JobQueue contract).
MAX_BODY_BYTES = 64 * 1024

_BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    dedup_key TEXT,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    state TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'dead')),
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, state, visible_at);
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedup
    ON messages (queue, dedup_key) WHERE dedup_key IS NOT NULL AND state = 'ready';
"""


def encode_body(body: dict[str, Any]) -> str:
    """``body`` as compact JSON; :class:`InvalidInputError` if not a JSON-able dict or too large."""
    if not isinstance(body, dict):
        raise InvalidInputError(f"a job message body must be a dict, not {type(body).__name__}")
    try:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"job message body is not JSON-serialisable: {exc}") from exc
    size = len(text.encode("utf-8"))
    if size > MAX_BODY_BYTES:
        raise InvalidInputError(
            f"job message body is {size} bytes serialised; the limit is {MAX_BODY_BYTES}", size=size
        )
    return text


def _check_seconds(name: str, value: int, maximum: int = 12 * 3600) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidInputError(f"{name} must be an integer in [0, {maximum}], got {value!r}")
    return value


class SqliteJobQueue:
    """Queue ``name`` in the SQLite file at ``path`` (created if missing).

    ``max_receives`` is the number of deliveries after which an unacked message is
    dead-lettered (see the module docstring for the exact moment). Several
    :class:`SqliteJobQueue` objects — in one or many processes — may open the same file
    and the same ``name``; they then share the queue.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        name: str = "jobs",
        *,
        max_receives: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not name:
            raise InvalidInputError("queue name must not be empty")
        if max_receives < 1:
            raise InvalidInputError(f"max_receives must be >= 1, got {max_receives}")
        self.path = Path(path)
        self.name = name
        self.max_receives = max_receives
        self._clock = clock
        self._local = threading.local()
        with self._errors("open"):
            conn = self._conn()
            conn.executescript(_SCHEMA)

    # --- plumbing -----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=True
        )
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def _errors(self, action: str) -> AbstractContextManager[None]:
        return translate_sqlite_errors(f"queue {self.name!r} in {self.path}", action, queue=self.name)

    @contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: holds the write lock from its first statement."""
        with self._errors(action):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _bury(self, conn: sqlite3.Connection, now: float, dedup_key: str | None = None) -> None:
        """Dead-letter visible messages that already had their last allowed delivery."""
        sql = (
            "UPDATE messages SET state = 'dead', receipt = NULL"
            " WHERE queue = ? AND state = 'ready' AND visible_at <= ? AND receive_count >= ?"
        )
        args: tuple[object, ...] = (self.name, now, self.max_receives)
        if dedup_key is not None:
            sql += " AND dedup_key = ?"
            args += (dedup_key,)
        conn.execute(sql, args)

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- the port -------------------------------------------------------------------------
    def send(self, body: dict[str, Any], *, dedup_key: str | None = None, delay_seconds: int = 0) -> str:
        text = encode_body(body)
        _check_seconds("delay_seconds", delay_seconds, 900)
        with self._write("send") as conn:
            now = self._clock()
            if dedup_key is not None:
                self._bury(conn, now, dedup_key)
                row = conn.execute(
                    "SELECT id FROM messages WHERE queue = ? AND dedup_key = ? AND state = 'ready'",
                    (self.name, dedup_key),
                ).fetchone()
                if row is not None:
                    return str(row[0])
            message_id = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO messages (id, queue, body, dedup_key, visible_at, receive_count, receipt,"
                " state, created_at) VALUES (?, ?, ?, ?, ?, 0, NULL, 'ready', ?)",
                (message_id, self.name, text, dedup_key, now + delay_seconds, now),
            )
        return message_id

    def receive(self, *, max_messages: int = 1, visibility_seconds: int = 300) -> list[Message]:
        if max_messages < 1:
            raise InvalidInputError(f"max_messages must be >= 1, got {max_messages}")
        _check_seconds("visibility_seconds", visibility_seconds)
        out: list[Message] = []
        with self._write("receive") as conn:
            now = self._clock()
            self._bury(conn, now)
            rows = conn.execute(
                "SELECT id, body, receive_count FROM messages"
                " WHERE queue = ? AND state = 'ready' AND visible_at <= ?"
                " ORDER BY visible_at, rowid LIMIT ?",
                (self.name, now, max_messages),
            ).fetchall()
            for message_id, text, count in rows:
                receipt = secrets.token_urlsafe(24)
                conn.execute(
                    "UPDATE messages SET receipt = ?, receive_count = receive_count + 1, visible_at = ?"
                    " WHERE id = ?",
                    (receipt, now + visibility_seconds, message_id),
                )
                out.append(Message(message_id, receipt, json.loads(text), int(count) + 1))
        return out

    def ack(self, message: Message) -> None:
        with self._write("ack") as conn:
            conn.execute(
                "DELETE FROM messages WHERE id = ? AND queue = ? AND receipt = ? AND state = 'ready'",
                (message.id, self.name, message.receipt),
            )

    def extend(self, message: Message, visibility_seconds: int) -> None:
        _check_seconds("visibility_seconds", visibility_seconds)
        with self._write("extend") as conn:
            changed = conn.execute(
                "UPDATE messages SET visible_at = ?"
                " WHERE id = ? AND queue = ? AND receipt = ? AND state = 'ready'",
                (self._clock() + visibility_seconds, message.id, self.name, message.receipt),
            ).rowcount
        if changed == 0:
            raise ConflictError(
                f"message {message.id} in queue {self.name!r} was acked, dead-lettered or redelivered;"
                " this receipt is stale",
                message_id=message.id,
                queue=self.name,
            )

    def release(self, message: Message, *, delay_seconds: int = 0) -> None:
        _check_seconds("delay_seconds", delay_seconds)
        with self._write("release") as conn:
            conn.execute(
                "UPDATE messages SET visible_at = ?"
                " WHERE id = ? AND queue = ? AND receipt = ? AND state = 'ready'",
                (self._clock() + delay_seconds, message.id, self.name, message.receipt),
            )

    def dead_letters(self, *, limit: int = 100) -> list[Message]:
        """Dead-lettered messages, oldest first. Their ``receipt`` is empty: they cannot be acked."""
        with self._errors("dead_letters"):
            rows = (
                self._conn()
                .execute(
                    "SELECT id, body, receive_count FROM messages WHERE queue = ? AND state = 'dead'"
                    " ORDER BY created_at, rowid LIMIT ?",
                    (self.name, limit),
                )
                .fetchall()
            )
        return [Message(str(i), "", json.loads(text), int(count)) for i, text, count in rows]
