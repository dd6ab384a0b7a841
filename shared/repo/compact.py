"""Index compaction (FORMAT.md §6.2): merge delta objects into a new generation of shards.

Only the shards that the merged deltas touch are rewritten (shards are content-addressed,
so an untouched shard keeps its name); the shard count doubles as the repository grows,
which rewrites every shard once per doubling. Order, under the compact lock (replication
goes on meanwhile; a second compactor and prune are kept out):

1. new shards are written;
2. the generation manifest is written: the commit (after this, readers use it);
3. covered deltas are deleted; then generations older than the new one's base, and the
   shards only they referenced.

A crash before 2 leaves orphan shards (prune removes them); after 2, leftovers that the
next compaction deletes. The base generation is kept until the next compaction, so a
reader that opened it keeps finding its shards for a whole compaction interval. A long
backlog (a version 1 repository's first compaction) is merged :data:`MAX_MERGE_ENTRIES` at
a time, one generation each, so memory stays bounded.

Cost: ids are random, so a merge of k entries touches about ``S (1 - e^(-k/S))`` of the S
shards; once k is a few times S (100,000 entries against 2,442 shards at 10 million) every
shard is rewritten: the whole index read and written once per such compaction (measured
in docs/BENCHMARKS.md, "Index at scale"). Small, frequent merges touch few shards.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.errors import ObjectNotFoundError, RepositoryLockedError
from shared.repo import codec
from shared.repo.codec import IndexEntry, ObjectType
from shared.repo.index import (
    MAX_PREFIX_BITS,
    Generation,
    IndexView,
    generation_ids,
    list_index,
    read_generation,
    read_shard,
    shard_of,
)
from shared.repo.points import new_point_id
from shared.repo.repository import Repository, generation_key, shard_key

TARGET_SHARD_ENTRIES = 4096  # ~190 KiB a shard: one GET answers ~4k ids
AUTO_COMPACT_DELTAS = 32  # compact after a run once this many deltas are uncovered
AUTO_COMPACT_ENTRIES = 100_000  # ... or this many entries sit in them (~20 MiB in memory)
THREADS = 8  # shards read and written at once
MAX_MERGE_ENTRIES = 500_000  # delta entries merged into one generation (~200 MiB at most)

Rows = list[tuple[bytes, IndexEntry]]


@dataclass
class CompactReport:
    generation: str | None = None
    base: str | None = None
    deltas_merged: int = 0
    entries_merged: int = 0
    shards_written: int = 0
    shards_total: int = 0
    prefix_bits: int = 0
    entries: int = 0
    deltas_deleted: int = 0
    generations_deleted: int = 0
    shards_deleted: int = 0
    skipped: str = ""


def choose_prefix_bits(entries: int, at_least: int = 0, target: int = TARGET_SHARD_ENTRIES) -> int:
    """The fewest prefix bits (never fewer than ``at_least``) that keep shards near ``target``."""
    bits = at_least
    while bits < MAX_PREFIX_BITS and entries > target << bits:
        bits += 1
    return bits


def compaction_due(view: IndexView) -> bool:
    return len(view.delta_names) >= AUTO_COMPACT_DELTAS or view.stats.delta_entries >= AUTO_COMPACT_ENTRIES


def compact(
    repo: Repository,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    target: int = TARGET_SHARD_ENTRIES,
    max_entries: int = MAX_MERGE_ENTRIES,
    crash_after: str | None = None,
) -> CompactReport:
    """Merge every uncovered delta into new generations (see the module doc), at most
    ``max_entries`` delta entries per generation so that memory stays bounded.

    ``crash_after`` names a step (``shards``, ``generation``, ``deltas``) after which to
    stop as a killed process would: for the crash tests only.
    """
    repo.upgrade()
    report = CompactReport()
    with repo.lock(compact=True):
        while _step(repo, report, now, target, max_entries, crash_after):
            pass
    if not report.deltas_merged:
        report.skipped = "no uncovered deltas"
    return report


def _step(
    repo: Repository,
    report: CompactReport,
    now: Callable[[], datetime],
    target: int,
    max_entries: int,
    crash_after: str | None,
) -> bool:
    """One generation's worth of deltas merged; True when more remain."""
    listing = list_index(repo)
    base, live, leftovers = listing.generation, listing.live, listing.covered
    if report.generation is None:
        report.base = base.id if base else None
    if not live:
        _cleanup(repo, base, None, leftovers, report)
        return False
    batch, rows = _read_deltas(repo, live, max_entries)
    report.deltas_merged += len(batch)
    report.entries_merged += len(rows)
    table = _merge(repo, base, list(rows.items()), target, report)
    if crash_after == "shards":
        return False
    if generation_ids(repo)[-1:] != listing.generation_ids[-1:]:
        raise RepositoryLockedError("another compaction committed meanwhile; nothing was changed")
    gen = write_generation(repo, table, [*batch, *leftovers], base, now())
    report.generation, report.prefix_bits, report.entries = gen.id, table.bits, gen.entries
    report.shards_total = sum(1 for s in table.shards if s is not None)
    if crash_after == "generation":
        return False
    _cleanup(repo, base, gen, [*batch, *leftovers], report, crash_after=crash_after)
    return crash_after is None and len(batch) < len(live)


def _read_deltas(
    repo: Repository, names: list[str], max_entries: int
) -> tuple[list[str], dict[bytes, IndexEntry]]:
    """The first deltas of ``names`` holding about ``max_entries`` entries (at least one)."""
    batch: list[str] = []
    rows: dict[bytes, IndexEntry] = {}
    with ThreadPoolExecutor(THREADS) as pool:
        for start in range(0, len(names), THREADS):
            chunk = names[start : start + THREADS]
            for name, delta in zip(chunk, pool.map(repo.read_index_object, chunk), strict=True):
                batch.append(name)
                rows.update(delta)
                if len(rows) >= max_entries:
                    return batch, rows
    return batch, rows


@dataclass
class ShardTable:
    """The shard list of a generation being built (FORMAT.md §6.2)."""

    bits: int
    shards: list[str | None]
    counts: list[int]
    raw_bytes: list[int]

    @classmethod
    def empty(cls, bits: int) -> ShardTable:
        n = 1 << bits
        return cls(bits, [None] * n, [0] * n, [0] * n)

    @classmethod
    def of(cls, gen: Generation) -> ShardTable:
        return cls(gen.prefix_bits, list(gen.shards), list(gen.counts), list(gen.raw_bytes))

    def put(self, number: int, written: Written, report: CompactReport) -> None:
        self.shards[number], self.counts[number], self.raw_bytes[number] = (
            written.id,
            written.count,
            written.raw,
        )
        report.shards_written += written.new


@dataclass(frozen=True)
class Written:
    id: str | None
    count: int
    raw: int
    new: bool


def _merge(
    repo: Repository, base: Generation | None, rows: Rows, target: int, report: CompactReport
) -> ShardTable:
    """Shards of ``base`` plus ``rows``: touched shards rewritten (in parallel), others kept
    by name."""
    old_bits = base.prefix_bits if base else 0
    bits = choose_prefix_bits((base.entries if base else 0) + len(rows), old_bits, target)
    by_shard: dict[int, Rows] = defaultdict(list)
    for block_id, entry in rows:
        by_shard[shard_of(block_id, bits)].append((block_id, entry))
    if base is not None and bits == old_bits:
        table = ShardTable.of(base)
        numbers = sorted(by_shard)
        with ThreadPoolExecutor(THREADS) as pool:
            done = pool.map(lambda n: _write_shard(repo, _shard_rows(repo, base, n), by_shard[n]), numbers)
            for number, written in zip(numbers, done, strict=True):
                table.put(number, written, report)
        return table
    # first generation, or the shard count grew: every shard is rewritten, one old one at a time
    table = ShardTable.empty(bits)
    step = bits - old_bits

    def split(old_number: int) -> list[tuple[int, Written]]:
        parts: dict[int, Rows] = defaultdict(list)
        for block_id, entry in _shard_rows(repo, base, old_number) if base else []:
            parts[shard_of(block_id, bits)].append((block_id, entry))
        return [
            (n, _write_shard(repo, parts.get(n, []), by_shard.get(n, [])))
            for n in range(old_number << step, (old_number + 1) << step)
            if parts.get(n) or by_shard.get(n)
        ]

    with ThreadPoolExecutor(THREADS) as pool:
        for parts in pool.map(split, range(1 << old_bits)):
            for number, w in parts:
                table.put(number, w, report)
    return table


def _shard_rows(repo: Repository, gen: Generation, number: int) -> Rows:
    shard_id = gen.shards[number]
    if shard_id is None:
        return []
    shard = read_shard(repo, shard_id, number, gen.prefix_bits)
    return shard.rows()


def _write_shard(repo: Repository, old: Rows, new: Rows) -> Written:
    merged = dict(new)
    merged.update(old)  # an id already in a shard keeps its entry: any valid entry will do
    if not merged:
        return Written(None, 0, 0, False)
    ordered = sorted(merged.items(), key=lambda r: r[0])
    payload = codec.index_payload(ordered)
    shard_id = repo.key.block_id(payload).hex()
    name = shard_key(shard_id)
    fresh = repo.store.stat(name) is None
    if fresh:
        repo.put_immutable(name, codec.seal(repo.key, ObjectType.INDEX, payload))
    return Written(shard_id, len(ordered), sum(e.raw_length for _, e in ordered), fresh)


def write_generation(
    repo: Repository, table: ShardTable, covers: Iterable[str], base: Generation | None, when: datetime
) -> Generation:
    """Commit a generation; its id sorts after its base's whatever the clocks say."""
    if base is not None and when <= base.time:
        when = base.time + timedelta(milliseconds=1)
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    gen = Generation(
        id=new_point_id(when),
        time=when,
        base=base.id if base else None,
        prefix_bits=table.bits,
        shards=table.shards,
        counts=table.counts,
        raw_bytes=table.raw_bytes,
        entries=sum(table.counts),
        covers=sorted(set(covers)),
    )
    payload = gen.model_dump_json().encode()
    repo.put_immutable(generation_key(gen.id), codec.seal(repo.key, ObjectType.GENERATION, payload))
    return gen


def shards_from_sorted(repo: Repository, rows: Iterator[tuple[bytes, IndexEntry]], bits: int) -> ShardTable:
    """Write the shards of ``rows`` (sorted by id) for a generation built from scratch (prune)."""
    table = ShardTable.empty(bits)
    report = CompactReport()
    current: Rows = []
    number = -1
    for block_id, entry in rows:
        s = shard_of(block_id, bits)
        if s != number and current:
            table.put(number, _write_shard(repo, [], current), report)
            current = []
        number = s
        current.append((block_id, entry))
    if current:
        table.put(number, _write_shard(repo, [], current), report)
    return table


def _cleanup(
    repo: Repository,
    base: Generation | None,
    gen: Generation | None,
    covered: list[str],
    report: CompactReport,
    *,
    crash_after: str | None = None,
) -> None:
    """Delete what the newest generation made redundant (step 3 of the module doc)."""
    for name in covered:
        repo.delete_immutable(name)
        report.deltas_deleted += 1
    if crash_after == "deltas":
        return
    newest = gen or base
    if newest is None:
        return
    keep = {newest.id, *([newest.base] if newest.base else [])}
    referenced: set[str] = set()
    for kept_id in keep:
        try:
            kept = newest if kept_id == newest.id else read_generation(repo, kept_id)
        except ObjectNotFoundError:
            continue
        referenced.update(s for s in kept.shards if s)
    for old_id in generation_ids(repo):
        if old_id in keep or old_id > newest.id:
            continue
        old = read_generation(repo, old_id)
        for shard_id in {s for s in old.shards if s} - referenced:
            repo.delete_immutable(shard_key(shard_id))
            report.shards_deleted += 1
        repo.delete_immutable(generation_key(old_id))
        report.generations_deleted += 1
