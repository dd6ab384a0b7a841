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
        return [(e.id, IndexEntry(self.id, e.offset, e.length, e.raw_length)) for e in self.entries]

    @property
    def raw_bytes(self) -> int:
        return sum(e.raw_length for e in self.entries)


class Packer:
    """Collects blobs; ``add`` returns a sealed pack each time one reaches ``target`` bytes."""

    def __init__(self, key: MasterKey, target: int = DEFAULT_PACK_TARGET) -> None:
        self.key = key
        self.target = target
        self._reset()

    def _reset(self) -> None:
        self._parts: list[bytes] = [codec.pack_header(self.key)]
        self._size = codec.HEADER_SIZE
        self._entries: list[BlobEntry] = []

    def add(self, block_id: bytes, blob: bytes, raw_length: int) -> SealedPack | None:
        self._entries.append(BlobEntry(block_id, self._size, len(blob), raw_length))
        self._parts.append(blob)
        self._size += len(blob)
        return self.flush() if self._size >= self.target else None

    def flush(self) -> SealedPack | None:
        """Seal what has been collected, or return ``None`` when nothing has."""
        if not self._entries:
            return None
        self._parts.append(codec.pack_trailer(self.key, self._entries))
        data = b"".join(self._parts)
        pack = SealedPack(blake3.blake3(data).digest(), data, self._entries)
        self._reset()
        return pack
