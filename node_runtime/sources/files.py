"""Source disks: raw image files and block devices, read by aligned blocks.

A source knows its size and, where the file system can tell (SEEK_DATA/SEEK_HOLE), which
ranges hold data, so unallocated ranges are skipped without being read.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

from shared.errors import InvalidInputError, SourceError

Extent = tuple[int, int]  # (offset, length)
_BLKGETSIZE64 = 0x80081272


class FileSource:
    """A raw disk image or block device opened read-only."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
            mode = os.fstat(self.fd).st_mode
            if stat.S_ISBLK(mode):
                buf = fcntl.ioctl(self.fd, _BLKGETSIZE64, b"\0" * 8)
                self.size = struct.unpack("<Q", buf)[0]
                self.is_device = True
            elif stat.S_ISREG(mode):
                self.size = os.fstat(self.fd).st_size
                self.is_device = False
            else:
                raise SourceError(f"{self.path} is neither a regular file nor a block device", path=self.path)
        except OSError as exc:
            raise SourceError(f"cannot open source {self.path}: {exc.strerror}", path=self.path) from exc

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self.fd, length, offset)
        except OSError as exc:
            raise SourceError(
                f"read error on {self.path} at {offset}: {exc.strerror}", path=self.path
            ) from exc
        if len(data) != length:
            raise SourceError(
                f"{self.path} shrank while being read (short read at offset {offset})", path=self.path
            )
        return data

    def data_extents(self) -> list[Extent]:
        """Ranges that may hold data; everything else reads as zeros."""
        if self.is_device:
            return [(0, self.size)]
        out: list[Extent] = []
        pos = 0
        try:
            while pos < self.size:
                start = os.lseek(self.fd, pos, os.SEEK_DATA)
                end = os.lseek(self.fd, start, os.SEEK_HOLE)
                out.append((start, min(end, self.size) - start))
                pos = end
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return out
            return [(0, self.size)]  # file system cannot tell: read everything
        return out


def load_extents(path: str | os.PathLike[str]) -> list[Extent]:
    """Parse a changed-extent list: JSON ``[[offset, length], ...]`` as CBT/EBS/Azure report."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidInputError(f"cannot read extent list {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise InvalidInputError(f"extent list {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, list):
        raise InvalidInputError(f"extent list {path} must be a JSON array of [offset, length] pairs")
    out: list[Extent] = []
    for i, item in enumerate(doc):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
            or item[0] < 0
            or item[1] < 0
        ):
            raise InvalidInputError(
                f"extent list {path}: item {i} must be [offset, length] with non-negative integers, got {item!r}"
            )
        out.append((item[0], item[1]))
    return out


def blocks_touched(extents: Sequence[Extent], block_size: int, n_blocks: int) -> Iterator[int]:
    """Indices of blocks overlapping any extent, ascending, without duplicates."""
    marks = bytearray(n_blocks)
    for offset, length in extents:
        if length == 0:
            continue
        first = offset // block_size
        last = min((offset + length - 1) // block_size, n_blocks - 1)
        for i in range(first, last + 1):
            marks[i] = 1
    return (i for i in range(n_blocks) if marks[i])
