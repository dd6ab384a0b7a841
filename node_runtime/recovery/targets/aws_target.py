"""The AWS recovery target: EBS snapshots, an AMI, ENIs and an EC2 instance.

Flow and what each step creates (each listed in ``resources`` as soon as it exists):

* ``write_disk``: the point is reconstructed straight into a new EBS snapshot through the
  EBS direct APIs (:class:`~node_runtime.recovery.ebs_direct.EbsSnapshotWriter`) and
  waited on until ``completed``. Resource ``ebs-snapshot``.
* ``patch_disk``: a *child* snapshot (``StartSnapshot(ParentSnapshotId=...)``) holding only
  the touched 512 KiB blocks, each read-modify-written from the parent. Resource
  ``ebs-snapshot``; the parent stays listed (it is still the run's to delete).
* ``create_instance``: an AMI registered over the snapshots (boot disk ``/dev/xvda``,
  then ``/dev/xvdb``...; HVM, ENA, boot mode), waited on until ``available``. Resource
  ``ami``. Nothing runs yet: the :class:`Instance` is ``defined`` and its ``instance_id``
  is the AMI id until ``power_on``.
* ``attach_networks``: one ENI per :class:`NicSpec`, in order (device index = position),
  in the subnet named by ``NicSpec.network``. Resource ``eni`` each.
* ``power_on``: ``RunInstances`` from the AMI with those ENIs, IMDSv2 only, tags on the
  instance and its volumes; waited on until ``running``. Resource ``ec2-instance``; from
  here ``instance_id`` is the EC2 instance id. The root/data volumes are created by EC2
  with ``DeleteOnTermination`` (set in the AMI's mappings) and go with the instance; they
  are tagged, so :meth:`AwsTarget.find_tagged` shows any that were left.
* ``validate``: EC2 status checks (and, with a marker, the console output).

Cleanup (:meth:`AwsTarget.delete`) in reverse order: terminate the instance and wait for
``terminated``, delete the ENIs (retrying while EC2 still has them ``in-use``), deregister
the AMI, delete the snapshots. "Not found" (and an instance already ``terminated``)
answers ``False``.

Errors: botocore errors become :class:`~shared.errors.TargetError` with the cause
chained; requests EC2 rejects as malformed or naming things that do not exist (a subnet,
a security group, an instance type) become :class:`~shared.errors.InvalidInputError`.
Retries and throttling belong to the clients' botocore ``Config`` (``aws_target`` sets
``standard`` retries); waits here are bounded by :class:`Poll`.

Under moto 5 (``mock_aws``), beyond what ``ebs_direct`` lists:

* ``RegisterImage`` ignores everything but Name/Description (no block device mappings,
  architecture, boot mode, ENA or tags: the AMI gets moto defaults and an auto-created
  snapshot of its own), hence the extra ``CreateTags`` here.
* ``StartSnapshot`` ignores ``ParentSnapshotId``: a child snapshot holds only the blocks
  written into it, so under moto it reads as zeros outside the patched blocks.
* Instances are ``running`` at once; ``DescribeInstanceStatus`` answers ``ok``/``ok``
  (reachability ``passed``) for any running instance; ``GetConsoleOutput`` returns the
  same canned Xen boot log for every instance (base64), so a guest marker is only
  "found" if it occurs in that text; terminated instances keep their ENIs ``in-use``,
  and ``DeleteNetworkInterface`` never refuses an in-use ENI.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from node_runtime.recovery.ebs_direct import EBS_BLOCK_SIZE, EbsSnapshotWriter, sha256_b64, volume_size_gib
from node_runtime.recovery.reconstruct import reconstruct
from node_runtime.recovery.targets.base import (
    DiskArtifact,
    Evidence,
    Instance,
    InstanceSpec,
    NicSpec,
    Progress,
    Resource,
    Target,
    ValidationSpec,
)
from shared.domain.hardware import Firmware
from shared.errors import InvalidInputError, LifeboatError, TargetError
from shared.repo.points import PointRecord
from shared.repo.repository import Repository

log = logging.getLogger(__name__)

KIND = "aws"
TAG_RUN = "lifeboat:run"
TAG_MACHINE = "lifeboat:machine"
TAG_DISK = "lifeboat:disk"
TAG_POINT = "lifeboat:point"
TAG_PARENT = "lifeboat:parent-snapshot"
TAG_LAUNCH = "lifeboat:launch-token"

#: Device names of the AMI's disks, boot disk first.
DEVICE_NAMES = ["/dev/xvda", *(f"/dev/xvd{c}" for c in "bcdefghijklmnopqrstuvwxyz")]

# "Not found" codes: deleting something already gone answers False.
_NOT_FOUND = {
    "InvalidInstanceID.NotFound",
    "InvalidNetworkInterfaceID.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Unavailable",
    "InvalidSnapshot.NotFound",
    "InvalidVolume.NotFound",
    "ResourceNotFoundException",
}
# The request itself is wrong: what it names does not exist or is malformed.
_INVALID = {
    "InvalidSubnetID.NotFound",
    "InvalidSubnetID.Malformed",
    "InvalidGroup.NotFound",
    "InvalidGroupId.Malformed",
    "InvalidSecurityGroupID.NotFound",
    "InvalidInstanceType",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidParameter",
    "InvalidInstanceID.Malformed",
    "InvalidNetworkInterfaceID.Malformed",
    "InvalidAMIID.Malformed",
    "InvalidSnapshotID.Malformed",
    "InvalidVolumeID.Malformed",
    "ValidationException",
    "MissingParameter",
}
_IN_USE = {
    "InvalidNetworkInterface.InUse",
    "InvalidSnapshot.InUse",
    "VolumeInUse",
    "InvalidVolume.InUse",
    "DependencyViolation",
}
_LAUNCH_ATTEMPTS = 8
_ALIVE = ["pending", "running", "stopping", "stopped", "shutting-down"]


@dataclass(frozen=True)
class Poll:
    """How waits are paced and bounded (inject ``sleep``/``clock`` in tests).

    ``timeout`` bounds waiting for an AMI, an instance (running/terminated) and in-use
    ENIs/snapshots/volumes; ``snapshot_timeout`` bounds waiting for a snapshot to
    complete after ``CompleteSnapshot`` (large snapshots take a while).
    """

    interval: float = 5.0
    timeout: float = 900.0
    snapshot_timeout: float = 7200.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)


def _code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _error(what: str, exc: BaseException, **fields: object) -> LifeboatError:
    """Our error for a botocore failure of ``what`` (chain it with ``raise ... from exc``)."""
    code = _code(exc)
    cls = InvalidInputError if code in _INVALID else TargetError
    return cls(f"{what}: {exc}", code=code, **fields)


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _tag_spec(resource_type: str, tags: dict[str, str]) -> dict[str, Any]:
    return {"ResourceType": resource_type, "Tags": _tag_list(tags)}


def _tags_of(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


def machine_tags(spec: InstanceSpec) -> dict[str, str]:
    """The tags of everything made for ``spec``: its own tags, then the run and machine ids."""
    tags = {"Name": spec.name, **spec.tags}
    tags[TAG_RUN] = spec.run_id
    tags[TAG_MACHINE] = spec.machine_id
    return tags


def _ami_name(spec: InstanceSpec) -> str:
    raw = f"lifeboat-{spec.run_id}-{spec.machine_id}-{uuid.uuid4().hex[:8]}"
    return re.sub(r"[^A-Za-z0-9()\[\] ./'@_-]", "_", raw)[:128]


class AwsTarget:
    """All five capabilities of a :class:`~node_runtime.recovery.targets.base.Target` on AWS.

    ``ec2`` and ``ebs`` are boto3 clients of one region. ``kms_key_arn`` encrypts new
    snapshots (and so the AMI's volumes). ``threads`` concurrent PutSnapshotBlock calls
    per disk (the EBS client needs ``max_pool_connections >= 2 x threads``).
    ``boot_mode`` defaults to ``uefi`` for arm64 and ``legacy-bios`` otherwise; it must
    match how the source disk boots.
    """

    kind = KIND

    def __init__(
        self,
        ec2: Any,
        ebs: Any,
        *,
        kms_key_arn: str | None = None,
        threads: int = 8,
        architecture: str = "x86_64",
        default_instance_type: str = "t3.small",
        poll: Poll | None = None,
        boot_mode: str | None = None,
        volume_type: str = "gp3",
        restore_threads: int = 4,
        cache_blocks: int = 64,
    ) -> None:
        if threads < 1 or restore_threads < 1:
            raise ValueError("threads must be positive")
        self.ec2 = ec2
        self.ebs = ebs
        self.kms_key_arn = kms_key_arn
        self.threads = threads
        self.restore_threads = restore_threads
        self.architecture = architecture
        self.default_instance_type = default_instance_type
        self.poll = poll or Poll()
        self.boot_mode = boot_mode or ("uefi" if architecture == "arm64" else "legacy-bios")
        self.volume_type = volume_type
        self.cache_blocks = cache_blocks
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._zero_block = bytes(EBS_BLOCK_SIZE)

    # --- waiting ---------------------------------------------------------------------------------
    def _wait(self, what: str, check: Callable[[], bool], timeout: float, **fields: object) -> None:
        """Call ``check`` until it answers True; TargetError after ``timeout`` seconds."""
        deadline = self.poll.clock() + timeout
        while not check():
            if self.poll.clock() >= deadline:
                raise TargetError(f"timed out after {timeout:g} s waiting for {what}", **fields)
            self.poll.sleep(self.poll.interval)

    # --- DiskTarget ------------------------------------------------------------------------------
    def write_disk(
        self, repo: Repository, point: PointRecord, spec: InstanceSpec, *, progress: Progress | None = None
    ) -> DiskArtifact:
        """A new completed EBS snapshot holding ``point`` (all-zero 512 KiB blocks not sent).

        On failure the pending snapshot is deleted (by the writer's ``abort``, or here if
        it never completes) and the error raised; a snapshot that could not be deleted is
        named in the error's ``resources``.
        """
        size_gib = volume_size_gib(point.disk_size)
        tags = {**machine_tags(spec), TAG_DISK: point.disk_id, TAG_POINT: point.id}
        writer = EbsSnapshotWriter(
            self.ebs,
            volume_size_gib=size_gib,
            description=f"Lifeboat {spec.run_id} {spec.machine_id} {point.disk_id} {point.id}"[:255],
            tags=tags,
            ec2_client=self.ec2,
            threads=self.threads,
            kms_key_arn=self.kms_key_arn,
        )
        snap = writer.snapshot_id
        resource = Resource(
            type="ebs-snapshot",
            id=snap,
            detail={"disk_id": point.disk_id, "point_id": point.id, "volume_size_gib": str(size_gib)},
        )
        stats = reconstruct(repo, point, writer, threads=self.restore_threads, progress=progress)
        try:
            self._wait_snapshot(snap)
        except LifeboatError as exc:
            raise TargetError(f"{exc}", snapshot_id=snap, resources=self._undo([resource])) from exc
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
                (s,) = self.ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"]
            except (ClientError, BotoCoreError) as exc:
                raise _error(f"cannot describe snapshot {snap}", exc, snapshot_id=snap) from exc
            if s["State"] == "error":
                raise TargetError(
                    f"EBS snapshot {snap} failed: {s.get('StateMessage', 'state error')}", snapshot_id=snap
                )
            return bool(s["State"] == "completed")

        self._wait(f"snapshot {snap} to complete", completed, self.poll.snapshot_timeout, snapshot_id=snap)

    def _list_blocks(self, snap: str, first: int, last: int) -> Iterator[tuple[int, str]]:
        """(index, token) of the snapshot's written blocks with ``first <= index <= last``."""
        args: dict[str, Any] = {"SnapshotId": snap, "StartingBlockIndex": first}
        while True:
            try:
                page = self.ebs.list_snapshot_blocks(**args)
            except (ClientError, BotoCoreError) as exc:
                raise _error(f"cannot list the blocks of snapshot {snap}", exc, snapshot_id=snap) from exc
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
            got = self.ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=index, BlockToken=token)
            data: bytes = got["BlockData"].read()
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"cannot read block {index} of snapshot {snap}", exc, snapshot_id=snap) from exc
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
            while len(self._cache) > self.cache_blocks:
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
            (described,) = self.ec2.describe_snapshots(SnapshotIds=[parent])["Snapshots"]
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"cannot describe snapshot {parent}", exc, snapshot_id=parent) from exc
        tags = {**_tags_of(described), TAG_PARENT: parent}
        size_gib = int(described.get("VolumeSize") or volume_size_gib(artifact.disk_size))
        args: dict[str, Any] = {
            "VolumeSize": size_gib,
            "ParentSnapshotId": parent,
            "Description": f"Lifeboat patch of {parent}"[:255],
            "Tags": _tag_list(tags),
            "ClientToken": str(uuid.uuid4()),
        }
        if self.kms_key_arn:
            args["Encrypted"], args["KmsKeyArn"] = True, self.kms_key_arn
        try:
            child = str(self.ebs.start_snapshot(**args)["SnapshotId"])
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"cannot start a child snapshot of {parent}", exc, snapshot_id=parent) from exc
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
                self.ebs.put_snapshot_block(
                    SnapshotId=child,
                    BlockIndex=i,
                    BlockData=block,
                    DataLength=len(block),
                    Checksum=sha256_b64(block),
                    ChecksumAlgorithm="SHA256",
                )
            self.ebs.complete_snapshot(SnapshotId=child, ChangedBlocksCount=len(blocks))
            self._wait_snapshot(child)
        except (ClientError, BotoCoreError, LifeboatError) as exc:
            raise TargetError(
                f"cannot write child snapshot {child} of {parent}: {exc}",
                snapshot_id=child,
                resources=self._undo([resource]),
            ) from exc
        return artifact.model_copy(
            update={"location": child, "resources": [*artifact.resources, resource]}, deep=True
        )

    # --- InstanceLauncher --------------------------------------------------------------------------
    def create_instance(self, spec: InstanceSpec, disks: list[DiskArtifact]) -> Instance:
        """Register an AMI over ``disks`` (boot disk first) and wait until it is available.

        The machine does not run yet: ``state`` is ``defined``, ``instance_id`` the AMI id,
        ``detail`` holds ``image_id``, ``instance_type`` (``spec.instance_type`` or the
        default), ``name`` and ``tags``.
        """
        if not disks:
            raise InvalidInputError("a machine needs at least one disk", machine_id=spec.machine_id)
        if len(disks) > len(DEVICE_NAMES):
            raise InvalidInputError(f"at most {len(DEVICE_NAMES)} disks", machine_id=spec.machine_id)
        for d in disks:
            if d.format != "ebs-snapshot":
                raise InvalidInputError(
                    f"disk {d.disk_id} is {d.format}, not an EBS snapshot", disk_id=d.disk_id
                )
        tags = machine_tags(spec)
        mappings = [
            {
                "DeviceName": dev,
                "Ebs": {
                    "SnapshotId": d.location,
                    "VolumeSize": volume_size_gib(d.disk_size),
                    "VolumeType": self.volume_type,
                    "DeleteOnTermination": True,
                },
            }
            for dev, d in zip(DEVICE_NAMES, disks, strict=False)
        ]
        try:
            image_id = str(
                self.ec2.register_image(
                    Name=_ami_name(spec),
                    Description=f"Lifeboat {spec.run_id} {spec.machine_id} ({spec.name})"[:255],
                    Architecture=self.architecture,
                    RootDeviceName=DEVICE_NAMES[0],
                    BlockDeviceMappings=mappings,
                    VirtualizationType="hvm",
                    EnaSupport=True,
                    BootMode="uefi" if spec.firmware is Firmware.EFI else self.boot_mode,
                    TagSpecifications=[_tag_spec("image", tags)],
                )["ImageId"]
            )
        except (ClientError, BotoCoreError) as exc:
            raise _error(
                f"cannot register an AMI for {spec.machine_id}", exc, machine_id=spec.machine_id
            ) from exc
        resource = Resource(type="ami", id=image_id, detail={"machine_id": spec.machine_id})
        try:
            # moto ignores TagSpecifications on RegisterImage; CreateTags is harmless on AWS.
            self.ec2.create_tags(Resources=[image_id], Tags=_tag_list(tags))
            self._wait(
                f"AMI {image_id} to become available",
                lambda: self._image_available(image_id),
                self.poll.timeout,
            )
        except (ClientError, BotoCoreError, LifeboatError) as exc:
            raise TargetError(
                f"AMI {image_id} did not become usable: {exc}",
                image_id=image_id,
                resources=self._undo([resource]),
            ) from exc
        return Instance(
            instance_id=image_id,
            machine_id=spec.machine_id,
            state="defined",
            resources=[resource],
            detail={
                "image_id": image_id,
                "instance_type": spec.instance_type or self.default_instance_type,
                "name": spec.name,
                "run_id": spec.run_id,
                "tags": tags,
                "snapshots": [d.location for d in disks],
            },
        )

    def _image_available(self, image_id: str) -> bool:
        (image,) = self.ec2.describe_images(ImageIds=[image_id])["Images"]
        if image["State"] in ("failed", "error", "invalid", "deregistered"):
            raise TargetError(
                f"AMI {image_id} is {image['State']}: {image.get('StateReason', {}).get('Message', '')}",
                image_id=image_id,
            )
        return bool(image["State"] == "available")

    def power_on(self, instance: Instance) -> Instance:
        """Launch the defined machine and wait until it is ``running``.

        ``RunInstances`` gets the AMI, the ENIs in device order, the instance type, tags for
        the instance and its volumes, IMDSv2 only, and a client token derived from AMI and
        ENIs (a retried call does not start a second instance). If the launch call fails
        nothing is left: a failed RunInstances creates nothing, and after a transport error
        any instance tagged with the token (``lifeboat:launch-token``) is terminated. If the instance does not reach
        ``running`` it is terminated and the error names it only if that failed.
        """
        if instance.state == "running":
            return instance
        image_id = instance.detail.get("image_id")
        enis = [r.id for r in instance.resources if r.type == "eni"]
        if not image_id:
            raise InvalidInputError(
                "the instance has no AMI (create_instance first)", machine_id=instance.machine_id
            )
        if not enis:
            raise InvalidInputError(
                "the instance has no network interface (attach_networks first)",
                machine_id=instance.machine_id,
            )
        tags: dict[str, str] = dict(instance.detail.get("tags") or {})
        instance_type = str(instance.detail.get("instance_type") or self.default_instance_type)
        launch: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "NetworkInterfaces": [
                {"DeviceIndex": i, "NetworkInterfaceId": eni, "DeleteOnTermination": False}
                for i, eni in enumerate(enis)
            ],
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        }
        for attempt in range(_LAUNCH_ATTEMPTS):
            # The same AMI, ENIs and type give the same token sequence, so a retried call gets
            # the instance an earlier (lost) answer made. EC2 replays a token's answer for at
            # least 24 h after its instance terminated: such a dead replay (or an
            # IdempotentInstanceTerminated error) moves on to the next token.
            seed = f"{image_id}|{instance_type}|{'|'.join(enis)}|{attempt}"
            token = hashlib.sha256(seed.encode()).hexdigest()[:64]
            launch["ClientToken"] = token
            launch["TagSpecifications"] = [
                _tag_spec("instance", {**tags, TAG_LAUNCH: token}),
                _tag_spec("volume", tags),
            ]
            try:
                reservation = self.ec2.run_instances(**launch)
            except (ClientError, BotoCoreError) as exc:
                if _code(exc) == "IdempotentInstanceTerminated" and attempt + 1 < _LAUNCH_ATTEMPTS:
                    continue
                if not isinstance(exc, ClientError):  # the call may have reached EC2
                    self._terminate_by_token(token)
                raise _error(
                    f"cannot launch {instance.machine_id} ({instance_type})",
                    exc,
                    machine_id=instance.machine_id,
                    instance_type=instance_type,
                ) from exc
            replayed = reservation["Instances"][0].get("State", {}).get("Name")
            if replayed not in ("shutting-down", "terminated") or attempt + 1 == _LAUNCH_ATTEMPTS:
                break
        ec2_id = str(reservation["Instances"][0]["InstanceId"])
        resource = Resource(
            type="ec2-instance", id=ec2_id, detail={"machine_id": instance.machine_id, "image_id": image_id}
        )
        try:
            self._wait(
                f"instance {ec2_id} to run",
                lambda: self._instance_state(ec2_id) == "running",
                self.poll.timeout,
            )
        except LifeboatError as exc:
            raise TargetError(f"{exc}", instance_id=ec2_id, resources=self._undo([resource])) from exc
        return instance.model_copy(
            update={
                "instance_id": ec2_id,
                "state": "running",
                "resources": [*instance.resources, resource],
                "detail": {**instance.detail, "ec2_instance_id": ec2_id, "client_token": token},
            },
            deep=True,
        )

    def _instance_state(self, ec2_id: str) -> str:
        try:
            reservations = self.ec2.describe_instances(InstanceIds=[ec2_id])["Reservations"]
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "InvalidInstanceID.NotFound":
                return "pending"  # eventual consistency right after RunInstances
            raise _error(f"cannot describe instance {ec2_id}", exc, instance_id=ec2_id) from exc
        state = str(reservations[0]["Instances"][0]["State"]["Name"])
        if state in ("terminated", "shutting-down", "stopped", "stopping"):
            raise TargetError(f"instance {ec2_id} is {state} instead of running", instance_id=ec2_id)
        return state

    def _terminate_by_token(self, token: str) -> None:
        try:
            found = self.ec2.describe_instances(
                Filters=[
                    {"Name": f"tag:{TAG_LAUNCH}", "Values": [token]},  # moto lacks the client-token filter
                    {"Name": "instance-state-name", "Values": _ALIVE},
                ]
            )["Reservations"]
            ids = [i["InstanceId"] for r in found for i in r["Instances"]]
            if ids:
                self.ec2.terminate_instances(InstanceIds=ids)
        except Exception:
            log.warning("cannot look for instances launched with token %s", token, exc_info=True)

    # --- NetworkMapper -----------------------------------------------------------------------------
    def attach_networks(self, instance: Instance, nics: list[NicSpec]) -> Instance:
        """One ENI per NIC (device index = position) in subnet ``nic.network``.

        ``nic.security_groups`` (ids) and ``nic.private_ip`` apply as given; an unknown or
        malformed subnet, group or address is an :class:`InvalidInputError`. If one ENI
        fails, those this call made are deleted before the error is raised.
        ``addresses`` are the ENIs' primary private IPs, in device order.
        """
        if instance.state != "defined":
            raise InvalidInputError(
                f"networks are attached before power-on (instance is {instance.state})",
                machine_id=instance.machine_id,
            )
        for nic in nics:
            if not nic.network.startswith("subnet-"):
                raise InvalidInputError(
                    f"AWS networks are subnet ids; got {nic.network!r} for {nic.source_network!r}",
                    network=nic.network,
                )
        tags: dict[str, str] = dict(instance.detail.get("tags") or {})
        already = sum(1 for r in instance.resources if r.type == "eni")
        created: list[Resource] = []
        addresses: list[str] = []
        for n, nic in enumerate(nics, start=already):
            args: dict[str, Any] = {
                "SubnetId": nic.network,
                "Description": f"Lifeboat {instance.machine_id} nic {n} ({nic.source_network})"[:255],
                "TagSpecifications": [
                    _tag_spec("network-interface", {**tags, "lifeboat:source-network": nic.source_network})
                ],
            }
            if nic.security_groups:
                args["Groups"] = nic.security_groups
            if nic.private_ip:
                args["PrivateIpAddress"] = nic.private_ip
            try:
                eni = self.ec2.create_network_interface(**args)["NetworkInterface"]
            except (ClientError, BotoCoreError) as exc:
                left = self._undo(created)
                err = _error(
                    f"cannot create NIC {n} of {instance.machine_id} in {nic.network}",
                    exc,
                    machine_id=instance.machine_id,
                    network=nic.network,
                    resources=left,
                )
                raise err from exc
            created.append(
                Resource(
                    type="eni",
                    id=eni["NetworkInterfaceId"],
                    detail={
                        "device_index": str(n),
                        "subnet_id": nic.network,
                        "source_network": nic.source_network,
                        "isolated": str(nic.isolated).lower(),
                    },
                )
            )
            addresses.append(str(eni.get("PrivateIpAddress", "")))
        return instance.model_copy(
            update={
                "resources": [*instance.resources, *created],
                "addresses": [*instance.addresses, *addresses],
            },
            deep=True,
        )

    # --- BootValidator -----------------------------------------------------------------------------
    def validate(self, instance: Instance, spec: ValidationSpec) -> Evidence:
        """Pass when EC2's instance and system status checks are both ``ok`` (and, with
        ``spec.marker``, the marker is in the decoded console output) within the timeout.

        Fails early if the instance is not running/pending. Under moto the checks are
        ``ok`` as soon as the instance runs and the console is a canned Xen boot log, so
        only the API flow is proven there, not a boot.
        """
        ec2_id = instance.instance_id
        method = "status-checks" + ("+console-marker" if spec.marker else "")
        start = self.poll.clock()
        if not ec2_id.startswith("i-"):
            return Evidence(
                ok=False, method=method, seconds=0.0, reason="the machine was never powered on",
                detail={"instance_id": ec2_id},
            )  # fmt: skip
        deadline = start + spec.timeout_seconds
        summary: dict[str, str] = {}
        console = ""
        marker_found = False
        while True:
            try:
                statuses = self.ec2.describe_instance_status(InstanceIds=[ec2_id], IncludeAllInstances=True)[
                    "InstanceStatuses"
                ]
            except (ClientError, BotoCoreError) as exc:
                raise _error(f"cannot read the status of {ec2_id}", exc, instance_id=ec2_id) from exc
            if statuses:
                s = statuses[0]
                summary = {
                    "state": str(s.get("InstanceState", {}).get("Name", "?")),
                    "instance_status": str(s.get("InstanceStatus", {}).get("Status", "?")),
                    "system_status": str(s.get("SystemStatus", {}).get("Status", "?")),
                }
            checks_ok = summary.get("instance_status") == "ok" and summary.get("system_status") == "ok"
            if spec.marker and not marker_found:
                console = self._console(ec2_id)
                marker_found = spec.marker in console
            ok = checks_ok and (marker_found or not spec.marker)
            dead = summary.get("state") not in (None, "pending", "running")
            now = self.poll.clock()
            if ok or dead or now >= deadline:
                break
            self.poll.sleep(min(self.poll.interval, max(0.0, deadline - now)))
        excerpt = " ".join(f"{k}={v}" for k, v in summary.items()) or "no status reported"
        if spec.marker:
            excerpt += "\n" + console[-2000:]
        reason = ""
        if not ok:
            if dead:
                reason = f"instance is {summary.get('state')}"
            elif not checks_ok:
                reason = f"status checks not ok after {spec.timeout_seconds} s"
            else:
                reason = f"marker {spec.marker!r} not on the console after {spec.timeout_seconds} s"
        return Evidence(
            ok=ok,
            method=method,
            seconds=max(0.0, self.poll.clock() - start),
            excerpt=excerpt,
            reason=reason,
            detail={**summary, "instance_id": ec2_id, "marker_found": marker_found},
        )

    def _console(self, ec2_id: str) -> str:
        try:
            try:
                out = self.ec2.get_console_output(InstanceId=ec2_id, Latest=True)
            except ClientError as exc:
                if _code(exc) not in ("UnsupportedOperation", "InvalidParameterValue", "InvalidParameter"):
                    raise
                out = self.ec2.get_console_output(InstanceId=ec2_id)  # not a Nitro instance
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"cannot read the console of {ec2_id}", exc, instance_id=ec2_id) from exc
        raw = out.get("Output") or ""
        try:
            return base64.b64decode(raw, validate=True).decode("utf-8", "replace")
        except ValueError:
            return str(raw)

    # --- Cleaner -----------------------------------------------------------------------------------
    def delete(self, resource: Resource) -> bool:
        """Delete one resource; ``False`` if it was already gone (or, for an instance, terminated).

        Instances are terminated and waited on until ``terminated``; ENIs, snapshots and
        volumes still in use are retried until :attr:`Poll.timeout`.
        """
        handlers: dict[str, Callable[[str], bool]] = {
            "ec2-instance": self._delete_instance,
            "eni": lambda i: self._delete_retrying(
                i, "network interface", self.ec2.delete_network_interface, "NetworkInterfaceId"
            ),
            "ami": self._delete_image,
            "ebs-snapshot": lambda i: self._delete_retrying(
                i, "snapshot", self.ec2.delete_snapshot, "SnapshotId"
            ),
            "ebs-volume": lambda i: self._delete_retrying(i, "volume", self.ec2.delete_volume, "VolumeId"),
        }
        handler = handlers.get(resource.type)
        if handler is None:
            raise InvalidInputError(
                f"the AWS target cannot delete a {resource.type!r}", resource_type=resource.type
            )
        return handler(resource.id)

    def _undo(self, created: list[Resource]) -> list[dict[str, Any]]:
        """Delete what a failing call created (newest first); the ones left, as dicts for an error."""
        return [r.model_dump() for r in reversed(created) if not self._delete_quietly(r)]

    def _delete_quietly(self, resource: Resource) -> bool:
        """Best-effort delete on a failure path: True if it is gone."""
        try:
            self.delete(resource)
            return True
        except Exception:
            log.warning("cannot delete %s %s", resource.type, resource.id, exc_info=True)
            return False

    def _delete_instance(self, ec2_id: str) -> bool:
        def state() -> str | None:
            try:
                r = self.ec2.describe_instances(InstanceIds=[ec2_id])["Reservations"]
            except (ClientError, BotoCoreError) as exc:
                if _code(exc) == "InvalidInstanceID.NotFound":
                    return None
                raise _error(f"cannot describe instance {ec2_id}", exc, instance_id=ec2_id) from exc
            return str(r[0]["Instances"][0]["State"]["Name"]) if r and r[0]["Instances"] else None

        before = state()
        if before in (None, "terminated"):
            return False
        try:
            self.ec2.terminate_instances(InstanceIds=[ec2_id])
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == "InvalidInstanceID.NotFound":
                return False
            raise _error(f"cannot terminate instance {ec2_id}", exc, instance_id=ec2_id) from exc
        self._wait(
            f"instance {ec2_id} to terminate",
            lambda: state() in (None, "terminated"),
            self.poll.timeout,
            instance_id=ec2_id,
        )
        return True

    def _delete_image(self, image_id: str) -> bool:
        try:
            self.ec2.deregister_image(ImageId=image_id)
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) in _NOT_FOUND:
                return False
            raise _error(f"cannot deregister AMI {image_id}", exc, image_id=image_id) from exc
        return True

    def _delete_retrying(self, rid: str, what: str, call: Callable[..., Any], param: str) -> bool:
        result: list[bool] = []

        def attempt() -> bool:
            try:
                call(**{param: rid})
            except (ClientError, BotoCoreError) as exc:
                code = _code(exc)
                if code in _NOT_FOUND:
                    result.append(False)
                    return True
                if code in _IN_USE:
                    log.info("%s %s still in use; retrying", what, rid)
                    return False
                raise _error(f"cannot delete {what} {rid}", exc, resource_id=rid) from exc
            result.append(True)
            return True

        self._wait(f"{what} {rid} to be deletable", attempt, self.poll.timeout, resource_id=rid)
        return result[-1]

    # --- finding leftovers -------------------------------------------------------------------------
    def find_tagged(self, run_id: str) -> list[Resource]:
        """Everything still alive tagged ``lifeboat:run=<run_id>``.

        Snapshots, AMIs, volumes, ENIs, then instances not yet ``terminated``; deleting the
        list in reverse order is a safe cleanup order.
        """
        flt = [{"Name": f"tag:{TAG_RUN}", "Values": [run_id]}]
        out: list[Resource] = []
        try:
            for page in self.ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"], Filters=flt):
                out += [Resource(type="ebs-snapshot", id=s["SnapshotId"]) for s in page["Snapshots"]]
            for page in self.ec2.get_paginator("describe_images").paginate(Owners=["self"], Filters=flt):
                out += [Resource(type="ami", id=i["ImageId"]) for i in page["Images"]]
            for page in self.ec2.get_paginator("describe_volumes").paginate(Filters=flt):
                out += [Resource(type="ebs-volume", id=v["VolumeId"]) for v in page["Volumes"]]
            for page in self.ec2.get_paginator("describe_network_interfaces").paginate(Filters=flt):
                out += [Resource(type="eni", id=n["NetworkInterfaceId"]) for n in page["NetworkInterfaces"]]
            alive = [*flt, {"Name": "instance-state-name", "Values": _ALIVE}]
            for page in self.ec2.get_paginator("describe_instances").paginate(Filters=alive):
                out += [
                    Resource(type="ec2-instance", id=i["InstanceId"])
                    for r in page["Reservations"]
                    for i in r["Instances"]
                ]
        except (ClientError, BotoCoreError) as exc:
            raise _error(f"cannot list the resources of run {run_id}", exc, run_id=run_id) from exc
        return out


def aws_target(
    session_or_region: Any,
    *,
    kms_key_arn: str | None = None,
    threads: int = 8,
    architecture: str = "x86_64",
    default_instance_type: str = "t3.small",
    poll: Poll | None = None,
    boot_mode: str | None = None,
    max_attempts: int = 10,
) -> Target:
    """The AWS :class:`Target` from a boto3 ``Session`` or a region name.

    The clients retry in botocore's ``standard`` mode (``max_attempts``) and pool enough
    connections for ``threads`` concurrent block writes.
    """
    import boto3
    from botocore.config import Config

    session = (
        boto3.session.Session(region_name=session_or_region)
        if isinstance(session_or_region, str)
        else session_or_region
    )
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max(10, 2 * threads + 2),
    )
    target = AwsTarget(
        session.client("ec2", config=config),
        session.client("ebs", config=config),
        kms_key_arn=kms_key_arn,
        threads=threads,
        architecture=architecture,
        default_instance_type=default_instance_type,
        poll=poll,
        boot_mode=boot_mode,
    )
    return Target(kind=KIND, disks=target, launcher=target, networks=target, validator=target, cleaner=target)
