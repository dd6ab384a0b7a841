"""What the AWS capabilities share: the clients and settings, waits, tags and error mapping.

Errors: botocore errors become :class:`~shared.errors.TargetError` with the cause
chained; requests EC2 rejects as malformed or naming things that do not exist (a subnet,
a security group, an instance type) become :class:`~shared.errors.InvalidInputError`.
Retries and throttling belong to the clients' botocore ``Config`` (``aws_target`` sets
``standard`` retries); waits here are bounded by :class:`Poll`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from node_runtime.recovery.targets.base import Cleaner, InstanceSpec, Resource
from shared.errors import InvalidInputError, LifeboatError, TargetError

log = logging.getLogger(__name__)

KIND = "aws"
TAG_RUN = "lifeboat:run"
TAG_MACHINE = "lifeboat:machine"
TAG_DISK = "lifeboat:disk"
TAG_POINT = "lifeboat:point"
TAG_PARENT = "lifeboat:parent-snapshot"
TAG_LAUNCH = "lifeboat:launch-token"

# "Not found" codes: deleting something already gone answers False.
NOT_FOUND = {
    "InvalidInstanceID.NotFound",
    "InvalidNetworkInterfaceID.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Unavailable",
    "InvalidSnapshot.NotFound",
    "InvalidVolume.NotFound",
    "ResourceNotFoundException",
}
# The request itself is wrong: what it names does not exist or is malformed.
INVALID = {
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
IN_USE = {
    "InvalidNetworkInterface.InUse",
    "InvalidSnapshot.InUse",
    "VolumeInUse",
    "InvalidVolume.InUse",
    "DependencyViolation",
}
#: Instance states that still hold (or may yet hold) resources.
ALIVE = ["pending", "running", "stopping", "stopped", "shutting-down"]


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


class AwsContext:
    """The clients and settings of one AWS target, shared by its capabilities.

    ``ec2`` and ``ebs`` are boto3 clients of one region. ``kms_key_arn`` encrypts new
    snapshots (and so the AMI's volumes). ``threads`` concurrent PutSnapshotBlock calls
    per disk (the EBS client needs ``max_pool_connections >= 2 x threads``).
    ``boot_mode`` defaults to ``uefi`` for arm64 and ``legacy-bios`` otherwise; it must
    match how the source disk boots.
    """

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

    def wait(self, what: str, check: Callable[[], bool], timeout: float, **fields: object) -> None:
        """Call ``check`` until it answers True; TargetError after ``timeout`` seconds."""
        deadline = self.poll.clock() + timeout
        while not check():
            if self.poll.clock() >= deadline:
                raise TargetError(f"timed out after {timeout:g} s waiting for {what}", **fields)
            self.poll.sleep(self.poll.interval)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore error ("" for a transport error)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def aws_error(what: str, exc: BaseException, **fields: object) -> LifeboatError:
    """Our error for a botocore failure of ``what`` (chain it with ``raise ... from exc``)."""
    code = error_code(exc)
    cls = InvalidInputError if code in INVALID else TargetError
    return cls(f"{what}: {exc}", code=code, **fields)


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_spec(resource_type: str, tags: dict[str, str]) -> dict[str, Any]:
    return {"ResourceType": resource_type, "Tags": tag_list(tags)}


def tags_of(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


def machine_tags(spec: InstanceSpec) -> dict[str, str]:
    """The tags of everything made for ``spec``: its own tags, then the run and machine ids."""
    tags = {"Name": spec.name, **spec.tags}
    tags[TAG_RUN] = spec.run_id
    tags[TAG_MACHINE] = spec.machine_id
    return tags


def undo(cleaner: Cleaner, created: list[Resource]) -> list[dict[str, Any]]:
    """Delete what a failing call created (newest first); the ones left, as dicts for an error."""
    return [r.model_dump() for r in reversed(created) if not _delete_quietly(cleaner, r)]


def _delete_quietly(cleaner: Cleaner, resource: Resource) -> bool:
    """Best-effort delete on a failure path: True if it is gone."""
    try:
        cleaner.delete(resource)
        return True
    except Exception:
        log.warning("cannot delete %s %s", resource.type, resource.id, exc_info=True)
        return False
