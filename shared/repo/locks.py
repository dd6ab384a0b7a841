"""Repository locks (FORMAT.md §10): shared for writers, ``compact`` for index compaction,
exclusive for prune.

A lock is an object ``locks/<random>`` written first and checked second: a process writes
its lock, then lists the others and backs off (deleting its own) on a conflict, so two
processes racing for conflicting locks both back off rather than both proceed (restic's
model). Held locks are rewritten every :data:`LOCK_REFRESH`; one not rewritten for
:data:`LOCK_STALE` belongs to a dead process and is ignored.

Conflicts: exclusive conflicts with every lock; compact conflicts with compact and
exclusive; shared conflicts only with exclusive. So any number of nodes replicate into one
repository at once, one of them (or ``repo compact``) merges the index meanwhile, and
prune waits until all of them are done.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Literal

from shared.errors import ObjectNotFoundError, RepositoryLockedError
from shared.ports.object_store import ObjectStore

LOCK_REFRESH = timedelta(minutes=5)
LOCK_STALE = timedelta(minutes=30)

LockKind = Literal["shared", "compact", "exclusive"]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kind_of(doc: dict) -> LockKind:
    if doc.get("exclusive"):
        return "exclusive"
    return "compact" if doc.get("compact") else "shared"


def conflicts(mine: LockKind, theirs: LockKind) -> bool:
    if "exclusive" in (mine, theirs):
        return True
    return mine == theirs == "compact"


def is_stale(doc: dict, now: datetime) -> bool:
    try:
        t = datetime.strptime(doc["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (KeyError, ValueError, TypeError):
        return True
    return now - t > LOCK_STALE


def read_locks(store: ObjectStore) -> list[tuple[str, dict]]:
    out = []
    for info in store.list("locks/"):
        try:
            doc = json.loads(store.get(info.key))
        except (ObjectNotFoundError, ValueError):
            continue
        if isinstance(doc, dict):
            out.append((info.key, doc))
    return out


@contextmanager
def hold(store: ObjectStore, kind: LockKind, now: Callable[[], datetime]) -> Iterator[None]:
    """Hold a lock of ``kind`` for the block's duration, refreshed in the background.

    Raises :class:`RepositoryLockedError` naming the conflicting lock, having written and
    removed its own.
    """
    name = f"locks/{os.urandom(16).hex()}"
    doc = {"exclusive": kind == "exclusive", "host": socket.gethostname(), "pid": os.getpid()}
    if kind == "compact":
        doc["compact"] = True

    def write() -> None:
        store.put(name, json.dumps({**doc, "time": _iso(now())}).encode())

    write()
    try:
        for other, info in read_locks(store):
            if other == name or is_stale(info, now()):
                continue
            if conflicts(kind, kind_of(info)):
                raise RepositoryLockedError(
                    f"repository is locked ({kind_of(info)}) by {info.get('host')} pid "
                    f"{info.get('pid')} since {info.get('time')} ({other}); if that process is "
                    f"dead, the lock goes stale after {int(LOCK_STALE.total_seconds() // 60)} minutes",
                    lock=other,
                )
    except BaseException:
        store.delete(name)
        raise
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(LOCK_REFRESH.total_seconds()):
            write()

    refresher = threading.Thread(target=refresh, name="lock-refresh", daemon=True)
    refresher.start()
    try:
        yield
    finally:
        stop.set()
        refresher.join()
        store.delete(name)


def remove(store: ObjectStore, *, stale_only: bool, now: datetime) -> list[str]:
    """Delete stale locks (or every lock); return the names removed."""
    removed = []
    for name, info in read_locks(store):
        if not stale_only or is_stale(info, now):
            store.delete(name)
            removed.append(name)
    return removed
