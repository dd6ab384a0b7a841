"""The MetadataStore port: plans, sites, nodes, points, jobs, users, tokens, audit events.

Contract (every adapter passes ``tests/contract/test_metadata_store.py``):

* Records are :class:`shared.domain.base.Record` subclasses, stored whole (JSON of
  ``model_dump(mode="json")``) under ``(record.kind, record.id)``.
* ``create`` stores a new record with ``revision = 1`` and returns it; it raises
  :class:`ConflictError` if ``(kind, id)`` exists.
* ``update`` is a conditional write: it succeeds only if the stored revision equals
  ``record.revision`` (the revision the caller read), stores ``revision + 1`` and a fresh
  ``updated_at``, and returns what it stored. Otherwise :class:`ConflictError` (someone else
  wrote first) or :class:`NotFoundError`. Two writers racing on one revision: exactly one
  wins. This is what keeps two schedulers or nodes from double-running a job.
* ``delete`` raises :class:`NotFoundError` if absent; with ``revision`` it is conditional
  like ``update``.
* ``query`` lists one kind ordered by ``(created_at, id)`` (``descending`` reverses),
  filtered by equality on attributes in ``Kind.indexed`` (values compared as strings; an
  unindexed attribute is :class:`InvalidInputError`) and optionally by a ``created_at``
  range (``after`` inclusive, ``before`` exclusive). Pages hold at most ``limit`` items;
  ``next_cursor`` (opaque) continues the listing and is ``None`` on the last page.
* Implementations are safe to use from many threads; errors of the underlying database
  that are worth retrying raise :class:`TransientStoreError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from shared.domain.base import Record

R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class Page(Generic[R]):
    items: list[R]
    next_cursor: str | None = None


class MetadataStore(Protocol):
    def create(self, record: R) -> R:
        """Store a new record (revision 1)."""

    def get(self, kind: type[R], record_id: str) -> R:
        """The record, or :class:`NotFoundError`."""

    def update(self, record: R) -> R:
        """Conditional write on ``record.revision``; returns the stored record."""

    def delete(self, kind: type[R], record_id: str, *, revision: int | None = None) -> None:
        """Remove the record (conditionally when ``revision`` is given)."""

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
        """One page of records of ``kind`` (see the module contract)."""


def every(
    store: MetadataStore, kind: type[R], where: Mapping[str, str] | None = None, *, page_size: int = 500
) -> Iterator[R]:
    """Every record of ``kind`` matching ``where``, page after page (oldest first)."""
    cursor = None
    while True:
        page = store.query(kind, where=where, limit=page_size, cursor=cursor)
        yield from page.items
        if not page.next_cursor:
            return
        cursor = page.next_cursor
