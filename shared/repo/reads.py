"""Ranged reads of blobs: which blobs one request fetches (restore, prune, patch bases)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from shared.repo.codec import IndexEntry

MAX_GAP = 1 << 20  # read across gaps up to this size rather than issue another request
MAX_READ = 32 << 20

Rows = list[tuple[bytes, IndexEntry]]


def coalesce(
    rows: Iterable[tuple[bytes, IndexEntry]], *, max_gap: int = MAX_GAP, max_read: int = MAX_READ
) -> list[tuple[bytes, Rows]]:
    """Group blobs into (pack id, nearby blobs) reads, in pack order.

    A read ends at a gap wider than ``max_gap``, or when its span, or the whole blocks its
    patches need as bases (FORMAT.md §5.1), would pass ``max_read``: memory per read stays
    under about twice ``max_read``.
    """
    by_pack: dict[bytes, Rows] = defaultdict(list)
    for block_id, e in rows:
        by_pack[e.pack_id].append((block_id, e))
    groups: list[tuple[bytes, Rows]] = []
    for pack_id, blobs in by_pack.items():
        blobs.sort(key=lambda kv: kv[1].offset)
        run: Rows = []
        base_bytes = 0
        for block_id, e in blobs:
            needs = e.raw_length if e.base is not None else 0
            if run:
                start = run[0][1].offset
                end = run[-1][1].offset + run[-1][1].length
                if (
                    e.offset - end > max_gap
                    or e.offset + e.length - start > max_read
                    or base_bytes + needs > max_read
                ):
                    groups.append((pack_id, run))
                    run, base_bytes = [], 0
            run.append((block_id, e))
            base_bytes += needs
        groups.append((pack_id, run))
    return groups
