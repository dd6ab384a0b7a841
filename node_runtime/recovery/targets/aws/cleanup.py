"""AWS cleanup: deleting one resource, and finding what a run left (by its tags).

Cleanup runs in reverse creation order: terminate the instance and wait for
``terminated``, delete the ENIs (retrying while EC2 still has them ``in-use``), deregister
the AMI, delete the snapshots. "Not found" (and an instance already ``terminated``)
answers ``False``.

Under moto 5, terminated instances keep their ENIs ``in-use``, and
``DeleteNetworkInterface`` never refuses an in-use ENI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from node_runtime.recovery.targets.aws.common import (
    ALIVE,
    IN_USE,
    NOT_FOUND,
    TAG_RUN,
    AwsContext,
    aws_error,
    error_code,
)
from node_runtime.recovery.targets.base import Resource
from shared.errors import InvalidInputError

log = logging.getLogger(__name__)


class AwsCleaner:
    """The :class:`~node_runtime.recovery.targets.base.Cleaner` on AWS, and :meth:`find_tagged`."""

    def __init__(self, context: AwsContext) -> None:
        self.context = context

    def delete(self, resource: Resource) -> bool:
        """Delete one resource; ``False`` if it was already gone (or, for an instance, terminated).

        Instances are terminated and waited on until ``terminated``; ENIs, snapshots and
        volumes still in use are retried until :attr:`Poll.timeout`.
        """
        ec2 = self.context.ec2
        handlers: dict[str, Callable[[str], bool]] = {
            "ec2-instance": self._delete_instance,
            "eni": lambda i: self._delete_retrying(
                i, "network interface", ec2.delete_network_interface, "NetworkInterfaceId"
            ),
            "ami": self._delete_image,
            "ebs-snapshot": lambda i: self._delete_retrying(i, "snapshot", ec2.delete_snapshot, "SnapshotId"),
            "ebs-volume": lambda i: self._delete_retrying(i, "volume", ec2.delete_volume, "VolumeId"),
        }
        handler = handlers.get(resource.type)
        if handler is None:
            raise InvalidInputError(
                f"the AWS target cannot delete a {resource.type!r}", resource_type=resource.type
            )
        return handler(resource.id)

    def _delete_instance(self, ec2_id: str) -> bool:
        ctx = self.context

        def state() -> str | None:
            try:
                r = ctx.ec2.describe_instances(InstanceIds=[ec2_id])["Reservations"]
            except (ClientError, BotoCoreError) as exc:
                if error_code(exc) == "InvalidInstanceID.NotFound":
                    return None
                raise aws_error(f"cannot describe instance {ec2_id}", exc, instance_id=ec2_id) from exc
            return str(r[0]["Instances"][0]["State"]["Name"]) if r and r[0]["Instances"] else None

        before = state()
        if before in (None, "terminated"):
            return False
        try:
            ctx.ec2.terminate_instances(InstanceIds=[ec2_id])
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) == "InvalidInstanceID.NotFound":
                return False
            raise aws_error(f"cannot terminate instance {ec2_id}", exc, instance_id=ec2_id) from exc
        ctx.wait(
            f"instance {ec2_id} to terminate",
            lambda: state() in (None, "terminated"),
            ctx.poll.timeout,
            instance_id=ec2_id,
        )
        return True

    def _delete_image(self, image_id: str) -> bool:
        try:
            self.context.ec2.deregister_image(ImageId=image_id)
        except (ClientError, BotoCoreError) as exc:
            if error_code(exc) in NOT_FOUND:
                return False
            raise aws_error(f"cannot deregister AMI {image_id}", exc, image_id=image_id) from exc
        return True

    def _delete_retrying(self, rid: str, what: str, call: Callable[..., Any], param: str) -> bool:
        result: list[bool] = []

        def attempt() -> bool:
            try:
                call(**{param: rid})
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                if code in NOT_FOUND:
                    result.append(False)
                    return True
                if code in IN_USE:
                    log.info("%s %s still in use; retrying", what, rid)
                    return False
                raise aws_error(f"cannot delete {what} {rid}", exc, resource_id=rid) from exc
            result.append(True)
            return True

        self.context.wait(
            f"{what} {rid} to be deletable", attempt, self.context.poll.timeout, resource_id=rid
        )
        return result[-1]

    def find_tagged(self, run_id: str) -> list[Resource]:
        """Everything still alive tagged ``lifeboat:run=<run_id>``.

        Snapshots, AMIs, volumes, ENIs, then instances not yet ``terminated``; deleting the
        list in reverse order is a safe cleanup order.
        """
        ec2 = self.context.ec2
        flt = [{"Name": f"tag:{TAG_RUN}", "Values": [run_id]}]
        out: list[Resource] = []
        try:
            for page in ec2.get_paginator("describe_snapshots").paginate(OwnerIds=["self"], Filters=flt):
                out += [Resource(type="ebs-snapshot", id=s["SnapshotId"]) for s in page["Snapshots"]]
            for page in ec2.get_paginator("describe_images").paginate(Owners=["self"], Filters=flt):
                out += [Resource(type="ami", id=i["ImageId"]) for i in page["Images"]]
            for page in ec2.get_paginator("describe_volumes").paginate(Filters=flt):
                out += [Resource(type="ebs-volume", id=v["VolumeId"]) for v in page["Volumes"]]
            for page in ec2.get_paginator("describe_network_interfaces").paginate(Filters=flt):
                out += [Resource(type="eni", id=n["NetworkInterfaceId"]) for n in page["NetworkInterfaces"]]
            alive = [*flt, {"Name": "instance-state-name", "Values": ALIVE}]
            for page in ec2.get_paginator("describe_instances").paginate(Filters=alive):
                out += [
                    Resource(type="ec2-instance", id=i["InstanceId"])
                    for r in page["Reservations"]
                    for i in r["Instances"]
                ]
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(f"cannot list the resources of run {run_id}", exc, run_id=run_id) from exc
        return out
