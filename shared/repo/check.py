"""Repository verification: structure always, every block with ``read_data``."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import blake3

from shared.errors import LifeboatError
from shared.repo import blobs, codec
from shared.repo.codec import IndexEntry
from shared.repo.index import Listing, generation_ids, list_index, read_generation, read_shard
from shared.repo.keys import ZERO_ID
from shared.repo.repository import Repository, pack_key, shard_key


@dataclass
class CheckReport:
    """What ``check`` saw. ``problems`` make the repository unhealthy; ``notes`` do not."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    points: int = 0
    pages: int = 0
    index_objects: int = 0
    packs: int = 0
    blocks: int = 0
    blocks_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check(
    repo: Repository,
    *,
    read_data: bool = False,
    threads: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Verify that every point is restorable; never stops at the first problem.

    Reads the store itself, never the node's object cache.
    """
    cache, repo.cache = repo.cache, None
    try:
        return _check(repo, read_data=read_data, threads=threads, progress=progress)
    finally:
        repo.cache = cache


def _check(
    repo: Repository, *, read_data: bool, threads: int, progress: Callable[[int, int], None] | None
) -> CheckReport:
    report = CheckReport()
    index = _read_index_settled(repo, report)
    report.blocks = len(index)
    pack_sizes = {info.key: info.size for info in repo.store.list("data/")}
    report.packs = len(pack_sizes)
    indexed_packs: dict[bytes, list[tuple[bytes, IndexEntry]]] = {}
    for block_id, e in index.items():
        indexed_packs.setdefault(e.pack_id, []).append((block_id, e))
    for pack_id, rows in indexed_packs.items():
        size = pack_sizes.get(pack_key(pack_id))
        if size is None:
            report.problems.append(
                f"{pack_key(pack_id)}: missing, but the index lists {len(rows)} blocks in it"
            )
        elif any(e.offset + e.length > size for _, e in rows):
            report.problems.append(f"{pack_key(pack_id)}: shorter ({size} bytes) than its index entries need")
    _check_patches(index, report)
    orphans = set(pack_sizes) - {pack_key(p) for p in indexed_packs}
    if orphans:
        report.notes.append(
            f"{len(orphans)} packs are in no index (left by an interrupted run; prune removes them)"
        )

    try:
        names = repo.point_names()
    except LifeboatError as exc:
        report.problems.append(str(exc))
        names = []
    seen_pages: set[str] = set()
    for disk_id, point_id in names:
        report.points += 1
        try:
            point = repo.read_point(disk_id, point_id)
            for page in point.pages:
                if page is not None:
                    seen_pages.add(page)
            block_map = repo.block_map(point, threads=threads)
        except LifeboatError as exc:
            report.problems.append(str(exc))
            continue
        missing = {b for b in block_map if b != ZERO_ID and b not in index}
        if missing:
            report.problems.append(
                f"points/{disk_id}/{point_id}: {len(missing)} blocks are in no index (e.g. {next(iter(missing)).hex()})"
            )
    report.pages = len(seen_pages)

    if read_data:
        _read_all(repo, index, pack_sizes, indexed_packs, report, threads, progress)
    return report


def _check_patches(index: dict[bytes, IndexEntry], report: CheckReport) -> None:
    """Every patch's base is indexed, whole, and of the patch's length (FORMAT.md §5.1)."""
    for block_id, e in index.items():
        if e.base is None:
            continue
        base = index.get(e.base)
        if base is None:
            report.problems.append(
                f"block {block_id.hex()} is a patch of {e.base.hex()}, which is in no index"
            )
        elif base.base is not None or base.raw_length != e.raw_length:
            report.problems.append(
                f"block {block_id.hex()} is a patch of {e.base.hex()}, which is not a whole block of its length"
            )


def _read_index_settled(repo: Repository, report: CheckReport, attempts: int = 3) -> dict[bytes, IndexEntry]:
    """:func:`_read_index`, read again when a compaction committed while it read (the
    objects it missed were merged and deleted, not lost)."""
    for attempt in range(attempts):
        before = generation_ids(repo)
        part = CheckReport()
        index = _read_index(repo, part)
        if not part.problems or generation_ids(repo) == before or attempt == attempts - 1:
            break
    report.problems += part.problems
    report.notes += part.notes
    report.index_objects = part.index_objects
    return index


def _read_index(repo: Repository, report: CheckReport) -> dict[bytes, IndexEntry]:
    """The newest generation's shards and every delta it does not cover, each verified."""
    index: dict[bytes, IndexEntry] = {}
    try:
        listing = list_index(repo)
    except LifeboatError as exc:
        report.problems.append(f"{exc} (the index generation is unreadable: deltas alone are checked)")
        listing = Listing([], None, repo.index_names(), [])
    gen = listing.generation
    if gen is not None:
        for number, shard_id in enumerate(gen.shards):
            if shard_id is None:
                continue
            report.index_objects += 1
            try:
                shard = read_shard(repo, shard_id, number, gen.prefix_bits, full_check=True)
            except LifeboatError as exc:
                report.problems.append(f"{exc} (shard {number} of generation {gen.id})")
                continue
            if len(shard) != gen.counts[number]:
                report.problems.append(
                    f"{shard_key(shard_id)}: {len(shard)} entries, generation {gen.id} says {gen.counts[number]}"
                )
            index.update(shard.rows())
        referenced: set[str] = set()
        for gen_id in listing.generation_ids:
            try:
                referenced.update(shard_key(s) for s in read_generation(repo, gen_id).shards if s)
            except LifeboatError as exc:
                report.notes.append(f"older generation {gen_id}: {exc}")
        orphans = sum(1 for info in repo.store.list("shards/") if info.key not in referenced)
        if orphans:
            report.notes.append(
                f"{orphans} index shards are in no generation (left by an interrupted compaction; prune removes them)"
            )
    for name in listing.live:
        report.index_objects += 1
        try:
            index.update(repo.read_index_object(name))
        except LifeboatError as exc:
            report.problems.append(str(exc))
    if leftovers := len(listing.covered):
        report.notes.append(
            f"{leftovers} index deltas are already merged into generation {gen.id if gen else '?'} "
            "(an interrupted compaction; the next one deletes them)"
        )
    return index


def _read_all(
    repo: Repository,
    index: dict[bytes, IndexEntry],
    pack_sizes: dict[str, int],
    indexed_packs: dict[bytes, list[tuple[bytes, IndexEntry]]],
    report: CheckReport,
    threads: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Download every pack: its id, its trailer and every blob must verify."""
    total = sum(pack_sizes.get(pack_key(p), 0) for p in indexed_packs)
    done = 0

    def verify(pack_id: bytes) -> tuple[list[str], int, int]:
        name = pack_key(pack_id)
        read_base = repo.base_reader(index, name)
        problems: list[str] = []
        try:
            data = repo.store.get(name)
        except LifeboatError as exc:
            return [str(exc)], 0, 0
        if blake3.blake3(data).digest() != pack_id:
            problems.append(f"{name}: content does not match its name (corrupted)")
        try:
            trailer = {e.id: e for e in codec.decode_pack_trailer(repo.key, data, name=name)}
        except LifeboatError as exc:
            problems.append(str(exc))
            trailer = {}
        blocks = 0
        for block_id, e in indexed_packs[pack_id]:
            if trailer and block_id not in trailer:
                problems.append(f"{name}: index lists block {block_id.hex()} that the pack trailer does not")
            try:
                blob = data[e.offset : e.offset + e.length]
                blobs.decode_blob(repo.key, block_id, blob, e.raw_length, name=name, base=read_base)
                blocks += 1
            except LifeboatError as exc:
                problems.append(f"{exc} (block {block_id.hex()})")
        return problems, blocks, len(data)

    with ThreadPoolExecutor(threads) as pool:
        for problems, blocks, size in pool.map(verify, list(indexed_packs)):
            report.problems.extend(problems)
            report.blocks_read += blocks
            done += size
            if progress:
                progress(done, total)
