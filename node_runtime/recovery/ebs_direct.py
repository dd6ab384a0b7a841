"""Reconstruct a point straight into an EBS snapshot with the EBS direct APIs.

``StartSnapshot`` opens a pending snapshot, ``PutSnapshotBlock`` writes 512 KiB blocks
(each with its base64 SHA-256), ``CompleteSnapshot`` seals it with the number of blocks
written. Blocks never written read as zeros, so all-zero EBS blocks are not sent.

The point's blocks (64 KiB-4 MiB) rarely match EBS's 512 KiB: a larger point block is
cut into EBS blocks; smaller point blocks are gathered until their EBS block is full
(holes announced through ``skip`` count as filled). An EBS block still partial at
``finish`` (the disk's tail, or a mix of data and unannounced gaps) is sent zero-padded.

Memory: ``2 x threads`` requests of 512 KiB in flight, plus the partial EBS blocks being
gathered (only when the point's block size is under 512 KiB; about ``threads`` of them
when packs hold blocks in disk order, which the replication pipeline does).

Abort: EBS direct has no abort call. ``abort`` deletes the pending snapshot through EC2
``DeleteSnapshot`` when given an EC2 client; otherwise (or if that fails) the snapshot
goes to ``error`` when its ``Timeout`` (``timeout_minutes``) passes.

Under moto 5 (``mock_aws``): start/put/get/list/complete work and tags reach EC2's
DescribeSnapshots, but nothing is validated (checksum, DataLength, ChangedBlocksCount,
Timeout, ClientToken, Encrypted/KmsKeyArn are accepted and ignored), StartSnapshot
answers ``BlockSize: 512`` instead of 524288, a stray EC2 volume is created per
snapshot, list calls do not paginate, and EC2 DeleteSnapshot leaves the EBS-direct view
of the snapshot readable.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from node_runtime.recovery.writers import BoundedPool
from shared.errors import TargetError

log = logging.getLogger(__name__)

EBS_BLOCK_SIZE = 512 << 10  # the only block size of EBS direct PutSnapshotBlock
GiB = 1 << 30


def volume_size_gib(disk_size: int) -> int:
    """The smallest EBS volume size (whole GiB, at least 1) that holds ``disk_size`` bytes."""
    return max(1, -(-disk_size // GiB))


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class _Partial:
    __slots__ = ("buf", "filled")

    def __init__(self) -> None:
        self.buf: bytearray | None = None
        self.filled = 0


class EbsSnapshotWriter:
    """A :class:`~node_runtime.recovery.writers.BlockWriter` producing a new EBS snapshot.

    The constructor starts the snapshot (``snapshot_id``); ``finish`` completes it and
    returns once CompleteSnapshot answered: the snapshot may still be ``pending`` in
    EC2 for a while (wait with the EC2 ``snapshot_completed`` waiter before using it).
    Retries and throttling belong to the client's botocore config (``retries``).
    """

    def __init__(
        self,
        ebs_client: Any,
        *,
        volume_size_gib: int,
        description: str = "",
        tags: dict[str, str] | None = None,
        ec2_client: Any = None,
        block_size: int = EBS_BLOCK_SIZE,
        threads: int = 8,
        timeout_minutes: int | None = None,
        kms_key_arn: str | None = None,
        client_token: str | None = None,
    ) -> None:
        if volume_size_gib <= 0:
            raise ValueError("volume_size_gib must be positive")
        if block_size <= 0 or block_size & (block_size - 1):
            raise ValueError("block_size must be a power of two")
        self.ebs = ebs_client
        self.ec2 = ec2_client
        self.block_size = block_size
        self.volume_bytes = volume_size_gib * GiB
        self.blocks_written = 0
        self.zero_blocks_skipped = 0
        self._zeros = bytes(block_size)
        self._lock = threading.Lock()
        self._partial: dict[int, _Partial] = {}
        self._aborted = False
        args: dict[str, Any] = {
            "VolumeSize": volume_size_gib,
            "Description": description,
            "ClientToken": client_token or str(uuid.uuid4()),
        }
        if tags:
            args["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        if timeout_minutes is not None:
            args["Timeout"] = timeout_minutes
        if kms_key_arn:
            args["Encrypted"], args["KmsKeyArn"] = True, kms_key_arn
        try:
            self.snapshot_id: str = ebs_client.start_snapshot(**args)["SnapshotId"]
        except (ClientError, BotoCoreError) as exc:
            raise TargetError(
                f"cannot start an EBS snapshot: {exc}", volume_size_gib=volume_size_gib
            ) from exc
        self._pool = BoundedPool(threads, name="ebs-put")

    # --- BlockWriter ------------------------------------------------------------------------
    def write(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        if offset < 0 or offset + len(view) > self.volume_bytes:
            raise TargetError(
                f"write of {len(view)} bytes at {offset} is beyond the {self.volume_bytes}-byte volume",
                snapshot_id=self.snapshot_id,
            )
        self._pool.check()
        bs = self.block_size
        pos = 0
        while pos < len(view):
            index, within = divmod(offset + pos, bs)
            n = min(bs - within, len(view) - pos)
            piece = view[pos : pos + n]
            if n == bs:
                self._send(index, bytes(piece))
            else:
                self._gather(index, within, piece)
            pos += n

    def skip(self, offset: int, length: int) -> None:
        bs = self.block_size
        end = offset + length
        while offset < end:
            index, within = divmod(offset, bs)
            n = min(bs - within, end - offset)
            if n < bs:
                self._gather(index, within, None, n)
            offset += n

    def finish(self) -> None:
        with self._lock:
            partial, self._partial = self._partial, {}
        try:
            for index, p in sorted(partial.items()):
                if p.buf is not None:
                    self._send(index, bytes(p.buf))
            self._pool.wait()
            self.ebs.complete_snapshot(SnapshotId=self.snapshot_id, ChangedBlocksCount=self.blocks_written)
        except (ClientError, BotoCoreError) as exc:
            raise TargetError(
                f"cannot complete EBS snapshot {self.snapshot_id}: {exc}", snapshot_id=self.snapshot_id
            ) from exc

    def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        self._pool.cancel()
        if self.ec2 is None:
            log.warning(
                "EBS snapshot %s left pending (no EC2 client to delete it); it errors out on its timeout",
                self.snapshot_id,
            )
            return
        try:
            self.ec2.delete_snapshot(SnapshotId=self.snapshot_id)
        except Exception:
            log.warning("cannot delete EBS snapshot %s", self.snapshot_id, exc_info=True)

    # --- gathering and sending ---------------------------------------------------------------
    def _gather(self, index: int, within: int, piece: memoryview | None, length: int = 0) -> None:
        """Add ``piece`` (or ``length`` hole bytes) to partial EBS block ``index``; send it when full."""
        bs = self.block_size
        tail = self.volume_bytes - index * bs  # a volume is whole GiB, so every block is full size
        with self._lock:
            p = self._partial.get(index)
            if p is None:
                p = self._partial[index] = _Partial()
            if piece is not None:
                if p.buf is None:
                    p.buf = bytearray(bs)
                p.buf[within : within + len(piece)] = piece
                p.filled += len(piece)
            else:
                p.filled += length
            if p.filled < min(bs, tail):
                return
            del self._partial[index]
        if p.buf is not None:
            self._send(index, bytes(p.buf))

    def _send(self, index: int, block: bytes) -> None:
        if block == self._zeros:
            with self._lock:
                self.zero_blocks_skipped += 1
            return
        self._pool.submit(lambda: self._put(index, block))

    def _put(self, index: int, block: bytes) -> None:
        try:
            self.ebs.put_snapshot_block(
                SnapshotId=self.snapshot_id,
                BlockIndex=index,
                BlockData=block,
                DataLength=len(block),
                Checksum=sha256_b64(block),
                ChecksumAlgorithm="SHA256",
            )
        except (ClientError, BotoCoreError) as exc:
            raise TargetError(
                f"PutSnapshotBlock {index} of {self.snapshot_id} failed: {exc}", snapshot_id=self.snapshot_id
            ) from exc
        with self._lock:
            self.blocks_written += 1
