"""Raw image files and block devices: the file implementation of the source port.

A file source knows its size and, where the file system can tell (SEEK_DATA/SEEK_HOLE),
which ranges hold data, so unallocated ranges are skipped without being read. An
incremental needs a changed-extent list from outside (``--changed-extents``: what CBT,
EBS ``ListChangedBlocks`` or Azure page-range diffs report); without one every data block
is read and compared with the parent point by id.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import struct
from collections.abc import Sequence
from pathlib import Path

from node_runtime.sources.port import Extent, ReadPlan
from shared.errors import InvalidInputError, PermissionDeniedError, SourceError
from shared.repo.points import PointRecord

_BLKGETSIZE64 = 0x80081272


class FileSource:
    """A raw disk image or block device opened read-only (a :class:`DiskSource`).

    ``changed_extents``: the ranges changed since the disk's latest point, if known.
    """

    change_token: str | None = None  # files carry no change tracking of their own

    def __init__(
        self, path: str | os.PathLike[str], *, changed_extents: Sequence[Extent] | None = None
    ) -> None:
        self.path = self.label = str(path)
        self.changed_extents = changed_extents
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

    def plan(self, parent: PointRecord | None) -> ReadPlan:
        if self.changed_extents is None:
            return ReadPlan(self.data_extents(), incremental=False)
        if parent is None:
            return ReadPlan(
                self.data_extents(), incremental=False,
                note="extent list ignored: no earlier point of this disk with the same size; read the whole disk",
            )  # fmt: skip
        return ReadPlan(self.changed_extents, incremental=True)

    def committed(self, point: PointRecord) -> None:
        """Nothing to forget: a file source tracks no changes itself."""

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


class FileSnapshot:
    """Image files and block devices opened for one run (no snapshot: the caller keeps
    them quiet, or uses LVM/filesystem snapshots and names those)."""

    hardware = None

    def __init__(self, disks: dict[str, FileSource]) -> None:
        self.disks = disks

    def close(self) -> None:
        for src in self.disks.values():
            src.close()
        self.disks = {}


class FileMachine:
    """A :class:`~node_runtime.sources.port.MachineSource` over paths the node may read.

    ``disks``: (path, changed extents or None). ``allowed_roots``: every path must lie
    under one of them (its real path; or, for a block device, the path as named, so
    ``/dev/vg0/lv`` symlinks work), checked before any byte is read."""

    def __init__(self, disks: Sequence[tuple[str, Sequence[Extent] | None]], allowed_roots: Sequence[Path]) -> None:
        self.disk_specs = list(disks)
        self.allowed_roots = [Path(os.path.abspath(r)) for r in allowed_roots]

    def check(self) -> None:
        for path, _ in self.disk_specs:
            check_allowed(path, self.allowed_roots)

    def open(self) -> FileSnapshot:
        self.check()
        opened: dict[str, FileSource] = {}
        try:
            for path, extents in self.disk_specs:
                opened[path] = FileSource(path, changed_extents=extents)
        except BaseException:
            FileSnapshot(opened).close()
            raise
        return FileSnapshot(opened)


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def check_allowed(path: str, roots: Sequence[Path]) -> None:
    """Refuse (PermissionDeniedError) a source outside the node's allowed roots."""
    named = Path(os.path.abspath(path))
    real = Path(os.path.realpath(path))
    ok = _under(real, roots) or (_under(named, roots) and real.is_block_device())
    if not ok:
        where = ", ".join(str(r) for r in roots) or "none configured"
        raise PermissionDeniedError(
            f"source {path} is outside this node's allowed source roots ({where}); "
            "start the node with --source-root to allow a folder or device path",
            path=path,
        )
