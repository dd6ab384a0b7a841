"""MetadataStore on one SQLite file: the embedded control plane's database.

Storage: one ``records`` table for every kind::

    kind TEXT, id TEXT, revision INTEGER, created_at TEXT, a1 TEXT, a2 TEXT, a3 TEXT, doc TEXT
    PRIMARY KEY (kind, id)

``doc`` is the whole record as JSON (``model_dump_json``, revision included). ``created_at``
is fixed-width ISO 8601 UTC with microseconds (``2024-05-01T12:00:00.000000Z``), so text
order is time order. ``a1``..``a3`` hold the record's ``indexed`` attributes by position,
as strings (``None`` stays NULL and never matches a filter). Indexes on
``(kind, created_at, id)`` and ``(kind, aN, created_at, id)`` serve every query as one
index range scan: pagination is keyset (the cursor is the last item's
``[created_at, id]``), never OFFSET, so page N costs what page 1 costs.

Concurrency: WAL mode with a ``busy_timeout``; each call borrows a connection from a small
idle pool (one thread at a time per connection; a forked child starts a fresh pool), so
thread churn — a thread per HTTP request — never piles up open connections. Every write is one autocommit statement; ``update`` is
``UPDATE ... WHERE kind=? AND id=? AND revision=?`` and reads ``rowcount``, so of two
writers racing on one revision exactly one changes a row. A busy/locked database after
the timeout raises :class:`TransientStoreError`.

Schema changes are :data:`MIGRATIONS` steps, applied in order at open inside one
``BEGIN IMMEDIATE`` transaction and recorded in ``PRAGMA user_version``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from shared.adapters.local.sqlite_errors import translate_sqlite_errors
from shared.adapters.metadata_encoding import (
    MAX_INDEXED,
    check_limit,
    check_where,
    decode_cursor,
    encode_cursor,
    index_value,
    indexed_attributes,
    timestamp,
)
from shared.domain.base import Record, utcnow
from shared.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnsupportedFormatError,
)
from shared.ports.metadata_store import MetadataStore, Page

R = TypeVar("R", bound=Record)

_BUSY_TIMEOUT_MS = 30_000
#: idle connections kept for reuse; more concurrent callers open (and then close) their own
_MAX_IDLE = 8

#: Schema steps; step ``i`` moves ``user_version`` from ``i`` to ``i + 1``. Append only.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE records (
            kind TEXT NOT NULL,
            id TEXT NOT NULL,
            revision INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            a1 TEXT,
            a2 TEXT,
            a3 TEXT,
            doc TEXT NOT NULL,
            PRIMARY KEY (kind, id)
        )""",
        "CREATE INDEX records_by_kind ON records (kind, created_at, id)",
        "CREATE INDEX records_by_a1 ON records (kind, a1, created_at, id) WHERE a1 IS NOT NULL",
        "CREATE INDEX records_by_a2 ON records (kind, a2, created_at, id) WHERE a2 IS NOT NULL",
        "CREATE INDEX records_by_a3 ON records (kind, a3, created_at, id) WHERE a3 IS NOT NULL",
    ),
]


class SqliteMetadataStore:
    """The MetadataStore port on the SQLite file at ``path`` (created, and migrated, at open).

    ``clock`` gives ``updated_at`` on update (tests inject one); ``busy_timeout`` (seconds)
    is how long a write waits for another writer before :class:`TransientStoreError`.
    Several stores — in one or many processes — may open the same file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], datetime] = utcnow,
        busy_timeout: float = _BUSY_TIMEOUT_MS / 1000,
    ) -> None:
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise InvalidInputError(
                "SqliteMetadataStore needs a file path (each pooled connection would see its own database)"
            )
        self.path = Path(path)
        self._clock = clock
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        with self._errors("open"), self._conn() as conn:
            self._migrate(conn)

    # --- plumbing -----------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        """A connection for this thread alone while the block runs (from the idle pool or new)."""
        with self._pool_lock:
            if self._pid != os.getpid():  # forked: the parent's connections are not ours to use
                self._idle, self._pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        try:
            yield conn
        finally:
            with self._pool_lock:
                reusable = not conn.in_transaction and self._pid == os.getpid()
                if reusable and len(self._idle) < _MAX_IDLE:
                    self._idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == len(MIGRATIONS):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()  # another opener may have won
            if version > len(MIGRATIONS):
                raise UnsupportedFormatError(
                    f"metadata database {self.path} has schema version {version}; this build knows up to {len(MIGRATIONS)}",
                    version=version,
                )
            for step in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _errors(self, action: str) -> AbstractContextManager[None]:
        return translate_sqlite_errors(f"metadata database {self.path}", action)

    def close(self) -> None:
        """Close the idle connections (the store stays usable and reopens on demand)."""
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @staticmethod
    def _row(record: Record) -> tuple[str, list[str | None], str]:
        attrs = indexed_attributes(type(record))
        data = record.model_dump(mode="json")
        values: list[str | None] = [index_value(data.get(a)) for a in attrs]
        values += [None] * (MAX_INDEXED - len(values))
        return timestamp(record.created_at), values, record.model_dump_json()

    def _revision(self, conn: sqlite3.Connection, kind: str, record_id: str) -> int | None:
        row = conn.execute(
            "SELECT revision FROM records WHERE kind = ? AND id = ?", (kind, record_id)
        ).fetchone()
        return None if row is None else int(row[0])

    # --- the port -------------------------------------------------------------------------
    def create(self, record: R) -> R:
        stored = record.model_copy(update={"revision": 1})
        created_at, attrs, doc = self._row(stored)
        with self._errors("create"), self._conn() as conn:
            try:
                conn.execute(
                    "INSERT INTO records (kind, id, revision, created_at, a1, a2, a3, doc)"
                    " VALUES (?, ?, 1, ?, ?, ?, ?, ?)",
                    (record.kind, record.id, created_at, *attrs, doc),
                )
            except sqlite3.IntegrityError as exc:
                raise ConflictError(
                    f"{record.kind} {record.id} already exists", kind=record.kind, id=record.id
                ) from exc
        return stored

    def get(self, kind: type[R], record_id: str) -> R:
        with self._errors("get"), self._conn() as conn:
            row = conn.execute(
                "SELECT doc FROM records WHERE kind = ? AND id = ?", (kind.kind, record_id)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"{kind.kind} {record_id} not found", kind=kind.kind, id=record_id)
        return kind.model_validate_json(row[0])

    def update(self, record: R) -> R:
        stored = record.model_copy(update={"revision": record.revision + 1, "updated_at": self._clock()})
        created_at, attrs, doc = self._row(stored)
        with self._errors("update"), self._conn() as conn:
            cur = conn.execute(
                "UPDATE records SET revision = ?, created_at = ?, a1 = ?, a2 = ?, a3 = ?, doc = ?"
                " WHERE kind = ? AND id = ? AND revision = ?",
                (stored.revision, created_at, *attrs, doc, record.kind, record.id, record.revision),
            )
            if cur.rowcount == 1:
                return stored
            current = self._revision(conn, record.kind, record.id)
        if current is None:
            raise NotFoundError(f"{record.kind} {record.id} not found", kind=record.kind, id=record.id)
        raise ConflictError(
            f"{record.kind} {record.id} changed since it was read (revision {record.revision}, now {current})",
            kind=record.kind,
            id=record.id,
            revision=record.revision,
            current=current,
        )

    def delete(self, kind: type[R], record_id: str, *, revision: int | None = None) -> None:
        sql = "DELETE FROM records WHERE kind = ? AND id = ?"
        args: tuple[object, ...] = (kind.kind, record_id)
        if revision is not None:
            sql += " AND revision = ?"
            args += (revision,)
        with self._errors("delete"), self._conn() as conn:
            if conn.execute(sql, args).rowcount == 1:
                return
            current = self._revision(conn, kind.kind, record_id)
        if current is None:
            raise NotFoundError(f"{kind.kind} {record_id} not found", kind=kind.kind, id=record_id)
        raise ConflictError(
            f"{kind.kind} {record_id} changed since it was read (revision {revision}, now {current})",
            kind=kind.kind,
            id=record_id,
            revision=revision,
            current=current,
        )

    def query(
        self,
        kind: type[R],
        *,
        where: Mapping[str, str] | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        descending: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[R]:
        check_limit(limit)
        filters = check_where(kind, where)
        sql = ["SELECT created_at, id, doc FROM records WHERE kind = ?"]
        args: list[object] = [kind.kind]
        for position, value in filters:
            sql.append(f"AND a{position + 1} = ?")
            args.append(value)
        if after is not None:
            sql.append("AND created_at >= ?")
            args.append(timestamp(after))
        if before is not None:
            sql.append("AND created_at < ?")
            args.append(timestamp(before))
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            # the first term bounds the index range scan; the second steps past the last item
            if descending:
                sql.append("AND created_at <= ? AND (created_at < ? OR id < ?)")
            else:
                sql.append("AND created_at >= ? AND (created_at > ? OR id > ?)")
            args += [at, at, last_id]
        order = "DESC" if descending else "ASC"
        sql.append(f"ORDER BY created_at {order}, id {order} LIMIT ?")
        args.append(limit + 1)  # one more tells whether another page exists
        with self._errors("query"), self._conn() as conn:
            rows = conn.execute(" ".join(sql), args).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        items = [kind.model_validate_json(doc) for _, _, doc in rows]
        next_cursor = encode_cursor(rows[-1][0], rows[-1][1]) if more else None
        return Page(items=items, next_cursor=next_cursor)


if TYPE_CHECKING:  # mypy proves the adapter implements the port
    _conforms: MetadataStore = SqliteMetadataStore("metadata.db")
