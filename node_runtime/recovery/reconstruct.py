"""Rebuild a recovery point onto any :class:`~node_runtime.recovery.writers.BlockWriter`.

A point's distinct blocks are grouped by pack into ranged reads (``shared.repo.reads.
coalesce``: one request per run of nearby blobs), fetched by ``threads`` workers, verified
against their ids by ``Repository.read_blobs`` (patches applied onto their base blocks,
fetched in coalesced reads of their own) and handed to the writer at every position they
occupy. Holes are announced with ``writer.skip`` (merged into runs) before any data is
written, and never read or written.

Memory: at most ``2 x threads`` ranged reads of at most ``MAX_READ`` bytes (plus their
decoded blocks, and as much again of patch bases) are in flight here; what the writer
buffers is stated by the writer.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from node_runtime.recovery.writers import BlockWriter
from shared.errors import CorruptObjectError
from shared.repo.codec import IndexEntry
from shared.repo.index import IndexView
from shared.repo.keys import ZERO_ID
from shared.repo.points import PointRecord
from shared.repo.reads import Rows, coalesce
from shared.repo.repository import Repository

log = logging.getLogger(__name__)


Progress = Callable[[int, int], None]


@dataclass
class RestoreStats:
    bytes_written: int = 0
    blocks: int = 0
    holes: int = 0
    requests: int = 0


def _groups(
    block_map: list[bytes], index: dict[bytes, IndexEntry], point_name: str
) -> list[tuple[bytes, Rows]]:
    """Group the distinct blocks of a point into (pack, nearby blobs) read requests."""
    rows = []
    for block_id in set(block_map):
        if block_id == ZERO_ID:
            continue
        entry = index.get(block_id)
        if entry is None:
            raise CorruptObjectError(
                f"{point_name}: block {block_id.hex()} is in no index (repository damaged; run check)",
                key=point_name,
            )
        rows.append((block_id, entry))
    return coalesce(rows)


def hole_runs(point: PointRecord, block_map: list[bytes]) -> Iterator[tuple[int, int]]:
    """(offset, length) of each maximal run of hole blocks, in disk order."""
    start: int | None = None
    for i, block_id in enumerate(block_map):
        if block_id == ZERO_ID:
            if start is None:
                start = i * point.block_size
        elif start is not None:
            yield start, i * point.block_size - start
            start = None
    if start is not None:
        yield start, point.disk_size - start


def _runs(point: PointRecord, indices: list[int]) -> Iterator[tuple[int, int]]:
    """(offset, length) of each run of consecutive block indices (sorted)."""
    start = prev = None
    for i in indices:
        if start is not None and prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None and prev is not None:
            yield start * point.block_size, (prev - start) * point.block_size + point.block_length(prev)
        start = prev = i
    if start is not None and prev is not None:
        yield start * point.block_size, (prev - start) * point.block_size + point.block_length(prev)


def reconstruct(
    repo: Repository,
    point: PointRecord,
    writer: BlockWriter,
    *,
    threads: int = 4,
    progress: Progress | None = None,
    only: Iterable[int] | None = None,
) -> RestoreStats:
    """Write ``point`` through ``writer`` byte for byte, every block verified first.

    ``only``: just these block indices (a failback writes the blocks that differ); holes
    among them are announced with ``skip``, every other block is left alone.

    On success the writer is finished; on any failure it is aborted and the error
    re-raised (repository errors as they are, target errors as ``TargetError``).
    """
    name = f"points/{point.disk_id}/{point.id}"
    try:
        block_map = repo.block_map(point)
        chosen = (
            range(len(block_map)) if only is None else sorted(i for i in set(only) if 0 <= i < len(block_map))
        )
        wanted_ids = {block_map[i] for i in chosen} - {ZERO_ID}
        view = IndexView.open(repo)
        index = view.lookup_many(wanted_ids)  # only the shards these ids need
        bases = view.lookup_many({e.base for e in index.values() if e.base is not None})
        groups = _groups([block_map[i] for i in chosen], index, name)
        positions: dict[bytes, list[int]] = defaultdict(list)
        for i in chosen:
            positions[block_map[i]].append(i)
        stats = RestoreStats(holes=len(positions.get(ZERO_ID, [])), requests=len(groups))
        total = sum(point.block_length(i) for i in chosen if block_map[i] != ZERO_ID)
        holes = hole_runs(point, block_map) if only is None else _runs(point, positions.get(ZERO_ID, []))
        for offset, length in holes:
            writer.skip(offset, length)
        del block_map
        lock = threading.Lock()
        window = threading.BoundedSemaphore(2 * threads)

        def fetch(pack_id: bytes, wanted: list[tuple[bytes, IndexEntry]]) -> None:
            try:
                for block_id, data in repo.read_blobs(pack_id, wanted, bases):
                    for i in positions[block_id]:
                        length = point.block_length(i)
                        writer.write(i * point.block_size, memoryview(data)[:length])
                        with lock:
                            stats.bytes_written += length
                            stats.blocks += 1
                            done = stats.bytes_written
                        if progress:
                            progress(done, total)
            finally:
                window.release()

        with ThreadPoolExecutor(threads, thread_name_prefix="reconstruct") as pool:
            futures = []
            for pack_id, wanted in groups:
                window.acquire()
                futures.append(pool.submit(fetch, pack_id, wanted))
                if any(f.done() and f.exception() for f in futures[-threads:]):
                    break
            for f in futures:
                f.result()
        writer.finish()
    except BaseException:
        try:
            writer.abort()
        except Exception:  # abort must not raise; never let it hide the real failure
            log.exception("aborting the target of %s failed", name)
        raise
    return stats
