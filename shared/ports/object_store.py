"""The ObjectStore port: the only way repository code touches storage.

Contract (every adapter passes ``tests/contract/test_object_store.py``):

* Keys are ``/``-separated relative paths of ``[A-Za-z0-9._/-]``, never starting with
  ``/`` and never containing ``..``. Adapters map them under their own prefix.
* ``put`` is atomic: a reader sees either the old object, the whole new object, or
  nothing; never a partial one. Overwriting is allowed; repeating a put is harmless.
* ``get`` and ``get_range`` raise :class:`ObjectNotFoundError` naming the key when the
  object is absent. ``get_range`` returns exactly ``length`` bytes or raises
  :class:`CorruptObjectError` if the object is shorter.
* ``list`` yields every object under a prefix (any order), including objects written
  before the call started; it is not a snapshot.
* ``delete`` is idempotent: deleting a missing key succeeds.
* Failures worth retrying raise :class:`TransientStoreError`; refused credentials raise
  :class:`StoreAccessError`; a full target raises :class:`StoreFullError`. The SDK's
  error is chained as ``__cause__``.
* Implementations are safe to call from many threads at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


@runtime_checkable
class ObjectStore(Protocol):
    """Flat key -> bytes storage (local folder, S3, Azure Blob)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` atomically, replacing any previous object."""

    def get(self, key: str) -> bytes:
        """Return the whole object."""

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes starting at ``offset``."""

    def stat(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or ``None`` when it does not exist."""

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix``."""

    def delete(self, key: str) -> None:
        """Remove the object; succeed if it is already gone."""

    def describe(self) -> str:
        """Human-readable location, without secrets (for logs and errors)."""


_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/")


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidInputError`."""
    from shared.errors import InvalidInputError

    if (
        not key
        or key.startswith("/")
        or key.endswith("/")
        or not set(key) <= _KEY_CHARS
        or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise InvalidInputError(f"invalid object key {key!r}", key=key)
    return key
