"""Encodings both MetadataStore adapters share, so SQLite and DynamoDB order, filter and
page identically: sortable timestamps, index values, opaque cursors, argument checks."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from shared.domain.base import ID_RE, Record
from shared.errors import InvalidInputError

#: How many ``indexed`` attributes a kind may declare (columns a1..a3).
MAX_INDEXED = 3

_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def timestamp(dt: datetime) -> str:
    """``dt`` as fixed-width sortable UTC text; a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def index_value(value: Any) -> str | None:
    """An attribute value (JSON mode) as the string the index compares; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def encode_cursor(created_at: str, record_id: str) -> str:
    raw = json.dumps([created_at, record_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """``(created_at, id)`` of the last item of the previous page; :class:`InvalidInputError` if malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidInputError(f"invalid cursor {cursor[:64]!r}", cursor=cursor[:64]) from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, str) for v in value)
        or not _TS_RE.match(value[0])
        or not ID_RE.match(value[1])
    ):
        raise InvalidInputError(f"invalid cursor {cursor[:64]!r}", cursor=cursor[:64])
    return value[0], value[1]


def indexed_attributes(kind: type[Record]) -> tuple[str, ...]:
    if len(kind.indexed) > MAX_INDEXED:
        raise InvalidInputError(
            f"kind {kind.kind!r} indexes {len(kind.indexed)} attributes; at most {MAX_INDEXED} are supported"
        )
    return kind.indexed


def check_where(kind: type[Record], where: Mapping[str, Any] | None) -> list[tuple[int, str]]:
    """``[(position in kind.indexed, value)]`` for ``where``; :class:`InvalidInputError` if unindexed."""
    attrs = indexed_attributes(kind)
    out: list[tuple[int, str]] = []
    for name, raw in (where or {}).items():
        if name not in attrs:
            raise InvalidInputError(
                f"{kind.kind} records cannot be filtered by {name!r}; indexed: {', '.join(attrs) or 'none'}",
                attribute=name,
            )
        value = index_value(raw)
        if value is None:
            raise InvalidInputError(f"filter {name!r} needs a value, not None", attribute=name)
        out.append((attrs.index(name), value))
    return out


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(f"limit must be a positive integer, got {limit!r}")
    return limit
