"""Checks before an Azure recovery creates anything (Preflight): VM sizes, subnets, isolation.

Every machine's VM size must be offered in the target location and hold its data disks;
every subnet a NIC maps to must exist in that location; test NICs must stay isolated
(:func:`~node_runtime.recovery.targets.azure.network.check_nic`). All problems are
reported at once. A node whose identity may not list the location's VM sizes (that
permission exists only at subscription scope) gets a note instead: ARM then checks the
size when the VM is created.
"""

from __future__ import annotations

from node_runtime.recovery.targets.azure.context import VM_SIZE, AzureContext, fields_of
from node_runtime.recovery.targets.azure.network import check_nic
from node_runtime.recovery.targets.base import MachineCheck
from shared.errors import InvalidInputError, TargetError


class AzurePreflight:
    def __init__(self, ctx: AzureContext) -> None:
        self.ctx = ctx

    def check(self, machines: list[MachineCheck]) -> list[str]:
        ctx = self.ctx
        problems: list[str] = []
        notes: list[str] = []
        sizes = None
        try:
            sizes = {s.name.lower(): s for s in ctx.compute.vm_sizes(ctx.location)}
        except TargetError as exc:
            if fields_of(exc).get("status") != 403:
                raise
            notes.append(f"VM sizes not checked before creating anything (cannot list them: {exc})")
        subnets: dict[str, str | None] = {}
        for m in machines:
            size = m.instance_type or ctx.default_vm_size
            if not VM_SIZE.match(size):
                problems.append(f"{m.machine_id}: {size!r} is not an Azure VM size")
            elif sizes is not None and size.lower() not in sizes:
                problems.append(f"{m.machine_id}: VM size {size} is not offered in {ctx.location}")
            elif sizes is not None and m.disks - 1 > sizes[size.lower()].max_data_disks:
                problems.append(f"{m.machine_id}: {size} takes {sizes[size.lower()].max_data_disks} data disks, "
                                f"the machine has {m.disks - 1}")  # fmt: skip
            for nic in m.nics:
                try:
                    check_nic(nic, ctx.isolated_subnets)
                except InvalidInputError as exc:
                    problems.append(f"{m.machine_id}: {exc}")
                    continue
                if nic.network.lower() not in subnets:
                    subnets[nic.network.lower()] = self._subnet_problem(nic.network)
                if subnets[nic.network.lower()]:
                    problems.append(f"{m.machine_id}: {subnets[nic.network.lower()]}")
        if problems:
            raise InvalidInputError("the Azure target would refuse this recovery: " + "; ".join(problems),
                                    problems=problems)  # fmt: skip
        return notes

    def _subnet_problem(self, subnet_id: str) -> str | None:
        try:
            subnet = self.ctx.compute.get_subnet(subnet_id)
        except (InvalidInputError, TargetError) as exc:
            if fields_of(exc).get("code") in ("NotFound", "ResourceNotFound", "LinkedInvalidPropertyId"):
                return f"subnet {subnet_id} does not exist"
            raise
        if subnet.location.lower() != self.ctx.location.lower():
            return f"subnet {subnet_id} is in {subnet.location}, the recovery in {self.ctx.location}"
        return None
