"""Reading a disk through a ``(offset, length) -> bytes`` function, the one thing every target offers."""

from __future__ import annotations

import io
from collections.abc import Callable

ReadAt = Callable[[int, int], bytes]
"""``read(offset, length)``: the bytes there; shorter only where the disk ends. Errors propagate."""


def read_at(read: ReadAt, size: int, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes at ``offset``, clipped to a disk of ``size`` bytes (never past its end)."""
    if offset >= size or length <= 0:
        return b""
    return read(offset, min(length, size - offset))


class RegionFile(io.RawIOBase):
    """A read-only, seekable file over ``[base, base + length)`` of a disk, for parsing libraries."""

    def __init__(self, read: ReadAt, base: int, length: int) -> None:
        super().__init__()
        self._read = read
        self._base = base
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._length - self._pos)
        if n <= 0:
            return 0
        data = self._read(self._base + self._pos, n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._length - self._pos
        n = min(size, self._length - self._pos)
        if n <= 0:
            return b""
        data = self._read(self._base + self._pos, n)
        self._pos += len(data)
        return data


class CachedReader:
    """A :data:`ReadAt` that fetches aligned blocks through ``read`` and keeps the last few.

    Parsers issue many tiny reads (32-byte directory entries, 2-byte FAT entries); over an EBS
    snapshot or a page blob each would be a request. Memory: ``blocks * block_size`` (256 x 64 KiB
    = 16 MiB by default).
    """

    def __init__(self, read: ReadAt, size: int, block_size: int = 64 * 1024, blocks: int = 256) -> None:
        self._read = read
        self._size = size
        self._block_size = block_size
        self._blocks = blocks
        self._cache: dict[int, bytes] = {}

    def _block(self, index: int) -> bytes:
        data = self._cache.pop(index, None)
        if data is None:
            data = read_at(self._read, self._size, index * self._block_size, self._block_size)
            if len(self._cache) >= self._blocks:
                del self._cache[next(iter(self._cache))]  # least recently used: dicts keep insertion order
        self._cache[index] = data
        return data

    def __call__(self, offset: int, length: int) -> bytes:
        out = bytearray()
        end = min(offset + length, self._size)
        while offset < end:
            index, within = divmod(offset, self._block_size)
            block = self._block(index)
            chunk = block[within : within + end - offset]
            if not chunk:
                break
            out += chunk
            offset += len(chunk)
        return bytes(out)
