"""``forget`` (apply a retention policy to a disk's points) and ``prune`` (free unused data).

Prune follows the deletion order of FORMAT.md §10 under an exclusive lock: compute live
blocks from every point, repack mostly-dead packs, commit a new index generation, and only
then delete old index objects (deltas, generations, shards), unreferenced pages and
unreferenced packs. A crash at any step
leaves every point restorable; running prune again finishes the job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.errors import CorruptObjectError, InvalidInputError
from shared.policies.retention import Decision, PointRef, RetentionPolicy, apply_retention
from shared.repo import blobs
from shared.repo.codec import IndexEntry
from shared.repo.compact import choose_prefix_bits, shards_from_sorted, write_generation
from shared.repo.index import IndexView, generation_ids
from shared.repo.keys import ZERO_ID
from shared.repo.packer import FullPack, Packer
from shared.repo.repository import Repository, generation_key, pack_key, shard_key


def forget(
    repo: Repository, disk_id: str, policy: RetentionPolicy, now: datetime, *, dry_run: bool = False
) -> list[Decision]:
    """Delete the points of ``disk_id`` that ``policy`` does not keep; return every decision."""
    if policy.is_empty():
        raise InvalidInputError("refusing to forget with an empty policy: give at least one --keep-* option")
    names = [p for d, p in repo.point_names(disk_id) if d == disk_id]
    points = [repo.read_point(disk_id, p) for p in names]
    decisions = apply_retention([PointRef(id=p.id, time=p.time) for p in points], policy, now)
    if not dry_run:
        with repo.lock(exclusive=False):
            for d in decisions:
                if not d.keep:
                    repo.delete_point(disk_id, d.point_id)
    return decisions


@dataclass
class PruneReport:
    points: int = 0
    live_blocks: int = 0
    packs_total: int = 0
    packs_deleted: int = 0
    packs_repacked: int = 0
    packs_written: int = 0
    bytes_deleted: int = 0
    bytes_written: int = 0
    index_objects_replaced: int = 0
    pages_deleted: int = 0
    dry_run: bool = False
    steps: list[str] = field(default_factory=list)


def prune(
    repo: Repository,
    *,
    repack_dead_fraction: float = 0.25,
    dry_run: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PruneReport:
    """Remove data no point references; repack packs whose dead share exceeds the threshold."""
    report = PruneReport(dry_run=dry_run)
    with repo.lock(exclusive=True):
        live_pages, live_blocks = _live(repo, report)
        view = IndexView.open(repo)
        index = view.load_all()
        index_names = [*view.delta_names, *view.snapshot.covered_names]
        missing = [b for b in live_blocks if b not in index]
        if missing:
            raise CorruptObjectError(
                f"{len(missing)} live blocks are in no index (e.g. {missing[0].hex()}); "
                "prune refuses to run on a damaged repository: run check",
            )
        # a live patch keeps its base block alive (FORMAT.md §5.1); bases are never patches
        bases = {e.base for b in live_blocks if (e := index[b]).base is not None}
        if lost := [b for b in bases if b not in index]:
            raise CorruptObjectError(
                f"{len(lost)} patch bases are in no index (e.g. {lost[0].hex()}); prune refuses to run: run check"
            )
        live_blocks |= bases
        pack_sizes = {info.key: info.size for info in repo.store.list("data/")}
        report.packs_total = len(pack_sizes)
        by_pack: dict[bytes, list[tuple[bytes, IndexEntry]]] = {}
        for block_id, e in index.items():
            by_pack.setdefault(e.pack_id, []).append((block_id, e))

        keep_packs: set[bytes] = set()
        repack: list[bytes] = []
        for pack_id, rows in by_pack.items():
            total = sum(e.length for _, e in rows)
            live = sum(e.length for b, e in rows if b in live_blocks)
            if live == 0:
                continue
            if total and (total - live) / total > repack_dead_fraction:
                repack.append(pack_id)
            else:
                keep_packs.add(pack_id)
        doomed = [k for k in pack_sizes if k not in {pack_key(p) for p in keep_packs}]
        report.packs_repacked = len(repack)
        report.packs_deleted = len(doomed)
        report.bytes_deleted = sum(pack_sizes[k] for k in doomed)
        if dry_run:
            return report

        # 3. repack live blobs out of mostly-dead packs
        new_rows: dict[bytes, IndexEntry] = {}
        packer = Packer(repo.key)

        def emit(full: FullPack | None) -> None:
            if full is None:
                return
            pack = full.seal()
            repo.put_pack(pack.id, pack.data)
            new_rows.update(pack.index_rows())
            report.packs_written += 1
            report.bytes_written += len(pack.data)

        for pack_id in repack:
            wanted = [(b, e) for b, e in by_pack[pack_id] if b in live_blocks]
            # Decode (and so verify) each blob, then re-encode: corruption is never copied;
            # a patch is stored whole again (its base may then be freed by a later prune).
            for block_id, data in repo.read_blobs(pack_id, wanted, index):
                emit(packer.add(block_id, blobs.encode_blob(repo.key, block_id, data), len(data)))
        emit(packer.flush())
        log(f"repacked {len(repack)} packs into {report.packs_written}")

        # 4. commit an index generation of every live block
        rows = [(b, new_rows.get(b) or index[b]) for b in live_blocks]
        rows.sort(key=lambda r: r[0])
        repo.upgrade()
        bits = choose_prefix_bits(len(rows))
        table = shards_from_sorted(repo, iter(rows), bits)
        gen = write_generation(repo, table, index_names, view.generation, now())
        # 5. drop the old index objects: deltas, older generations, shards only they named
        for name in index_names:
            repo.delete_immutable(name)
        for gen_id in generation_ids(repo):
            if gen_id != gen.id:
                repo.delete_immutable(generation_key(gen_id))
        live_shards = {shard_key(s) for s in table.shards if s}
        for info in list(repo.store.list("shards/")):
            if info.key not in live_shards:
                repo.delete_immutable(info.key)
        report.index_objects_replaced = len(index_names)
        # 6. pages no point references
        for name in repo.page_names():
            if name.rsplit("/", 1)[-1] not in live_pages:
                repo.store.delete(name)
                report.pages_deleted += 1
        # 7. packs no index references
        for name in doomed:
            repo.store.delete(name)
        log(f"deleted {len(doomed)} packs ({report.bytes_deleted} bytes)")
    return report


def _live(repo: Repository, report: PruneReport) -> tuple[set[str], set[bytes]]:
    """Page ids and block ids that some point references (every page read once)."""
    live_pages: set[str] = set()
    live_blocks: set[bytes] = set()
    for point in repo.list_points():
        report.points += 1
        n = point.n_blocks
        for p, page_id in enumerate(point.pages):
            if page_id is None or page_id in live_pages:
                continue
            live_pages.add(page_id)
            live_blocks.update(repo.read_page(page_id, min(point.page_entries, n - p * point.page_entries)))
    live_blocks.discard(ZERO_ID)
    report.live_blocks = len(live_blocks)
    return live_pages, live_blocks
