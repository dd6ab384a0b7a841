"""Networks on Azure (NetworkMapper): one NIC per mapped network, test NICs kept isolated.

A NIC goes into the subnet ``nic.network`` (an ARM subnet id) with at most one NSG (an
Azure NIC has one) and the static ``private_ip`` if given; no public IP, ever.

A test recovery never reaches production:

* a NIC the plan maps to a test network (``isolated``) goes there; when the target was
  given ``isolated_subnets``, only to one of those;
* a test NIC without a mapped test network (``isolate_on_target``) goes into a virtual
  network of the run's own, ``lb-test-<run>-<subnet>``: one subnet with the production
  subnet's prefix (so a static address is kept), no peering, no gateway, so it has no
  route anywhere. Machines of the run on the same production subnet share it and reach
  each other; different production subnets get different, unconnected test networks
  (map test networks in the plan to test a multi-subnet application as one). The network
  is listed in every machine's resources; the cleaner deletes it with the last NIC in it.

Every NIC is tagged ``lifeboat:source-network`` and, for tests, ``lifeboat:isolated=true``.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from node_runtime.recovery.targets.azure.compute import NIC, VNET
from node_runtime.recovery.targets.azure.context import AzureContext, arm_name, merge, short_hash
from node_runtime.recovery.targets.base import Instance, NicSpec, Resource
from shared.errors import InvalidInputError, TargetError

_SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+$",
    re.I,
)
_NSG_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/networkSecurityGroups/[^/]+$",
    re.I,
)
_IPV4 = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")


class AzureNetworks:
    def __init__(self, ctx: AzureContext) -> None:
        self.ctx = ctx

    def attach_networks(self, instance: Instance, nics: list[NicSpec]) -> Instance:
        """One NIC per spec, in order (the first becomes the VM's primary NIC)."""
        for nic in nics:
            check_nic(nic, self.ctx.isolated_subnets)
        ctx, d = self.ctx, instance.detail
        nic_ids = list(d.get("nic_ids", []))
        addresses = list(instance.addresses)
        timings = dict(d.get("timings", {}))
        created: list[Resource] = []
        for nic in nics:
            started = ctx.clock()
            subnet_id = nic.network
            if nic.isolate_on_target:
                subnet_id = self._test_subnet(d["tags"], nic.network, created)
            name = arm_name([d["base_name"], f"nic{len(nic_ids)}"], 80)
            resource = Resource(
                type="azure-nic",
                id=ctx.compute.resource_id(NIC, ctx.resource_group, name),
                detail={"name": name, "subnet": subnet_id, "source_network": nic.source_network},
            )
            created.append(resource)
            tags = {**d["tags"], "lifeboat:source-network": nic.source_network[:256]}
            if nic.isolated:
                tags["lifeboat:isolated"] = "true"
            try:
                info = ctx.compute.create_nic(
                    ctx.resource_group, name, location=ctx.location, subnet_id=subnet_id,
                    nsg_id=nic.security_groups[0] if nic.security_groups else None,
                    private_ip=nic.private_ip, tags=tags,
                )  # fmt: skip
            except Exception as exc:
                ctx.fail(f"cannot create NIC {name} in {subnet_id}", exc, created)
            resource.detail["private_ip"] = info.private_ip
            nic_ids.append(info.id)
            addresses.append(info.private_ip)
            timings[f"nic_{len(nic_ids) - 1}"] = round(ctx.clock() - started, 3)
        return instance.model_copy(update={
            "resources": merge(instance.resources, *created), "addresses": addresses,
            "detail": {**d, "nic_ids": nic_ids, "timings": timings},
        })  # fmt: skip

    def _test_subnet(self, tags: dict[str, str], production_subnet: str, created: list[Resource]) -> str:
        """The run's isolated copy of ``production_subnet`` (created on first use); its subnet id."""
        ctx = self.ctx
        try:
            source = ctx.compute.get_subnet(production_subnet)
        except Exception as exc:
            ctx.fail(f"cannot read subnet {production_subnet} to isolate a test NIC", exc, created)
        run = tags["lifeboat:run"]
        name = arm_name(["lb-test", run[:24], short_hash(run, production_subnet.lower())], 64)
        subnet_name = arm_name([production_subnet.rsplit("/", 1)[1]], 80)
        resource = Resource(
            type="azure-vnet",
            id=ctx.compute.resource_id(VNET, ctx.resource_group, name),
            detail={"name": name, "mirrors": production_subnet, "prefix": source.address_prefix},
        )
        created.append(resource)
        vnet_tags = {k: v for k, v in tags.items() if k != "lifeboat:machine"}  # shared by the run's machines
        vnet_tags.update({"lifeboat:isolated": "true", "lifeboat:mirrors": production_subnet[-256:]})
        try:
            subnets = ctx.compute.create_vnet(
                ctx.resource_group, name, location=ctx.location,
                subnets={subnet_name: source.address_prefix}, tags=vnet_tags,
            )  # fmt: skip
        except Exception as exc:
            ctx.fail(f"cannot create the isolated test network {name}", exc, created)
        if subnet_name not in subnets:
            raise TargetError(
                f"test network {name} has no subnet {subnet_name}", resources=[resource.model_dump()]
            )
        return subnets[subnet_name]


def check_nic(nic: NicSpec, isolated_subnets: Collection[str]) -> None:
    """Refuse a NIC ARM would refuse, or a test NIC that could reach production.

    ``isolated_subnets``: lower-cased subnet ids a mapped test network must be one of (none: any)."""
    if not _SUBNET_ID.match(nic.network):
        raise InvalidInputError(f"{nic.network!r} is not an Azure subnet id", network=nic.network)
    if len(nic.security_groups) > 1:
        raise InvalidInputError(
            f"an Azure NIC takes one network security group, not {len(nic.security_groups)}",
            network=nic.network,
        )
    for nsg in nic.security_groups:
        if not _NSG_ID.match(nsg):
            raise InvalidInputError(f"{nsg!r} is not a network security group id", nsg=nsg)
    if nic.private_ip is not None and not _IPV4.match(nic.private_ip):
        raise InvalidInputError(f"{nic.private_ip!r} is not an IPv4 address", private_ip=nic.private_ip)
    if (
        nic.isolated
        and not nic.isolate_on_target
        and isolated_subnets
        and nic.network.lower() not in isolated_subnets
    ):
        raise InvalidInputError(
            f"a test recovery's NIC may only go to a subnet declared isolated; {nic.network} is not",
            network=nic.network,
        )
