"""Read-only file access on a FAT12/16/32 partition through a :data:`ReadAt`, with byte locations.

Parsing is done by ``dissect.fat`` over a file-like view of the partition. On top of it this
module works out where a file's bytes and its directory entry sit on the disk, so a caller can
express an in-place edit as patches. Only files inside their already allocated clusters can be
edited that way; the FAT itself is never changed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dissect.fat import exceptions as fat_errors
from dissect.fat.fat import FATFS

from node_runtime.recovery.osprep.reader import ReadAt, RegionFile


#: what a damaged (not unreadable) FAT volume raises inside the parser; read errors are not here
class FatChainLoopError(fat_errors.Error):
    """A cluster chain is longer than the volume has clusters: it loops."""


FAT_DAMAGE = (
    fat_errors.Error,
    EOFError,
    struct.error,
    ValueError,
    UnicodeDecodeError,
    LookupError,
    OverflowError,
)
LONG_NAME_ATTR = 0x0F


@dataclass(frozen=True)
class FatFile:
    path: str
    size: int
    allocated: int
    #: absolute disk offsets of the cluster runs, in file order
    extents: tuple[tuple[int, int], ...]
    dirent_offset: int | None


class FatVolume:
    """A FAT volume at ``[start, start + length)`` of a disk. Raises ``FAT_DAMAGE`` errors on open."""

    def __init__(self, read: ReadAt, start: int, length: int) -> None:
        self._read = read
        self.start = start
        self.fs = FATFS(RegionFile(read, start, length))
        self.cluster_size: int = self.fs.cluster_size
        self._data_start = start + self.fs.first_data_sector * self.fs.sector_size
        self._bound_chains()

    def _bound_chains(self) -> None:
        """Make the parser's cluster-chain walk stop at a loop instead of spinning forever."""
        fat = self.fs.fat
        unbounded = fat.chain
        limit = min(
            fat.entry_count,
            (self.fs.total_sectors - self.fs.first_data_sector) // self.fs.bpb.BPB_SecPerClus + 2,
        )

        def chain(cluster: int) -> Iterator[int]:
            for n, value in enumerate(unbounded(cluster)):
                if n >= limit:
                    raise FatChainLoopError(f"the cluster chain from cluster {cluster} loops")
                yield value

        fat.chain = chain

    def _entry(self, path: str) -> Any | None:
        node: Any = self.fs.root
        for part in (p for p in path.replace("\\", "/").split("/") if p):
            if not node.is_directory():
                return None
            wanted = part.upper()
            node = next((c for c in node.iterdir() if wanted in (c.name.upper(), c.short_name.upper())), None)
            if node is None:
                return None
        return node

    def exists(self, path: str) -> bool:
        return self._entry(path) is not None

    def listdir(self, path: str) -> list[str]:
        node = self._entry(path)
        if node is None or not node.is_directory():
            return []
        return [c.name for c in node.iterdir() if c.name not in (".", "..") and not c.is_volume_id()]

    def stat(self, path: str) -> FatFile | None:
        node = self._entry(path)
        if node is None or node.is_directory():
            return None
        extents = self._extents(node)
        return FatFile(
            path=path,
            size=node.size,
            allocated=sum(length for _, length in extents),
            extents=extents,
            dirent_offset=self._dirent_offset(node),
        )

    def read_file(self, path: str, limit: int = 1 << 20) -> bytes | None:
        """The file's content (at most ``limit`` bytes), or None if there is no such file."""
        info = self.stat(path)
        if info is None:
            return None
        remaining = min(info.size, limit)
        out = bytearray()
        for offset, length in info.extents:
            if remaining <= 0:
                break
            chunk = self._read(offset, min(length, remaining))
            out += chunk
            remaining -= len(chunk)
        return bytes(out)

    def _extents(self, node: Any) -> tuple[tuple[int, int], ...]:
        if node.cluster == 0:
            return ()
        return tuple(
            (self._data_start + first * self.cluster_size, count * self.cluster_size)
            for first, count in node.dataruns()
        )

    def _directory_extents(self, node: Any) -> tuple[tuple[int, int], ...]:
        if node is self.fs.root and node.cluster is None:  # FAT12/16: fixed root directory region
            bpb = self.fs.bpb
            offset = (bpb.BPB_RsvdSecCnt + self.fs.fat_size * bpb.BPB_NumFATs) * self.fs.sector_size
            return ((self.start + offset, node.size),)
        return self._extents(node)

    def _dirent_offset(self, node: Any) -> int | None:
        """Where ``node``'s short directory entry is, found by matching name and first cluster."""
        parent = node.parent or self.fs.root
        name = bytes(node.dirent.DIR_Name)
        for offset, length in self._directory_extents(parent):
            raw = self._read(offset, length)
            for pos in range(0, len(raw) - 31, 32):
                entry = raw[pos : pos + 32]
                if entry[0] == 0:
                    return None
                if entry[11] == LONG_NAME_ATTR or entry[:11] != name:
                    continue
                hi, lo = struct.unpack_from("<H", entry, 20)[0], struct.unpack_from("<H", entry, 26)[0]
                if (hi << 16 | lo) == node.cluster:
                    return offset + pos
        return None
