"""Launching on AWS: an AMI over the snapshots, then an EC2 instance from it.

* ``create_instance``: an AMI registered over the snapshots (boot disk ``/dev/xvda``,
  then ``/dev/xvdb``...; HVM, ENA, boot mode), waited on until ``available``. Resource
  ``ami``. Nothing runs yet: the :class:`Instance` is ``defined`` and its ``instance_id``
  is the AMI id until ``power_on``.
* ``power_on``: ``RunInstances`` from the AMI with the ENIs ``attach_networks`` made,
  IMDSv2 only, tags on the instance and its volumes; waited on until ``running``.
  Resource ``ec2-instance``; from here ``instance_id`` is the EC2 instance id. The
  root/data volumes are created by EC2 with ``DeleteOnTermination`` (set in the AMI's
  mappings) and go with the instance; they are tagged, so
  :meth:`~node_runtime.recovery.targets.aws.cleanup.AwsCleaner.find_tagged` shows any
  that were left.

Under moto 5, ``RegisterImage`` ignores everything but Name/Description (no block device
mappings, architecture, boot mode, ENA or tags: the AMI gets moto defaults and an
auto-created snapshot of its own), hence the extra ``CreateTags`` here; instances are
``running`` at once.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from node_runtime.recovery.ebs_direct import volume_size_gib
from node_runtime.recovery.targets.aws.common import (
    ALIVE,
    TAG_LAUNCH,
    AwsContext,
    aws_error,
    error_code,
    machine_tags,
    tag_list,
    tag_spec,
    undo,
)
from node_runtime.recovery.targets.base import Cleaner, DiskArtifact, Instance, InstanceSpec, Resource
from shared.domain.hardware import Firmware
from shared.errors import InvalidInputError, LifeboatError, TargetError

log = logging.getLogger(__name__)

#: Device names of the AMI's disks, boot disk first.
DEVICE_NAMES = ["/dev/xvda", *(f"/dev/xvd{c}" for c in "bcdefghijklmnopqrstuvwxyz")]

_LAUNCH_ATTEMPTS = 8


def _ami_name(spec: InstanceSpec) -> str:
    raw = f"lifeboat-{spec.run_id}-{spec.machine_id}-{uuid.uuid4().hex[:8]}"
    return re.sub(r"[^A-Za-z0-9()\[\] ./'@_-]", "_", raw)[:128]


class AwsLauncher:
    """The :class:`~node_runtime.recovery.targets.base.InstanceLauncher` on AWS: AMI, then EC2."""

    def __init__(self, context: AwsContext, cleaner: Cleaner) -> None:
        self.context = context
        self.cleaner = cleaner

    def create_instance(self, spec: InstanceSpec, disks: list[DiskArtifact]) -> Instance:
        """Register an AMI over ``disks`` (boot disk first) and wait until it is available.

        The machine does not run yet: ``state`` is ``defined``, ``instance_id`` the AMI id,
        ``detail`` holds ``image_id``, ``instance_type`` (``spec.instance_type`` or the
        default), ``name`` and ``tags``.
        """
        ctx = self.context
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
                    "VolumeType": ctx.volume_type,
                    "DeleteOnTermination": True,
                },
            }
            for dev, d in zip(DEVICE_NAMES, disks, strict=False)
        ]
        try:
            image_id = str(
                ctx.ec2.register_image(
                    Name=_ami_name(spec),
                    Description=f"Lifeboat {spec.run_id} {spec.machine_id} ({spec.name})"[:255],
                    Architecture=ctx.architecture,
                    RootDeviceName=DEVICE_NAMES[0],
                    BlockDeviceMappings=mappings,
                    VirtualizationType="hvm",
                    EnaSupport=True,
                    BootMode="uefi" if spec.firmware is Firmware.EFI else ctx.boot_mode,
                    TagSpecifications=[tag_spec("image", tags)],
                )["ImageId"]
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(
                f"cannot register an AMI for {spec.machine_id}", exc, machine_id=spec.machine_id
            ) from exc
        resource = Resource(type="ami", id=image_id, detail={"machine_id": spec.machine_id})
        try:
            # moto ignores TagSpecifications on RegisterImage; CreateTags is harmless on AWS.
            ctx.ec2.create_tags(Resources=[image_id], Tags=tag_list(tags))
            ctx.wait(
                f"AMI {image_id} to become available",
                lambda: self._image_available(image_id),
                ctx.poll.timeout,
            )
        except (ClientError, BotoCoreError, LifeboatError) as exc:
            raise TargetError(
                f"AMI {image_id} did not become usable: {exc}",
                image_id=image_id,
                resources=undo(self.cleaner, [resource]),
            ) from exc
        return Instance(
            instance_id=image_id,
            machine_id=spec.machine_id,
            state="defined",
            resources=[resource],
            detail={
                "image_id": image_id,
                "instance_type": spec.instance_type or ctx.default_instance_type,
                "name": spec.name,
                "run_id": spec.run_id,
                "tags": tags,
                "snapshots": [d.location for d in disks],
            },
        )

    def _image_available(self, image_id: str) -> bool:
        (image,) = self.context.ec2.describe_images(ImageIds=[image_id])["Images"]
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
        ctx = self.context
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
        instance_type = str(instance.detail.get("instance_type") or ctx.default_instance_type)
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
                tag_spec("instance", {**tags, TAG_LAUNCH: token}),
                tag_spec("volume", tags),
            ]
            try:
                reservation = ctx.ec2.run_instances(**launch)
            except (ClientError, BotoCoreError) as exc:
                if error_code(exc) == "IdempotentInstanceTerminated" and attempt + 1 < _LAUNCH_ATTEMPTS:
                    continue
                if not isinstance(exc, ClientError):  # the call may have reached EC2
                    self._terminate_by_token(token)
                raise aws_error(
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
            ctx.wait(
                f"instance {ec2_id} to run",
                lambda: self._instance_state(ec2_id) == "running",
                ctx.poll.timeout,
            )
        except LifeboatError as exc:
            raise TargetError(f"{exc}", instance_id=ec2_id, resources=undo(self.cleaner, [resource])) from exc
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
            reservations = self.context.ec2.describe_instances(InstanceIds=[ec2_id])["Reservations"]
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) == "InvalidInstanceID.NotFound":
                return "pending"  # eventual consistency right after RunInstances
            raise aws_error(f"cannot describe instance {ec2_id}", exc, instance_id=ec2_id) from exc
        state = str(reservations[0]["Instances"][0]["State"]["Name"])
        if state in ("terminated", "shutting-down", "stopped", "stopping"):
            raise TargetError(f"instance {ec2_id} is {state} instead of running", instance_id=ec2_id)
        return state

    def _terminate_by_token(self, token: str) -> None:
        ec2 = self.context.ec2
        try:
            found = ec2.describe_instances(
                Filters=[
                    {"Name": f"tag:{TAG_LAUNCH}", "Values": [token]},  # moto lacks the client-token filter
                    {"Name": "instance-state-name", "Values": ALIVE},
                ]
            )["Reservations"]
            ids = [i["InstanceId"] for r in found for i in r["Instances"]]
            if ids:
                ec2.terminate_instances(InstanceIds=ids)
        except Exception:
            log.warning("cannot look for instances launched with token %s", token, exc_info=True)
