"""The replication pipeline: source disk -> crash-consistent recovery point.

Stages (one run, one disk)::

    plan (caller thread) --[window: W blocks]--> read/hash/dedup/compress/encrypt (workers)
        --[packer]--> upload (streams) --[checkpoint]--> index --> pages --> point

Memory math, with B = block size, P = pack target (16 MiB), W = 2 x workers + 2:
  blocks in flight       <= W x B                    (the read window semaphore)
  pack being assembled   <= P + B
  packs queued/uploading <= streams x (P + B)        (the upload semaphore)
so with 2 workers, 4 streams and 1 MiB blocks the buffers stay under ~100 MiB whatever the
disk size (peak RSS of the whole process, interpreter and libraries included, measured
145-183 MiB on a 2 GiB image: docs/BENCHMARKS.md).
The index is not loaded: an IndexView answers "do we have this id?" from the uncovered
deltas (kept few by compaction) and at most 64 cached shards of ~190 KiB, so memory and
start-up do not grow with the repository (FORMAT.md §6.2). Ids equal to the parent's at
the same position never reach the index at all (same-disk dedup from the block map).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from node_runtime.replication.read_plan import blocks_touched, chunk_masks, plan_reads
from node_runtime.sources.port import DiskSource
from shared.errors import InvalidInputError, LifeboatError, PointNotFoundError, RepositoryLockedError
from shared.repo import blobs
from shared.repo.codec import IndexEntry
from shared.repo.compact import compact, compaction_due
from shared.repo.index import UNKNOWN, IndexView
from shared.repo.keys import ZERO_ID
from shared.repo.packer import DEFAULT_PACK_TARGET, Packer, SealedPack
from shared.repo.points import (
    MAX_BLOCK_SIZE,
    MIN_BLOCK_SIZE,
    PAGE_ENTRIES,
    PointRecord,
    PointStats,
    check_disk_id,
    new_point_id,
)
from shared.repo.repository import Repository

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 1 << 20
_ZEROS: dict[int, bytes] = {}


def _zeros(n: int) -> bytes:
    """A shared all-zero buffer: comparing against it is a memcmp, the cheapest hole test."""
    z = _ZEROS.get(n)
    if z is None:
        z = _ZEROS[n] = bytes(n)
    return z


Progress = Callable[[int, int], None]  # (bytes processed, bytes to process)


@dataclass
class ReplicationOptions:
    block_size: int | None = None  # None: the parent's, else 1 MiB
    streams: int = 4  # parallel uploads
    workers: int = 2  # hash/compress/encrypt threads
    compression_level: int = 1  # zstd 1 matched level 3's ratio at 5x the speed on VM images
    pack_target: int = DEFAULT_PACK_TARGET
    checkpoint_bytes: int = 256 << 20
    checkpoint_seconds: float = 60.0
    tags: dict[str, str] = field(default_factory=dict)
    #: (disk id, point id) to start from when ``disk_id`` has no point yet: a reverse
    #: lineage after a failover starts from the failed-over point, so it stores only changes
    seed_parent: tuple[str, str] | None = None
    #: merge the index's deltas into a new generation after the commit when enough piled up
    auto_compact: bool = True
    #: store a changed block as a patch of its parent block while at most this many of its
    #: 64 chunks changed (incremental runs; 0 stores every changed block whole)
    max_patch_chunks: int = 32


class _Run:
    """Shared state of one replication run; every mutation happens under ``lock``."""

    def __init__(self, repo: Repository, opts: ReplicationOptions, known: IndexView, block_size: int) -> None:
        self.repo = repo
        self.block_size = block_size
        self.opts = opts
        self.known = known
        #: block -> chunks the source says changed (incremental runs only): patch candidates
        self.masks: dict[int, int] = {}
        self.lock = threading.Lock()
        self.inflight: set[bytes] = set()
        self.packer = Packer(repo.key, opts.pack_target)
        self.pending_rows: list[tuple[bytes, IndexEntry]] = []
        self.pending_bytes = 0
        self.last_checkpoint = time.monotonic()
        self.stats = PointStats()
        self.error: BaseException | None = None
        self.window = threading.BoundedSemaphore(2 * opts.workers + 2)
        self.upload_slots = threading.BoundedSemaphore(opts.streams)
        self.uploads: list[Future[None]] = []
        self.upload_pool = ThreadPoolExecutor(opts.streams, thread_name_prefix="upload")
        self.lookups = ThreadPoolExecutor(2 * opts.workers + 2, thread_name_prefix="lookup")

    # upload stage --------------------------------------------------------------------------
    def submit_pack(self, pack: SealedPack) -> None:
        self.upload_slots.acquire()  # backpressure: at most `streams` packs in memory
        try:
            fut = self.upload_pool.submit(self._upload, pack)
        except BaseException:
            self.upload_slots.release()
            raise
        with self.lock:
            self.uploads.append(fut)

    def _upload(self, pack: SealedPack) -> None:
        try:
            self.repo.put_pack(pack.id, pack.data)
            with self.lock:
                self.pending_rows.extend(pack.index_rows())
                self.pending_bytes += len(pack.data)
                self.stats.bytes_new_stored += len(pack.data)
                due = (
                    self.pending_bytes >= self.opts.checkpoint_bytes
                    or time.monotonic() - self.last_checkpoint >= self.opts.checkpoint_seconds
                )
            if due:
                self.checkpoint()
        except BaseException as exc:
            with self.lock:
                self.error = self.error or exc  # stops the reader early
            raise
        finally:
            self.upload_slots.release()

    def checkpoint(self) -> None:
        """Commit an index for every uploaded pack, so a killed run's successor skips them."""
        with self.lock:
            rows, self.pending_rows = self.pending_rows, []
            self.pending_bytes = 0
            self.last_checkpoint = time.monotonic()
        if rows:
            try:
                self.repo.write_index(rows)
            except BaseException:
                with self.lock:
                    self.pending_rows[:0] = rows
                raise
            self.known.add(rows)

    # hash/compress stage ---------------------------------------------------------------------
    def process(
        self, i: int, source: DiskSource, length: int, new_map: list[bytes], parent_map: Sequence[bytes]
    ) -> None:
        """Read block ``i`` and take it through hash, dedup, compress, encrypt and packing."""
        try:
            if self.error is not None:
                return
            # Reading here, not in the submitting thread: pread releases the GIL, and a
            # lone reader thread would queue behind the workers for the GIL on every block.
            data = source.read(i * self.block_size, length)
            if data == _zeros(len(data)):
                new_map[i] = ZERO_ID
                return
            block_id = self.repo.key.block_id(data)
            new_map[i] = block_id
            if i < len(parent_map) and parent_map[i] == block_id:
                return
            probe = self.known.peek(block_id)
            if probe is not None and probe is not UNKNOWN:
                return
            # the shard that knows is fetched while this block is compressed and sealed
            pending = self.lookups.submit(self.known.get, block_id) if probe is UNKNOWN else None
            with self.lock:
                if block_id in self.inflight:
                    return
                self.inflight.add(block_id)
            patch = self._patch(i, data, parent_map)
            if patch is not None:
                blob = blobs.encode_patch(self.repo.key, block_id, patch, level=self.opts.compression_level)
                raw = len(patch.chunks)
            else:
                blob = blobs.encode_blob(self.repo.key, block_id, data, level=self.opts.compression_level)
                raw = len(data)
            if pending is not None and pending.result() is not None:  # stored already: drop it
                with self.lock:
                    self.inflight.discard(block_id)
                return
            with self.lock:
                self.stats.blocks_new += 1
                self.stats.blocks_patched += patch is not None
                self.stats.bytes_new_raw += raw
                full = self.packer.add(
                    block_id,
                    blob,
                    len(data),
                    base=patch.base if patch else None,
                    mask=patch.mask if patch else 0,
                )
            if full is not None:
                self.submit_pack(full.seal())  # sealed outside the lock
        except BaseException as exc:
            with self.lock:
                self.error = self.error or exc
        finally:
            self.window.release()

    def _patch(self, i: int, data: bytes, parent_map: Sequence[bytes]) -> blobs.Patch | None:
        """Block ``i`` as a patch of the parent's block there, when the source's change
        tracking says few of its chunks changed (FORMAT.md §5.1); else None (store it whole).

        A patch's base is always a whole block: a parent block that is itself a patch
        lends its base, and the masks merge, so a restore reads at most two blobs a block.
        """
        mask = self.masks.get(i, 0)
        if not mask or len(data) != self.block_size or i >= len(parent_map) or parent_map[i] == ZERO_ID:
            return None
        parent_id = parent_map[i]
        entry = self.known.get(parent_id)
        if entry is None or entry.raw_length != len(data):
            return None
        base = parent_id if entry.base is None else entry.base
        mask |= entry.mask
        if mask.bit_count() > self.opts.max_patch_chunks:
            return None
        return blobs.patch_of(data, base, mask)

    def finish_uploads(self) -> None:
        with self.lock:
            full = self.packer.flush()
        if full is not None:
            self.submit_pack(full.seal())
        self.upload_pool.shutdown(wait=True)
        self.lookups.shutdown(wait=True)
        for fut in self.uploads:
            exc = fut.exception()
            if exc is not None and self.error is None:
                self.error = exc


def replicate(
    repo: Repository,
    disk_id: str,
    source: DiskSource,
    opts: ReplicationOptions | None = None,
    *,
    progress: Progress | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PointRecord:
    """Replicate ``source`` as a new point of ``disk_id`` and return the committed point.

    Incremental against the disk's latest point: when the source's plan is incremental
    only its changed ranges are read; otherwise every data block is read but only changed
    ids are sent. The point records the source's change token (the next run asks the
    source for what changed since it) and, in its ``read`` tag, whether the run read
    ``changed`` ranges or the ``full`` disk (with the reason in ``read_note``).
    Blocks already anywhere in the repository are never sent (dedup). On failure the
    packs already uploaded are indexed before the error propagates, so a retry resumes.
    """
    opts = opts or ReplicationOptions()
    check_disk_id(disk_id)
    started = time.monotonic()
    with repo.lock(exclusive=False):
        try:
            parent: PointRecord | None = repo.resolve_point(disk_id, "latest")
        except PointNotFoundError:
            parent = repo.read_point(*opts.seed_parent) if opts.seed_parent else None
        block_size = opts.block_size or (parent.block_size if parent else DEFAULT_BLOCK_SIZE)
        if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
            raise InvalidInputError(f"block size {block_size} must be a power of two from 64 KiB to 4 MiB")
        if parent is not None and parent.block_size != block_size:
            raise InvalidInputError(
                f"disk {disk_id} uses {parent.block_size}-byte blocks; block size is fixed per disk"
            )
        n_blocks = -(-source.size // block_size)
        parent_map = repo.block_map(parent) if parent and parent.block_size == block_size else []
        new_map = list(parent_map[:n_blocks]) + [ZERO_ID] * max(0, n_blocks - len(parent_map))
        plan = plan_reads(source, block_size, parent)
        to_read = list(blocks_touched(plan.extents, block_size, n_blocks))
        if not plan.incremental:
            # Blocks not read are holes in the source, whatever the parent had there.
            reading = set(to_read)
            new_map = [ZERO_ID if i not in reading else new_map[i] for i in range(n_blocks)]
        view = IndexView.open(repo)
        run = _Run(repo, opts, view, block_size)
        if plan.incremental and opts.max_patch_chunks:
            run.masks = chunk_masks(plan.extents, block_size, n_blocks)
            if run.masks:
                repo.upgrade()  # patches are version 2 (FORMAT.md §2)
        total = sum(min(block_size, source.size - i * block_size) for i in to_read)
        done = 0
        with ThreadPoolExecutor(opts.workers, thread_name_prefix="hash") as workers:
            try:
                for i in to_read:
                    if run.error is not None:
                        break
                    length = min(block_size, source.size - i * block_size)
                    run.window.acquire()
                    workers.submit(run.process, i, source, length, new_map, parent_map)
                    done += length
                    run.stats.blocks_read += 1
                    if progress:
                        progress(done, total)
            except BaseException as exc:
                run.error = run.error or exc
        run.finish_uploads()
        run.stats.bytes_read = done
        try:
            run.checkpoint()
        except BaseException as exc:
            run.error = run.error or exc
        if run.error is not None:
            raise run.error
        when = now()
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)
        if parent is not None and when <= parent.time:
            when = parent.time + timedelta(milliseconds=1)  # ids must sort in commit order
        run.stats.duration_s = round(time.monotonic() - started, 3)
        run.stats.holes = sum(1 for b in new_map if b == ZERO_ID)
        tags = {**opts.tags, "read": "changed" if plan.incremental else "full"}
        if plan.note:
            tags["read_note"] = plan.note[:500]
        point = _commit(repo, disk_id, source, block_size, new_map, parent, parent_map, run, tags, when)
    if opts.auto_compact and compaction_due(view):
        _compact_quietly(repo)
    return point


def _compact_quietly(repo: Repository) -> None:
    """Compaction after a committed point: its failure is logged, never the run's."""
    try:
        report = compact(repo)
        log.info("index compacted into %s (%d deltas merged)", report.generation, report.deltas_merged)
    except RepositoryLockedError:
        log.info("index compaction skipped: another process is compacting or pruning")
    except LifeboatError as exc:
        log.warning("index compaction failed (the point is committed; next run retries): %s", exc)


def _commit(
    repo: Repository,
    disk_id: str,
    source: DiskSource,
    block_size: int,
    new_map: list[bytes],
    parent: PointRecord | None,
    parent_map: Sequence[bytes],
    run: _Run,
    tags: dict[str, str],
    when: datetime,
) -> PointRecord:
    """Write changed pages, then the point record: the commit."""
    pages: list[str | None] = []
    n_pages = -(-len(new_map) // PAGE_ENTRIES)
    for p in range(n_pages):
        lo, hi = p * PAGE_ENTRIES, min((p + 1) * PAGE_ENTRIES, len(new_map))
        ids = new_map[lo:hi]
        same_span = parent is not None and min(parent.n_blocks, (p + 1) * PAGE_ENTRIES) == hi
        if parent is not None and same_span and p < len(parent.pages) and list(parent_map[lo:hi]) == ids:
            pages.append(parent.pages[p])
        else:
            pages.append(repo.write_page(ids))
    point = PointRecord(
        id=new_point_id(when),
        disk_id=disk_id,
        time=when,
        disk_size=source.size,
        block_size=block_size,
        pages=pages,
        parent=parent.id if parent else None,
        source=source.label,
        change_token=source.change_token,
        tags=tags,
        stats=run.stats,
    )
    repo.write_point(point)
    return point
