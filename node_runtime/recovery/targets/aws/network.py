"""AWS networks: one ENI per :class:`NicSpec`, in order (device index = position), in the
subnet named by ``NicSpec.network``. Resource ``eni`` each; ``power_on`` launches with them.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from node_runtime.recovery.targets.aws.common import AwsContext, aws_error, tag_spec, undo
from node_runtime.recovery.targets.base import Cleaner, Instance, NicSpec, Resource
from shared.errors import InvalidInputError


class AwsNetworks:
    """The :class:`~node_runtime.recovery.targets.base.NetworkMapper` on AWS: ENIs in subnets."""

    def __init__(self, context: AwsContext, cleaner: Cleaner) -> None:
        self.context = context
        self.cleaner = cleaner

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
                    tag_spec("network-interface", {**tags, "lifeboat:source-network": nic.source_network})
                ],
            }
            if nic.security_groups:
                args["Groups"] = nic.security_groups
            if nic.private_ip:
                args["PrivateIpAddress"] = nic.private_ip
            try:
                eni = self.context.ec2.create_network_interface(**args)["NetworkInterface"]
            except (ClientError, BotoCoreError) as exc:
                left = undo(self.cleaner, created)
                err = aws_error(
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
