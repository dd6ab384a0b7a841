"""What a replication run reads (FORMAT.md §5.1 for the chunk masks): the source's plan,
checked, and the blocks and chunks its extents touch."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from node_runtime.sources.port import DiskSource, Extent, ReadPlan
from shared.errors import InvalidInputError
from shared.repo import blobs
from shared.repo.points import PointRecord

log = logging.getLogger(__name__)


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


def chunk_masks(extents: Sequence[Extent], block_size: int, n_blocks: int) -> dict[int, int]:
    """Block index -> mask of its 64 chunks that overlap an extent (FORMAT.md §5.1)."""
    size = blobs.chunk_size(block_size)
    masks: dict[int, int] = {}
    for offset, length in extents:
        end = min(offset + length, n_blocks * block_size)
        if end <= offset:
            continue
        first_chunk, end_chunk = offset // size, -(-end // size)
        for block in range(offset // block_size, (end - 1) // block_size + 1):
            lo = max(first_chunk - block * blobs.PATCH_CHUNKS, 0)
            hi = min(end_chunk - block * blobs.PATCH_CHUNKS, blobs.PATCH_CHUNKS)
            masks[block] = masks.get(block, 0) | ((1 << (hi - lo)) - 1) << lo
    return masks


def plan_reads(source: DiskSource, block_size: int, parent: PointRecord | None) -> ReadPlan:
    """The source's read plan, checked: extents past the disk's end are a caller error."""
    same = parent if parent is not None and parent.disk_size == source.size else None
    plan = source.plan(same)
    for off, length in plan.extents:
        if off < 0 or length < 0 or off + length > source.size:
            raise InvalidInputError(
                f"changed extent [{off}, {length}] ends past the disk end ({source.size} bytes)"
            )
    if plan.note:
        log.warning("%s: %s", source.label, plan.note)
    return plan
