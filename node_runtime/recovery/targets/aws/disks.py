"""AWS disks: recovery points reconstructed into EBS snapshots, read and patched in place.

* ``write_disk``: the point is reconstructed straight into a new EBS snapshot through the
  EBS direct APIs (:class:`~node_runtime.recovery.ebs_direct.EbsSnapshotWriter`) and
  waited on until ``completed``. Resource ``ebs-snapshot``.
* ``patch_disk``: a *child* snapshot (``StartSnapshot(ParentSnapshotId=...)``) holding only
  the touched 512 KiB blocks, each read-modify-written from the parent. Resource
  ``ebs-snapshot``; the parent stays listed (it is still the run's to delete).

Under moto 5, beyond what ``ebs_direct`` lists: ``StartSnapshot`` ignores
``ParentSnapshotId``, so a child snapshot holds only the blocks written into it and reads
as zeros outside the patched blocks.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from node_runtime.recovery.ebs_direct import EBS_BLOCK_SIZE, EbsSnapshotWriter, sha256_b64, volume_size_gib
from node_runtime.recovery.reconstruct import reconstruct
from node_runtime.recovery.targets.aws.common import (
    KIND,
    TAG_DISK,
    TAG_PARENT,
    TAG_POINT,
    AwsContext,
    aws_error,
    machine_tags,
    tag_list,
    tags_of,
    undo,
)
from node_runtime.recovery.targets.base import Cleaner, DiskArtifact, InstanceSpec, Progress, Resource
from shared.errors import InvalidInputError, LifeboatError, TargetError
from shared.repo.points import PointRecord
from shared.repo.repository import Repository

log = logging.getLogger(__name__)


class AwsDisks:
    """The :class:`~node_runtime.recovery.targets.base.DiskTarget` on AWS: EBS snapshots.

    Blocks read back are cached (LRU, ``context.cache_blocks`` of them); ``cleaner``
    removes what a failing call created.
    """

    kind = KIND

    def __init__(self, context: AwsContext, cleaner: Cleaner) -> None:
        self.context = context
        self.cleaner = cleaner
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._zero_block = bytes(EBS_BLOCK_SIZE)

    def write_disk(
        self, repo: Repository, point: PointRecord, spec: InstanceSpec, *, progress: Progress | None = None
    ) -> DiskArtifact:
        """A new completed EBS snapshot holding ``point`` (all-zero 512 KiB blocks not sent).

        On failure the pending snapshot is deleted (by the writer's ``abort``, or here if
        it never completes) and the error raised; a snapshot that could not be deleted is
        named in the error's ``resources``.
        """
        ctx = self.context
        size_gib = volume_size_gib(point.disk_size)
        tags = {**machine_tags(spec), TAG_DISK: point.disk_id, TAG_POINT: point.id}
        writer = EbsSnapshotWriter(
            ctx.ebs,
            volume_size_gib=size_gib,
            description=f"Lifeboat {spec.run_id} {spec.machine_id} {point.disk_id} {point.id}"[:255],
            tags=tags,
            ec2_client=ctx.ec2,
            threads=ctx.threads,
            kms_key_arn=ctx.kms_key_arn,
        )
        snap = writer.snapshot_id
        resource = Resource(
            type="ebs-snapshot",
            id=snap,
            detail={"disk_id": point.disk_id, "point_id": point.id, "volume_size_gib": str(size_gib)},
        )
        stats = reconstruct(repo, point, writer, threads=ctx.restore_threads, progress=progress)
        try:
            self._wait_snapshot(snap)
        except LifeboatError as exc:
            raise TargetError(f"{exc}", snapshot_id=snap, resources=undo(self.cleaner, [resource])) from exc
        log.info(
            "EBS snapshot written",
            extra={"disk_id": point.disk_id, "point_id": point.id, "snapshot_id": snap},
        )
        return DiskArtifact(
            disk_id=point.disk_id,
            point_id=point.id,
            disk_size=point.disk_size,
            format="ebs-snapshot",
            location=snap,
            bytes_written=stats.bytes_written,
            resources=[resource],
        )

    def _wait_snapshot(self, snap: str) -> None:
        def completed() -> bool:
            try:
                (s,) = self.context.ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"]
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(f"cannot describe snapshot {snap}", exc, snapshot_id=snap) from exc
            if s["State"] == "error":
                raise TargetError(
                    f"EBS snapshot {snap} failed: {s.get('StateMessage', 'state error')}", snapshot_id=snap
                )
            return bool(s["State"] == "completed")

        timeout = self.context.poll.snapshot_timeout
        self.context.wait(f"snapshot {snap} to complete", completed, timeout, snapshot_id=snap)

    def _list_blocks(self, snap: str, first: int, last: int) -> Iterator[tuple[int, str]]:
        """(index, token) of the snapshot's written blocks with ``first <= index <= last``."""
        args: dict[str, Any] = {"SnapshotId": snap, "StartingBlockIndex": first}
        while True:
            try:
                page = self.context.ebs.list_snapshot_blocks(**args)
            except (ClientError, BotoCoreError) as exc:
                raise aws_error(f"cannot list the blocks of snapshot {snap}", exc, snapshot_id=snap) from exc
            beyond = False
            for b in page.get("Blocks", []):
                i = int(b["BlockIndex"])
                if i > last:
                    beyond = True
                elif i >= first:  # moto ignores StartingBlockIndex (and pagination)
                    yield i, b["BlockToken"]
            token = page.get("NextToken")
            if beyond or not token:
                return
            args["NextToken"] = token

    def _get_block(self, snap: str, index: int, token: str) -> bytes:
        try:
            got = self.context.ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=index, BlockToken=token)
            data: bytes = got["BlockData"].read()
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(f"cannot read block {index} of snapshot {snap}", exc, snapshot_id=snap) from exc
        checksum = got.get("Checksum")
        if checksum and got.get("ChecksumAlgorithm", "SHA256") == "SHA256" and sha256_b64(data) != checksum:
            raise TargetError(f"block {index} of snapshot {snap} fails its checksum", snapshot_id=snap)
        return data

    def _read_blocks(self, snap: str, indexes: Iterable[int]) -> dict[int, bytes]:
        """The named 512 KiB blocks of ``snap``; blocks never written are zeros.

        A completed snapshot never changes, so blocks are cached (LRU, ``cache_blocks`` of
        them: 64 x 512 KiB = 32 MiB by default) for OS preparation's many small reads.
        """
        wanted = sorted(set(indexes))
        out: dict[int, bytes] = {}
        with self._cache_lock:
            for i in wanted:
                hit = self._cache.get((snap, i))
                if hit is not None:
                    self._cache.move_to_end((snap, i))
                    out[i] = hit
        missing = [i for i in wanted if i not in out]
        if not missing:
            return out
        fetched = dict.fromkeys(missing, self._zero_block)
        for i, token in self._list_blocks(snap, missing[0], missing[-1]):
            if i in fetched:
                data = self._get_block(snap, i, token)
                fetched[i] = data + bytes(EBS_BLOCK_SIZE - len(data))
        with self._cache_lock:
            for i, data in fetched.items():
                self._cache[(snap, i)] = data
            while len(self._cache) > self.context.cache_blocks:
                self._cache.popitem(last=False)
        return {**out, **fetched}

    def read_disk(self, artifact: DiskArtifact, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the disk, short only at ``artifact.disk_size``.

        One ``GetSnapshotBlock`` per written 512 KiB block in range (checksum checked);
        blocks absent from the snapshot read as zeros.
        """
        if offset < 0 or length < 0:
            raise InvalidInputError(f"bad range {offset}+{length}", offset=offset, length=length)
        end = min(offset + length, artifact.disk_size)
        if end <= offset:
            return b""
        first, last = offset // EBS_BLOCK_SIZE, (end - 1) // EBS_BLOCK_SIZE
        blocks = self._read_blocks(artifact.location, range(first, last + 1))
        joined = b"".join(blocks[i] for i in range(first, last + 1))
        base = first * EBS_BLOCK_SIZE
        return joined[offset - base : end - base]

    def patch_disk(self, artifact: DiskArtifact, patches: list[tuple[int, bytes]]) -> DiskArtifact:
        """A child snapshot of ``artifact`` with ``patches`` applied (later patches win).

        Only the touched 512 KiB blocks are written, each read from the parent, patched and
        put whole (zeros included: a block left out would show the parent's data). The
        child carries the parent's tags plus ``lifeboat:parent-snapshot``. The returned
        artifact points at the child; its ``resources`` are the parent's plus the child.
        Without patches the artifact is returned unchanged.
        """
        ctx = self.context
        for off, data in patches:
            if off < 0 or off + len(data) > artifact.disk_size:
                raise InvalidInputError(
                    f"patch of {len(data)} bytes at {off} is outside the {artifact.disk_size}-byte disk",
                    offset=off,
                    disk_id=artifact.disk_id,
                )
        patches = [(off, bytes(data)) for off, data in patches if data]
        if not patches:
            return artifact
        parent = artifact.location
        touched = {
            i
            for off, data in patches
            for i in range(off // EBS_BLOCK_SIZE, (off + len(data) - 1) // EBS_BLOCK_SIZE + 1)
        }
        blocks = {i: bytearray(b) for i, b in self._read_blocks(parent, touched).items()}
        for off, data in patches:
            pos = 0
            while pos < len(data):
                i, within = divmod(off + pos, EBS_BLOCK_SIZE)
                n = min(EBS_BLOCK_SIZE - within, len(data) - pos)
                blocks[i][within : within + n] = data[pos : pos + n]
                pos += n

        try:
            (described,) = ctx.ec2.describe_snapshots(SnapshotIds=[parent])["Snapshots"]
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(f"cannot describe snapshot {parent}", exc, snapshot_id=parent) from exc
        tags = {**tags_of(described), TAG_PARENT: parent}
        size_gib = int(described.get("VolumeSize") or volume_size_gib(artifact.disk_size))
        args: dict[str, Any] = {
            "VolumeSize": size_gib,
            "ParentSnapshotId": parent,
            "Description": f"Lifeboat patch of {parent}"[:255],
            "Tags": tag_list(tags),
            "ClientToken": str(uuid.uuid4()),
        }
        if ctx.kms_key_arn:
            args["Encrypted"], args["KmsKeyArn"] = True, ctx.kms_key_arn
        try:
            child = str(ctx.ebs.start_snapshot(**args)["SnapshotId"])
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(f"cannot start a child snapshot of {parent}", exc, snapshot_id=parent) from exc
        resource = Resource(
            type="ebs-snapshot",
            id=child,
            detail={
                "disk_id": artifact.disk_id,
                "point_id": artifact.point_id,
                "volume_size_gib": str(size_gib),
                "parent": parent,
            },
        )
        try:
            for i in sorted(blocks):
                block = bytes(blocks[i])
                ctx.ebs.put_snapshot_block(
                    SnapshotId=child,
                    BlockIndex=i,
                    BlockData=block,
                    DataLength=len(block),
                    Checksum=sha256_b64(block),
                    ChecksumAlgorithm="SHA256",
                )
            ctx.ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=len(blocks))
            self._wait_snapshot(child)
        except (ClientError, BotoCoreError, LifeboatError) as exc:
            raise TargetError(
                f"cannot write child snapshot {child} of {parent}: {exc}",
                snapshot_id=child,
                resources=undo(self.cleaner, [resource]),
            ) from exc
        return artifact.model_copy(
            update={"location": child, "resources": [*artifact.resources, resource]}, deep=True
        )
