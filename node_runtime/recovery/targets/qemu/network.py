"""QEMU networks: user-mode (SLIRP) NICs, e1000, with deterministic MACs.

Isolated (test) networks get ``restrict=on`` (no route to the host or outside). The
plan's network name is *recorded* (``vm.json``, ``Instance.detail``), not joined: bridges
and taps need privileges this target does not assume, so every NIC is its own NAT
network. ``private_ip`` becomes the first (only) DHCP lease of that NIC's network;
security groups are recorded and have no effect. Nothing is created (no resource).
"""

from __future__ import annotations

import hashlib
import ipaddress

from node_runtime.recovery.targets.base import Instance, NicSpec
from node_runtime.recovery.targets.qemu.common import QemuContext
from shared.errors import InvalidInputError


def _mac(instance_id: str, index: int) -> str:
    """A stable, locally administered MAC in QEMU's 52:54:00 range."""
    digest = hashlib.sha256(f"{instance_id}/nic{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def _user_net(private_ip: str | None) -> dict[str, str]:
    """SLIRP options giving the guest ``private_ip`` as its (first) DHCP lease, in a /24."""
    if private_ip is None:
        return {}
    try:
        ip = ipaddress.IPv4Address(private_ip)
    except ValueError as exc:
        raise InvalidInputError(
            f"private_ip {private_ip!r} is not an IPv4 address", private_ip=private_ip
        ) from exc
    net = ipaddress.IPv4Network(f"{ip}/24", strict=False)
    if ip in (net.network_address, net.broadcast_address):
        raise InvalidInputError(f"private_ip {ip} is not a host address of {net}", private_ip=private_ip)
    host, dns = [a for a in net.hosts() if a != ip][:2]  # SLIRP's gateway and DNS, never the guest's
    return {"net": str(net), "host": str(host), "dns": str(dns), "dhcpstart": str(ip)}


class QemuNetworks:
    """The :class:`~node_runtime.recovery.targets.base.NetworkMapper` of the QEMU target."""

    def __init__(self, context: QemuContext) -> None:
        self.context = context

    def attach_networks(self, instance: Instance, nics: list[NicSpec]) -> Instance:
        """Define the machine's NICs (replacing any earlier ones); only before ``power_on``."""
        ctx = self.context
        vm_dir = ctx.vm_dir(instance)
        if instance.state == "running":
            raise InvalidInputError(
                f"{instance.instance_id} is running: attach networks before power_on (no hot-plug)",
                instance_id=instance.instance_id,
            )
        vm = ctx.load_vm(vm_dir)
        defined = []
        for i, nic in enumerate(nics):
            defined.append(
                {
                    "model": "e1000",  # every guest OS has a driver for it
                    "mac": _mac(instance.instance_id, i),
                    "network": nic.network,
                    "source_network": nic.source_network,
                    "restrict": nic.isolated,
                    "private_ip": nic.private_ip,
                    "security_groups": list(nic.security_groups),
                    "user_net": _user_net(nic.private_ip),
                }
            )
        vm["nics"] = defined
        ctx.save_vm(vm_dir, vm)
        return instance.model_copy(
            update={
                "addresses": [n.private_ip or "dhcp" for n in nics],
                "detail": {
                    **instance.detail,
                    "nics": [
                        {"network": n["network"], "mac": n["mac"], "isolated": n["restrict"], "mode": "user"}
                        for n in defined
                    ],
                },
            }
        )
