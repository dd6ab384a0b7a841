"""The repository index as a reader queries it (FORMAT.md §6): one generation's shards,
fetched on demand, plus the delta objects the generation does not cover.

A replication run or a restore opens an :class:`IndexView` and asks it about the block ids
it meets. Opening costs two LISTs (deltas, then generations), one GET of the newest
generation manifest and one GET per uncovered delta; every object is immutable, so a node
with an :class:`~shared.repo.object_cache.ObjectCache` fetches each only once. A lookup
fetches (or finds cached) the one shard its id's prefix selects. Memory is the uncovered
deltas (kept few by compaction, :mod:`shared.repo.compact`) plus at most ``max_shards``
decoded shards, whatever the size or the history of the repository.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import CorruptObjectError, ObjectNotFoundError
from shared.repo import codec
from shared.repo.codec import IndexEntry, ObjectType
from shared.repo.repository import Repository, generation_key, shard_key

MAX_PREFIX_BITS = 16
OPEN_ATTEMPTS = 5


class Generation(BaseModel):
    """A compacted index (GENERATION object, §6.2): shard ``s`` holds every id whose first
    ``prefix_bits`` bits are ``s``; ``covers`` names the delta objects merged into it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 1
    id: str
    time: datetime
    base: str | None = None
    prefix_bits: int = Field(ge=0, le=MAX_PREFIX_BITS)
    shards: list[str | None]
    counts: list[int]
    raw_bytes: list[int]  # per shard: the plaintext bytes of its blocks
    entries: int = Field(ge=0)
    covers: list[str] = Field(default_factory=list)

    def model_post_init(self, _context: object) -> None:
        n = 1 << self.prefix_bits
        if not len(self.shards) == len(self.counts) == len(self.raw_bytes) == n:
            raise ValueError(f"a generation of {self.prefix_bits} prefix bits lists {n} shards")


def shard_of(block_id: bytes, prefix_bits: int) -> int:
    return int.from_bytes(block_id[:2], "big") >> (MAX_PREFIX_BITS - prefix_bits)


def decode_generation(repo: Repository, name: str, data: bytes) -> Generation:
    gen = codec.unseal_model(repo.key, ObjectType.GENERATION, data, Generation, name=name)
    if generation_key(gen.id) != name:
        raise CorruptObjectError(f"{name}: record names another generation", key=name)
    return gen


def read_generation(repo: Repository, gen_id: str) -> Generation:
    name = generation_key(gen_id)
    return repo.get_immutable(name, lambda data: decode_generation(repo, name, data))


def generation_ids(repo: Repository) -> list[str]:
    """Generation ids, oldest first (ids sort in commit order)."""
    return sorted(info.key.split("/", 1)[1] for info in repo.store.list("generations/"))


class Unknown:
    """The answer of :meth:`IndexView.peek` when only a shard fetch can tell."""


UNKNOWN = Unknown()


class Shard:
    """One shard, read in place: a lookup bisects its sorted rows (no per-row objects)."""

    def __init__(self, table: codec.IndexTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def get(self, block_id: bytes) -> IndexEntry | None:
        return self.table.find(block_id)

    def rows(self) -> list[tuple[bytes, IndexEntry]]:
        return self.table.rows()


def read_shard(
    repo: Repository, shard_id: str, number: int, prefix_bits: int, *, full_check: bool = False
) -> Shard:
    """A shard whose content matches its name; ``full_check`` (check) also verifies that
    its ids are sorted, unique and under its prefix, which a reader otherwise trusts to
    the writer that named it."""
    name = shard_key(shard_id)
    expect = bytes.fromhex(shard_id)

    def decode(data: bytes) -> Shard:
        table = codec.open_index(repo.key, data, name=name, expect_id=expect)
        if full_check:
            if not table.is_sorted():
                raise CorruptObjectError(f"{name}: shard ids are not sorted", key=name)
            if any(shard_of(table.id_at(i), prefix_bits) != number for i in range(len(table))):
                raise CorruptObjectError(f"{name}: shard holds an id of another shard", key=name)
        return Shard(table)

    return repo.get_immutable(name, decode)


@dataclass
class ViewStats:
    """What a view fetched: the per-run cost that must not grow with the repository."""

    deltas_loaded: int = 0
    delta_entries: int = 0
    shards_loaded: int = 0
    generation: str | None = None
    refreshes: int = 0


@dataclass
class _Snapshot:
    generation: Generation | None
    #: sorted deltas, read in place; unsorted ones (older writers) decoded into ``unsorted``
    tables: list[codec.IndexTable]
    unsorted: dict[bytes, IndexEntry]
    delta_names: list[str]
    covered_names: list[str] = field(default_factory=list)

    @property
    def delta_entries(self) -> int:
        return sum(len(t) for t in self.tables) + len(self.unsorted)

    def find(self, block_id: bytes) -> IndexEntry | None:
        entry = self.unsorted.get(block_id)
        for table in self.tables:
            if entry is not None:
                break
            entry = table.find(block_id)
        return entry

    def delta_rows(self) -> dict[bytes, IndexEntry]:
        out = dict(self.unsorted)
        for table in self.tables:
            out.update(table.rows())
        return out


class IndexView:
    """Thread-safe lookups of block ids: this process's own rows, then the deltas, then the
    generation's shard for the id. ``refresh`` follows a newer generation."""

    def __init__(self, repo: Repository, snapshot: _Snapshot, *, max_shards: int = 64) -> None:
        self.repo = repo
        self.max_shards = max_shards
        self.stats = ViewStats()
        self._lock = threading.Lock()
        self._local: dict[bytes, IndexEntry] = {}
        self._shards: OrderedDict[int, Shard] = OrderedDict()
        self._loading: dict[int, threading.Lock] = defaultdict(threading.Lock)
        self._use(snapshot)

    @classmethod
    def open(cls, repo: Repository, *, max_shards: int = 64) -> IndexView:
        return cls(repo, _take_snapshot(repo), max_shards=max_shards)

    def _use(self, snap: _Snapshot) -> None:
        self.snapshot = snap
        self.stats.generation = snap.generation.id if snap.generation else None
        self.stats.deltas_loaded += len(snap.delta_names)
        self.stats.delta_entries = snap.delta_entries
        self._shards.clear()

    @property
    def generation(self) -> Generation | None:
        return self.snapshot.generation

    @property
    def delta_names(self) -> list[str]:
        return self.snapshot.delta_names

    def refresh(self) -> None:
        snap = _take_snapshot(self.repo)
        with self._lock:
            self._use(snap)
            self.stats.refreshes += 1

    def add(self, rows: Iterable[tuple[bytes, IndexEntry]]) -> None:
        """Rows this process committed (a checkpoint's index object) after the view opened."""
        with self._lock:
            self._local.update(rows)

    def _route(self, block_id: bytes) -> IndexEntry | tuple[Generation, int] | None:
        """The answer found in memory (this process's rows, the deltas), None when no shard
        can hold the id, else the (generation, shard number) to ask."""
        with self._lock:
            entry = self._local.get(block_id) or self.snapshot.find(block_id)
            gen = self.snapshot.generation
        if entry is not None or gen is None:
            return entry
        number = shard_of(block_id, gen.prefix_bits)
        return None if gen.shards[number] is None else (gen, number)

    def get(self, block_id: bytes) -> IndexEntry | None:
        for _ in range(OPEN_ATTEMPTS):
            route = self._route(block_id)
            if not isinstance(route, tuple):
                return route
            gen, number = route
            shard = self._shard(gen, number)
            if shard is not None:
                return shard.get(block_id)
            self._follow(gen)
        raise ObjectNotFoundError(f"index shards keep disappearing under {self.repo.describe()}")

    def peek(self, block_id: bytes) -> IndexEntry | Unknown | None:
        """What ``get`` would answer, without I/O: ``UNKNOWN`` when the shard to ask is not
        in memory (the caller may fetch it with ``get`` while it does other work)."""
        route = self._route(block_id)
        if not isinstance(route, tuple):
            return route
        gen, number = route
        with self._lock:
            shard = self._shards.get(number) if self.snapshot.generation is gen else None
        return UNKNOWN if shard is None else shard.get(block_id)

    def _follow(self, gen: Generation) -> None:
        """``gen``'s shard is gone (a later compaction deleted it): move to the newest
        generation, unless another thread already did."""
        with self._lock:
            current = self.snapshot.generation
        if current is not None and current.id != gen.id:
            return
        self.refresh()
        newest = self.generation
        if newest is None or newest.id == gen.id:
            raise ObjectNotFoundError(f"a shard of the newest index generation {gen.id} is missing")

    def __contains__(self, block_id: bytes) -> bool:
        return self.get(block_id) is not None

    def lookup_many(self, ids: Iterable[bytes], *, threads: int = 8) -> dict[bytes, IndexEntry]:
        """Entries of ``ids`` (absent ids are left out), one shard fetch per shard touched."""
        wanted = list(set(ids))
        gen = self.generation
        if gen is not None:  # prefetch the shards in parallel, each once
            numbers = {shard_of(i, gen.prefix_bits) for i in wanted}
            numbers = {n for n in numbers if gen.shards[n] is not None}
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda n: self._shard(gen, n), sorted(numbers)))
        out = {}
        for block_id in wanted:
            entry = self.get(block_id)
            if entry is not None:
                out[block_id] = entry
        return out

    def load_all(self, *, threads: int = 8) -> dict[bytes, IndexEntry]:
        """Every entry in memory: O(repository), for check, prune and ``repo info`` only."""
        out: dict[bytes, IndexEntry] = {}
        gen = self.generation
        if gen is not None:
            numbers = [n for n, s in enumerate(gen.shards) if s is not None]
            with ThreadPoolExecutor(threads) as pool:
                for shard in pool.map(lambda n: self._fetch(gen, n), numbers):
                    out.update(shard.rows())
        out.update(self.snapshot.delta_rows())
        out.update(self._local)
        return out

    def _fetch(self, gen: Generation, number: int) -> Shard:
        shard_id = gen.shards[number]
        assert shard_id is not None
        return read_shard(self.repo, shard_id, number, gen.prefix_bits)

    def _shard(self, gen: Generation, number: int) -> Shard | None:
        """Shard ``number`` of ``gen``, cached; None when a compaction has deleted it."""
        with self._lock:
            shard = self._shards.get(number)
            if shard is not None and self.snapshot.generation is gen:
                self._shards.move_to_end(number)
                return shard
            gate = self._loading[number]
        with gate:  # one fetch per shard however many workers ask at once
            with self._lock:
                shard = self._shards.get(number)
                if shard is not None and self.snapshot.generation is gen:
                    return shard
            try:
                shard = self._fetch(gen, number)
            except ObjectNotFoundError:
                return None
            with self._lock:
                self.stats.shards_loaded += 1
                if self.snapshot.generation is gen:
                    self._shards[number] = shard
                    while len(self._shards) > self.max_shards:
                        self._shards.popitem(last=False)
            return shard


@dataclass(frozen=True)
class Listing:
    """The index as listed (FORMAT.md §6.2): generation ids, the newest generation, and the
    deltas it does not cover (``live``) or does (``covered``, left by an interrupted
    compaction)."""

    generation_ids: list[str]
    generation: Generation | None
    live: list[str]
    covered: list[str]


def list_index(repo: Repository) -> Listing:
    """Deltas are listed before generations, so a delta missing from the listing was
    merged into a generation the second listing shows."""
    names = repo.index_names()
    gens = generation_ids(repo)
    gen = read_generation(repo, gens[-1]) if gens else None
    merged = set(gen.covers) if gen else set()
    return Listing(gens, gen, [n for n in names if n not in merged], [n for n in names if n in merged])


def _take_snapshot(repo: Repository) -> _Snapshot:
    """Deltas are listed before generations: a compaction that commits in between covers
    them, and one that deletes them afterwards makes this attempt retry, so no entry that
    existed when the view opened is missed."""
    for attempt in range(OPEN_ATTEMPTS):
        try:
            listing = list_index(repo)
            tables: list[codec.IndexTable] = []
            unsorted: dict[bytes, IndexEntry] = {}
            with ThreadPoolExecutor(8) as pool:
                for table in pool.map(repo.open_index_object, listing.live):
                    if table.is_sorted():
                        tables.append(table)
                    else:
                        unsorted.update(table.rows())
            return _Snapshot(listing.generation, tables, unsorted, listing.live, listing.covered)
        except ObjectNotFoundError:
            if attempt == OPEN_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
