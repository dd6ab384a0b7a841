"""Assemble blobs into packs (FORMAT.md §5). Not thread-safe: callers serialise ``add``."""

from __future__ import annotations

from dataclasses import dataclass

import blake3

from shared.repo import codec
from shared.repo.codec import BlobEntry, IndexEntry
from shared.repo.keys import MasterKey

DEFAULT_PACK_TARGET = 16 << 20


@dataclass(frozen=True)
class SealedPack:
    """A finished pack, ready to upload, and the index rows it will make valid."""

    id: bytes
    data: bytes
    entries: list[BlobEntry]

    def index_rows(self) -> list[tuple[bytes, IndexEntry]]:
        return [
            (e.id, IndexEntry(self.id, e.offset, e.length, e.raw_length, e.base, e.mask))
            for e in self.entries
        ]

    @property
    def raw_bytes(self) -> int:
        return sum(e.raw_length for e in self.entries)


@dataclass(frozen=True)
class FullPack:
    """The blobs of a pack, not yet sealed. Sealing (trailer, join, hash) is the costly part,
    so callers that share a packer between threads seal outside their lock."""

    key: MasterKey
    parts: list[bytes]
    entries: list[BlobEntry]

    def seal(self) -> SealedPack:
        data = b"".join([*self.parts, codec.pack_trailer(self.key, self.entries)])
        return SealedPack(blake3.blake3(data).digest(), data, self.entries)


class Packer:
    """Collects blobs; ``add`` hands back a full pack each time one reaches ``target`` bytes."""

    def __init__(self, key: MasterKey, target: int = DEFAULT_PACK_TARGET) -> None:
        self.key = key
        self.target = target
        self._reset()

    def _reset(self) -> None:
        self._parts: list[bytes] = [codec.pack_header(self.key)]
        self._size = codec.HEADER_SIZE
        self._entries: list[BlobEntry] = []

    def add(
        self, block_id: bytes, blob: bytes, raw_length: int, *, base: bytes | None = None, mask: int = 0
    ) -> FullPack | None:
        """Add a blob (a patch names its ``base`` and ``mask`` for the index rows)."""
        self._entries.append(BlobEntry(block_id, self._size, len(blob), raw_length, base, mask))
        self._parts.append(blob)
        self._size += len(blob)
        return self.flush() if self._size >= self.target else None

    def flush(self) -> FullPack | None:
        """Hand back what has been collected, or ``None`` when nothing has."""
        if not self._entries:
            return None
        pack = FullPack(self.key, self._parts, self._entries)
        self._reset()
        return pack
