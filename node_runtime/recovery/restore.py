"""Recovery reads: rebuild a point onto a raw file or block device.

Blocks are fetched pack by pack (one ranged read per run of nearby blobs), in parallel,
verified against their ids, and written with ``pwrite``; holes stay holes in a file and
are zeroed on a block device. Memory: at most ``2 x threads`` ranged reads of at most
MAX_READ bytes (plus their decoded blocks) are in flight.
"""

from __future__ import annotations

import os
import stat
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from shared.errors import CorruptObjectError, TargetError
from shared.repo.codec import IndexEntry
from shared.repo.keys import ZERO_ID
from shared.repo.points import PointRecord
from shared.repo.repository import Repository

MAX_GAP = 1 << 20  # read across gaps up to this size rather than issue another request
MAX_READ = 32 << 20

Progress = Callable[[int, int], None]


@dataclass
class RestoreStats:
    bytes_written: int = 0
    blocks: int = 0
    holes: int = 0
    requests: int = 0


def _groups(
    block_map: list[bytes], index: dict[bytes, IndexEntry], point_name: str
) -> list[tuple[bytes, list[tuple[bytes, IndexEntry]]]]:
    """Group the distinct blocks of a point into (pack, nearby blobs) read requests."""
    by_pack: dict[bytes, dict[bytes, IndexEntry]] = defaultdict(dict)
    for block_id in set(block_map):
        if block_id == ZERO_ID:
            continue
        entry = index.get(block_id)
        if entry is None:
            raise CorruptObjectError(
                f"{point_name}: block {block_id.hex()} is in no index (repository damaged; run check)",
                key=point_name,
            )
        by_pack[entry.pack_id][block_id] = entry
    groups = []
    for pack_id, blobs in by_pack.items():
        run: list[tuple[bytes, IndexEntry]] = []
        for block_id, e in sorted(blobs.items(), key=lambda kv: kv[1].offset):
            if run:
                start = run[0][1].offset
                end = run[-1][1].offset + run[-1][1].length
                if e.offset - end > MAX_GAP or e.offset + e.length - start > MAX_READ:
                    groups.append((pack_id, run))
                    run = []
            run.append((block_id, e))
        groups.append((pack_id, run))
    return groups


def _open_target(path: str, size: int) -> tuple[int, bool]:
    """Open the target; a file is truncated to ``size`` (all holes), a device must be big enough."""
    try:
        st = os.stat(path)
        is_device = stat.S_ISBLK(st.st_mode)
    except FileNotFoundError:
        is_device = False
    try:
        if is_device:
            fd = os.open(path, os.O_WRONLY)
            dev_size = os.lseek(fd, 0, os.SEEK_END)
            if dev_size < size:
                os.close(fd)
                raise TargetError(f"{path} holds {dev_size} bytes; the point needs {size}", path=path)
            return fd, True
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(fd, size)
        return fd, False
    except OSError as exc:
        raise TargetError(f"cannot prepare target {path}: {exc.strerror}", path=path) from exc


def restore(
    repo: Repository,
    point: PointRecord,
    target: str,
    *,
    threads: int = 4,
    progress: Progress | None = None,
) -> RestoreStats:
    """Write ``point`` to ``target`` byte for byte; every block is verified before it is written."""
    name = f"points/{point.disk_id}/{point.id}"
    block_map = repo.block_map(point)
    groups = _groups(block_map, repo.load_index(), name)
    positions: dict[bytes, list[int]] = defaultdict(list)
    for i, block_id in enumerate(block_map):
        positions[block_id].append(i)
    fd, is_device = _open_target(target, point.disk_size)
    stats = RestoreStats(holes=len(positions.get(ZERO_ID, [])), requests=len(groups))
    total = sum(point.block_length(i) for i, b in enumerate(block_map) if b != ZERO_ID)
    lock = threading.Lock()
    window = threading.BoundedSemaphore(2 * threads)

    def write(offset: int, data: bytes | memoryview) -> None:
        start, length = offset, len(data)
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
            # Start write-back now (DONTNEED on dirty pages queues them for writing), so
            # the disk works while we decode, and the final fsync has little left to do.
            os.posix_fadvise(fd, start, length, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            raise TargetError(f"write to {target} failed at {offset}: {exc.strerror}", path=target) from exc

    def fetch(pack_id: bytes, wanted: list[tuple[bytes, IndexEntry]]) -> None:
        try:
            for block_id, data in repo.read_blobs(pack_id, wanted):
                for i in positions[block_id]:
                    write(i * point.block_size, memoryview(data)[: point.block_length(i)])
                    with lock:
                        stats.bytes_written += point.block_length(i)
                        stats.blocks += 1
                        done = stats.bytes_written
                    if progress:
                        progress(done, total)
        finally:
            window.release()

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="restore") as pool:
            futures = []
            for pack_id, wanted in groups:
                window.acquire()
                futures.append(pool.submit(fetch, pack_id, wanted))
                if any(f.done() and f.exception() for f in futures[-threads:]):
                    break
            for f in futures:
                f.result()
        if is_device:
            zeros = bytes(point.block_size)
            for i in positions.get(ZERO_ID, []):
                write(i * point.block_size, zeros[: point.block_length(i)])
        os.fsync(fd)
    except OSError as exc:
        raise TargetError(f"cannot finish writing {target}: {exc.strerror}", path=target) from exc
    finally:
        os.close(fd)
    return stats
