"""Failback: bring an origin disk back to the latest reverse point, writing only what differs.

The origin is known to hold its last forward point ``F`` plus whatever was written to it
after ``F`` (until the disaster, or by someone since). Its dirty bitmap generation named
by ``F``'s change token records exactly those writes. So the blocks to write are

    {i : id_F[i] != id_R[i]}  U  {blocks the origin's bitmap marks dirty since F}

where ``R`` is the latest reverse point. When the origin cannot say what changed (no
bitmap: a raw image, or it was removed), failback refuses unless asked to *verify*:
then every other origin block is read and hashed, and the ones whose id differs from
``R`` are written too (and counted as diverged). After the writes are flushed, the old
bitmaps are replaced by a fresh generation, and a forward point with ``R``'s block map
and that generation's token is committed: forward protection resumes incrementally.

The origin image is opened through a ``qemu-storage-daemon`` (QEMU's image lock refuses a
disk whose VM still runs) and written over NBD.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from node_runtime.recovery.reconstruct import reconstruct
from node_runtime.replication.read_plan import blocks_touched
from node_runtime.sources.kvm import bitmaps
from node_runtime.sources.kvm.nbd_reader import DIRTY, NbdExport, dirty_context
from node_runtime.sources.kvm.offline import StorageDaemon
from node_runtime.sources.kvm.qmp import BlockDisk, Qmp
from node_runtime.sources.kvm.source import nbd_socket
from shared.errors import InvalidInputError, InvalidStateError, SourceError
from shared.repo.keys import ZERO_ID
from shared.repo.points import PointRecord, PointStats, new_point_id
from shared.repo.repository import Repository

log = logging.getLogger(__name__)

EXPORT = "lifeboat-failback"
_ZERO_CHUNK = 1 << 30


@dataclass(frozen=True)
class FailbackResult:
    point: PointRecord  # the forward point the origin now holds
    blocks: int  # blocks in the disk
    written_blocks: int
    written_bytes: int
    changed_blocks: int  # differed between the origin's last point and the reverse point
    dirty_blocks: int  # written on the origin after its last point (its bitmap)
    diverged_blocks: int  # found only by verification
    verified: bool


class _OriginWriter:
    """A :class:`BlockWriter` onto the origin's NBD export (holes are zeroed: the origin may hold data there)."""

    def __init__(self, export: NbdExport) -> None:
        self.export = export

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self.export.pwrite(offset, data)

    def skip(self, offset: int, length: int) -> None:
        for start in range(offset, offset + length, _ZERO_CHUNK):
            self.export.zero(start, min(_ZERO_CHUNK, offset + length - start))

    def finish(self) -> None:
        self.export.flush()

    def abort(self) -> None:
        """Nothing to undo: the origin's bitmap still marks every block written, so a retry rewrites them."""


def failback_disk(repo: Repository, *, disk_id: str, reverse: PointRecord, origin: str, verify: bool,
                  scratch_dir: Path, threads: int = 4) -> FailbackResult:  # fmt: skip
    """Write ``reverse`` into the ``origin`` image of ``disk_id``; commit and return the forward point."""
    if not Path(origin).exists():
        raise SourceError(
            f"the origin disk {origin} of {disk_id} is not reachable from this node", path=origin
        )
    forward = repo.resolve_point(disk_id, "latest")
    if (forward.disk_size, forward.block_size) != (reverse.disk_size, reverse.block_size):
        raise InvalidInputError(
            f"disk {disk_id} changed size or block size after the failover ({forward.disk_size} -> "
            f"{reverse.disk_size} bytes); failback writes disks of the same geometry only", disk_id=disk_id,
        )  # fmt: skip
    work = scratch_dir / f"failback-{disk_id}"
    daemon = StorageDaemon([origin], work)
    try:
        daemon.start()
    except SourceError as exc:
        raise SourceError(f"cannot open the origin disk of {disk_id}: {exc} (shut the origin VM down before failback)",
                          disk_id=disk_id) from exc  # fmt: skip
    try:
        return _write_back(repo, daemon, disk_id=disk_id, forward=forward, reverse=reverse, origin=origin,
                           verify=verify, scratch=work, threads=threads)  # fmt: skip
    finally:
        daemon.stop()


def _write_back(repo: Repository, daemon: StorageDaemon, *, disk_id: str, forward: PointRecord, reverse: PointRecord,
                origin: str, verify: bool, scratch: Path, threads: int) -> FailbackResult:  # fmt: skip
    sock = nbd_socket(scratch)
    with Qmp(str(daemon.qmp_socket)) as qmp:
        disk = daemon.disks(qmp)[str(Path(origin).resolve())]
        if disk.size != reverse.disk_size:
            raise InvalidStateError(f"the origin disk {origin} is {disk.size} bytes, the reverse point "
                                    f"{reverse.disk_size}: it is not the disk this plan protected", disk_id=disk_id)  # fmt: skip
        live = bitmaps.generations(disk_id, disk.bitmaps)
        generation = bitmaps.generation_of(disk_id, forward.change_token)
        tracked = generation is not None and generation in live and not live[generation].inconsistent
        if not tracked and not verify:
            raise InvalidStateError(
                f"the origin disk {origin} cannot say what changed since its last point {forward.id} (no dirty "
                "bitmap for it: a raw image, or the bitmap was removed); run a verified failback, which reads "
                "and hashes every origin block", disk_id=disk_id,
            )  # fmt: skip
        frozen = bitmaps.frozen_name(disk_id, generation or 0)
        if tracked:
            qmp.transaction([
                ("block-dirty-bitmap-add", {"node": disk.node, "name": frozen, "persistent": False, "disabled": True}),
                ("block-dirty-bitmap-merge", {"node": disk.node, "target": frozen,
                                              "bitmaps": [bitmaps.bitmap_name(disk_id, generation or 0)]}),
            ])  # fmt: skip
        sock.unlink(missing_ok=True)
        qmp.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": str(sock)}})
        qmp.cmd("block-export-add", type="nbd", id=EXPORT, **{"node-name": disk.node}, name=EXPORT, writable=True,
                bitmaps=[frozen] if tracked else [])  # fmt: skip
    export = NbdExport(str(sock), EXPORT, (dirty_context(frozen),) if tracked else ())
    try:
        plan = _plan(repo, export, forward, reverse, tracked=tracked, frozen=frozen, verify=verify)
        stats = reconstruct(repo, reverse, _OriginWriter(export), threads=threads, only=plan.write)
    finally:
        export.close()
    with Qmp(str(daemon.qmp_socket)) as qmp:
        qmp.cmd("block-export-del", id=EXPORT, mode="hard")
        qmp.wait_until("the failback export to go", lambda: not qmp.cmd("query-block-exports"))
        qmp.cmd("nbd-server-stop")
        new_token = _restart_tracking(qmp, disk, disk_id, frozen if tracked else None)
    point = _commit(repo, disk_id=disk_id, forward=forward, reverse=reverse, origin=origin, token=new_token,
                    written=len(plan.write), written_bytes=stats.bytes_written, verified=verify)  # fmt: skip
    return FailbackResult(point=point, blocks=reverse.n_blocks, written_blocks=len(plan.write),
                          written_bytes=stats.bytes_written, changed_blocks=plan.changed, dirty_blocks=plan.dirty,
                          diverged_blocks=plan.diverged, verified=verify)  # fmt: skip


@dataclass(frozen=True)
class _Plan:
    write: set[int]
    changed: int
    dirty: int
    diverged: int


def _plan(repo: Repository, export: NbdExport, forward: PointRecord, reverse: PointRecord, *, tracked: bool,
          frozen: str, verify: bool) -> _Plan:  # fmt: skip
    f_map, r_map = repo.block_map(forward), repo.block_map(reverse)
    changed = {i for i, (a, b) in enumerate(zip(f_map, r_map, strict=True)) if a != b}
    dirty: set[int] = set()
    if tracked:
        dirty = set(blocks_touched(export.extents(dirty_context(frozen), lambda f: bool(f & DIRTY)),
                                   reverse.block_size, reverse.n_blocks))  # fmt: skip
    write = changed | dirty
    diverged = 0
    if verify:  # never trust the origin: hash every block the plan would leave alone
        zeros = bytes(reverse.block_size)
        for i in range(reverse.n_blocks):
            if i in write:
                continue
            data = export.pread(i * reverse.block_size, reverse.block_length(i))
            block_id = ZERO_ID if data == zeros[: len(data)] else repo.key.block_id(data)
            if block_id != r_map[i]:
                write.add(i)
                diverged += 1
        if diverged:
            log.warning("verified failback: %d origin blocks of %s differed from what its points said",
                        diverged, forward.disk_id)  # fmt: skip
    return _Plan(write=write, changed=len(changed), dirty=len(dirty - changed), diverged=diverged)


def _restart_tracking(qmp: Qmp, disk: BlockDisk, disk_id: str, frozen: str | None) -> str | None:
    """Replace every Lifeboat bitmap of the disk with one fresh generation; its token, or None (raw)."""
    if frozen is not None:
        qmp.cmd("block-dirty-bitmap-remove", node=disk.node, name=frozen)
    live = bitmaps.generations(disk_id, disk.bitmaps)
    for g in live:
        qmp.cmd("block-dirty-bitmap-remove", node=disk.node, name=bitmaps.bitmap_name(disk_id, g))
    if not disk.persistent_bitmaps:
        return None
    generation = max(live, default=0) + 1
    qmp.cmd(
        "block-dirty-bitmap-add",
        node=disk.node,
        name=bitmaps.bitmap_name(disk_id, generation),
        persistent=True,
    )
    return bitmaps.token(disk_id, generation)


def _commit(repo: Repository, *, disk_id: str, forward: PointRecord, reverse: PointRecord, origin: str,
            token: str | None, written: int, written_bytes: int, verified: bool) -> PointRecord:  # fmt: skip
    """The origin now holds ``reverse``: a forward point sharing its block map (no data moves)."""
    when = max(
        datetime.now(UTC), forward.time + timedelta(milliseconds=1), reverse.time + timedelta(milliseconds=1)
    )
    when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    point = PointRecord(
        id=new_point_id(when), disk_id=disk_id, time=when, disk_size=reverse.disk_size, block_size=reverse.block_size,
        page_entries=reverse.page_entries, pages=list(reverse.pages), parent=forward.id, source=origin,
        change_token=token,
        tags={"read": "failback", "reverse_point": f"{reverse.disk_id}/{reverse.id}", "written_blocks": str(written),
              "verified": str(verified).lower()},
        stats=PointStats(blocks_read=written, bytes_read=written_bytes),
    )  # fmt: skip
    with repo.lock(exclusive=False):
        repo.write_point(point)
    return point
