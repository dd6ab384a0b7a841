"""One translation of sqlite3 errors into the error tree, for every SQLite adapter."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from shared.errors import StoreError, TransientStoreError


@contextmanager
def translate_sqlite_errors(what: str, action: str, **fields: object) -> Iterator[None]:
    """Busy/locked databases are transient (worth retrying); anything else is a StoreError."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            raise TransientStoreError(f"{what} is busy ({action}): {exc}", action=action, **fields) from exc
        raise StoreError(f"{what} failed ({action}): {exc}", action=action, **fields) from exc
    except sqlite3.Error as exc:
        raise StoreError(f"{what} failed ({action}): {exc}", action=action, **fields) from exc
