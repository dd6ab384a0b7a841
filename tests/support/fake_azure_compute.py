"""An in-memory :class:`~node_runtime.recovery.targets.azure_compute.AzureCompute` for tests.

Honest rather than permissive: it refuses what Azure Resource Manager refuses, so code
that passes against it sends requests ARM would accept. In particular a disk import
reads the blob through the ``BlobServiceClient`` it is given (Azurite in the tests) and
checks what ARM checks: the blob exists in that storage account, is a page blob, ends
with a valid *fixed* VHD footer whose size matches the blob, and its virtual size is a
multiple of 1 MiB. Subnets and NSGs must be registered first (:meth:`add_subnet`,
:meth:`add_nsg`), as they would have to exist in the subscription.

Test hooks: :meth:`fail_next` injects a failure into the next call of an operation
(optionally after the resource was created, in ARM's ``failed`` state, as when an
allocation fails after the PUT was accepted); ``boot`` computes the serial console text
of a VM when it starts; :meth:`set_power_state` and :meth:`append_serial` change a VM
afterwards; ``calls`` records every call in order.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node_runtime.recovery.azure_vhd import DISK_TYPE_FIXED, FOOTER_SIZE, MiB, parse_vhd_footer
from node_runtime.recovery.targets.azure.compute import (
    DISK,
    HYPER_V_GENERATIONS,
    NIC,
    OS_TYPES,
    VM,
    VNET,
    NicInfo,
    SubnetInfo,
    VmSize,
    VmView,
)
from shared.errors import InvalidInputError, LifeboatError, TargetError

GiB = 1 << 30
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"

# VM sizes this fake's region offers, with their maximum NIC count.
DEFAULT_SIZES = {
    "Standard_B1s": 2,
    "Standard_B2s": 3,
    "Standard_D2s_v5": 2,
    "Standard_D4s_v5": 2,
    "Standard_D8s_v5": 4,
}

_NAME_RULES = {  # ARM naming rules (length, pattern) per resource type
    DISK: (80, re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")),
    NIC: (80, re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")),
    VM: (64, re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")),
    VNET: (64, re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")),
}
_BAD_TAG_CHARS = set("<>%&\\?/")
_OPERATIONS = (
    "create_disk_from_vhd",
    "create_nic",
    "create_vm",
    "create_vnet",
    "get_subnet",
    "vm_sizes",
    "instance_view",
    "serial_log",
    "delete",
    "list_tagged",
)


def _invalid(message: str, code: str, **fields: Any) -> InvalidInputError:
    return InvalidInputError(message, code=code, transient=False, **fields)


@dataclass
class FakeDisk:
    id: str
    location: str
    source_uri: str
    size_bytes: int
    os_type: str | None
    tags: dict[str, str]
    managed_by: str | None = None  # the VM it is attached to
    params: tuple[Any, ...] = ()
    hyper_v_generation: str = "V1"


@dataclass
class FakeNic:
    id: str
    location: str
    subnet_id: str
    nsg_id: str | None
    private_ip: str
    static: bool
    tags: dict[str, str]
    vm_id: str | None = None
    params: tuple[Any, ...] = ()


@dataclass
class FakeVm:
    id: str
    name: str
    location: str
    size: str
    os_disk_id: str
    data_disk_ids: list[str]
    nic_ids: list[str]
    tags: dict[str, str]
    boot_diagnostics: bool
    provisioning_state: str = "succeeded"
    power_state: str | None = "running"
    serial: str = ""
    params: tuple[Any, ...] = ()


@dataclass
class FakeVnet:
    id: str
    name: str
    location: str
    tags: dict[str, str]
    subnet_ids: list[str]
    params: tuple[Any, ...] = ()


@dataclass
class Subnet:
    id: str
    vnet_id: str
    prefix: ipaddress.IPv4Network
    location: str
    used: set[ipaddress.IPv4Address] = field(default_factory=set)


@dataclass
class _Fault:
    error: LifeboatError
    created: bool
    skip: int


class InMemoryAzureCompute:
    """The Azure compute port over dicts, validating like ARM. Thread-safe."""

    def __init__(
        self,
        blob_service: Any,
        *,
        subscription_id: str = SUBSCRIPTION,
        location: str = "westeurope",
        resource_groups: tuple[str, ...] = ("lifeboat-recovery",),
        sizes: dict[str, int] | None = None,
        boot: Callable[[FakeVm], str] | None = None,
    ) -> None:
        self.blob_service = blob_service
        self.subscription_id = subscription_id
        self.location = location
        self.resource_groups = {rg.lower() for rg in resource_groups}
        self.sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
        self.boot = boot
        self.disks: dict[str, FakeDisk] = {}
        self.nics: dict[str, FakeNic] = {}
        self.vms: dict[str, FakeVm] = {}
        self.subnets: dict[str, Subnet] = {}
        self.vnets: dict[str, FakeVnet] = {}  # created through the port (pre-existing ones: add_subnet)
        self.nsgs: dict[str, str] = {}  # lower id -> location
        self.calls: list[tuple[str, str]] = []  # (operation, resource id or name)
        self._faults: dict[str, list[_Fault]] = {}
        self._lock = threading.RLock()

    # --- setting up the subscription -------------------------------------------------------
    def add_subnet(
        self, resource_group: str, vnet: str, subnet: str, prefix: str, *, location: str | None = None
    ) -> str:
        """Register an existing subnet; its ARM id."""
        vnet_id = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.Network/virtualNetworks/{vnet}"
        )
        subnet_id = f"{vnet_id}/subnets/{subnet}"
        with self._lock:
            self.subnets[subnet_id.lower()] = Subnet(
                subnet_id, vnet_id, ipaddress.IPv4Network(prefix), location or self.location
            )
        return subnet_id

    def add_nsg(self, resource_group: str, name: str, *, location: str | None = None) -> str:
        """Register an existing network security group; its ARM id."""
        nsg_id = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.Network/networkSecurityGroups/{name}"
        )
        with self._lock:
            self.nsgs[nsg_id.lower()] = location or self.location
        return nsg_id

    # --- test hooks ----------------------------------------------------------------------------
    def fail_next(
        self, operation: str, error: LifeboatError | None = None, *, created: bool = False, skip: int = 0
    ) -> None:
        """Make the next call of ``operation`` (after ``skip`` that succeed) raise ``error``.

        The default error is a transient 500. With ``created`` (creates only) the resource
        is created first (a VM left in provisioning state ``failed``), as when ARM accepted
        the PUT and the operation then failed. Faults queue up in order.
        """
        if operation not in _OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {_OPERATIONS}")
        if created and not operation.startswith("create_"):
            raise ValueError("created=True only applies to create operations")
        error = error or TargetError(
            f"injected failure of {operation}", code="InternalServerError", transient=True
        )
        with self._lock:
            self._faults.setdefault(operation, []).append(_Fault(error, created, skip))

    def set_power_state(
        self, vm_id: str, power_state: str | None, provisioning_state: str | None = None
    ) -> None:
        with self._lock:
            vm = self._vm(vm_id)
            vm.power_state = power_state
            if provisioning_state is not None:
                vm.provisioning_state = provisioning_state

    def append_serial(self, vm_id: str, text: str) -> None:
        with self._lock:
            self._vm(vm_id).serial += text

    def all_ids(self) -> list[str]:
        with self._lock:
            return [r.id for r in self._all()]

    def tags_of(self, resource_id: str) -> dict[str, str]:
        with self._lock:
            for r in self._all():
                if r.id.lower() == resource_id.lower():
                    return dict(r.tags)
        raise KeyError(resource_id)

    def _all(self) -> list[FakeDisk | FakeNic | FakeVm | FakeVnet]:
        return [*self.disks.values(), *self.nics.values(), *self.vms.values(), *self.vnets.values()]

    # --- the port ------------------------------------------------------------------------------
    def resource_id(self, resource_type: str, resource_group: str, name: str) -> str:
        if resource_type not in _NAME_RULES:
            raise _invalid(f"unknown resource type {resource_type!r}", "InvalidResourceType")
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}/providers/{resource_type}/{name}"

    def create_disk_from_vhd(
        self,
        resource_group: str,
        name: str,
        *,
        location: str,
        blob_url: str,
        size_gib: int | None,
        os_type: str | None,
        tags: dict[str, str],
        hyper_v_generation: str = "V1",
    ) -> str:
        with self._lock:
            fault = self._begin("create_disk_from_vhd", name)
            if hyper_v_generation not in HYPER_V_GENERATIONS:
                raise _invalid(f"hyperVGeneration {hyper_v_generation!r} is not V1 or V2", "InvalidParameter")
            self._check_placement(resource_group, location)
            self._check_name(DISK, name)
            self._check_tags(tags)
            if os_type is not None and os_type not in OS_TYPES:
                raise _invalid(f"osType {os_type!r} is not one of {OS_TYPES}", "InvalidParameter")
            disk_id = self.resource_id(DISK, resource_group, name)
            params = (blob_url, size_gib, os_type, hyper_v_generation)
            existing = self.disks.get(disk_id.lower())
            if existing is not None:
                if existing.params != params:
                    raise _invalid(f"disk {name}: source and size cannot change", "PropertyChangeNotAllowed")
                existing.tags = dict(tags)
                return self._end(fault, existing.id)
        virtual = self._check_vhd(blob_url)  # I/O outside the lock
        if size_gib is not None and size_gib * GiB < virtual:
            raise _invalid(
                f"diskSizeGB {size_gib} is smaller than the VHD ({virtual} bytes)", "InvalidParameter"
            )
        with self._lock:
            disk = FakeDisk(
                disk_id,
                location,
                blob_url,
                size_gib * GiB if size_gib is not None else virtual,
                os_type,
                dict(tags),
                params=params,
                hyper_v_generation=hyper_v_generation,
            )
            self.disks.setdefault(disk_id.lower(), disk)
            return self._end(fault, disk_id)

    def create_nic(
        self,
        resource_group: str,
        name: str,
        *,
        location: str,
        subnet_id: str,
        nsg_id: str | None,
        private_ip: str | None,
        tags: dict[str, str],
    ) -> NicInfo:
        with self._lock:
            fault = self._begin("create_nic", name)
            self._check_placement(resource_group, location)
            self._check_name(NIC, name)
            self._check_tags(tags)
            subnet = self.subnets.get(subnet_id.lower())
            if subnet is None:
                raise _invalid(f"subnet {subnet_id} does not exist", "InvalidResourceReference")
            if subnet.location != location:
                raise _invalid(
                    f"subnet {subnet_id} is in {subnet.location}, the NIC in {location}",
                    "InvalidResourceReference",
                )
            if nsg_id is not None:
                nsg_location = self.nsgs.get(nsg_id.lower())
                if nsg_location is None:
                    raise _invalid(
                        f"network security group {nsg_id} does not exist", "InvalidResourceReference"
                    )
                if nsg_location != location:
                    raise _invalid(f"NSG {nsg_id} is in {nsg_location}", "InvalidResourceReference")
            nic_id = self.resource_id(NIC, resource_group, name)
            params = (subnet_id.lower(), nsg_id.lower() if nsg_id else None, private_ip)
            existing = self.nics.get(nic_id.lower())
            if existing is not None:
                if existing.params != params:
                    raise _invalid(
                        f"NIC {name}: subnet, NSG and address cannot change", "PropertyChangeNotAllowed"
                    )
                existing.tags = dict(tags)
                return self._end(fault, NicInfo(existing.id, existing.private_ip))
            address = self._allocate(subnet, private_ip)
            nic = FakeNic(
                nic_id,
                location,
                subnet.id,
                nsg_id,
                str(address),
                private_ip is not None,
                dict(tags),
                params=params,
            )
            subnet.used.add(address)
            self.nics[nic_id.lower()] = nic
            return self._end(fault, NicInfo(nic_id, nic.private_ip))

    def create_vm(
        self,
        resource_group: str,
        name: str,
        *,
        location: str,
        size: str,
        os_disk_id: str,
        data_disk_ids: list[str],
        nic_ids: list[str],
        tags: dict[str, str],
        boot_diagnostics: bool = True,
    ) -> str:
        with self._lock:
            fault = self._begin("create_vm", name)
            self._check_placement(resource_group, location)
            self._check_name(VM, name)
            self._check_tags(tags)
            if size not in self.sizes:
                raise _invalid(f"the VM size {size} is not available in {location}", "InvalidParameter")
            vm_id = self.resource_id(VM, resource_group, name)
            params = (size, os_disk_id.lower(), tuple(d.lower() for d in data_disk_ids),
                      tuple(n.lower() for n in nic_ids), boot_diagnostics)  # fmt: skip
            existing = self.vms.get(vm_id.lower())
            if existing is not None:
                if existing.params != params:
                    raise _invalid(
                        f"VM {name}: disks, NICs and size cannot change here", "PropertyChangeNotAllowed"
                    )
                existing.tags = dict(tags)
                return self._end(fault, existing.id)
            if not nic_ids:
                raise _invalid("a virtual machine needs at least one network interface", "InvalidParameter")
            if len(nic_ids) > self.sizes[size]:
                raise _invalid(
                    f"{size} takes at most {self.sizes[size]} NICs, not {len(nic_ids)}", "InvalidParameter"
                )
            if len({n.lower() for n in nic_ids}) != len(nic_ids):
                raise _invalid("a NIC is listed twice", "InvalidParameter")
            nics = []
            for nic_id in nic_ids:
                nic = self.nics.get(nic_id.lower())
                if nic is None:
                    raise _invalid(f"network interface {nic_id} does not exist", "InvalidResourceReference")
                if nic.location != location:
                    raise _invalid(
                        f"NIC {nic_id} is in {nic.location}, the VM in {location}", "InvalidResourceReference"
                    )
                if nic.vm_id is not None:
                    raise _invalid(f"NIC {nic_id} is attached to {nic.vm_id}", "NicInUse")
                nics.append(nic)
            vnets = {self.subnets[n.subnet_id.lower()].vnet_id.lower() for n in nics}
            if len(vnets) > 1:
                raise _invalid("all NICs of a VM must be in the same virtual network", "InvalidParameter")
            disk_ids = [os_disk_id, *data_disk_ids]
            if len({d.lower() for d in disk_ids}) != len(disk_ids):
                raise _invalid("a disk is listed twice", "InvalidParameter")
            disks = []
            for disk_id in disk_ids:
                disk = self.disks.get(disk_id.lower())
                if disk is None:
                    raise _invalid(f"disk {disk_id} does not exist", "NotFound")
                if disk.location != location:
                    raise _invalid(f"disk {disk_id} is in {disk.location}", "InvalidResourceReference")
                if disk.managed_by is not None:
                    raise _invalid(f"disk {disk_id} is attached to {disk.managed_by}", "OperationNotAllowed")
                disks.append(disk)
            if disks[0].os_type is None:
                raise _invalid(f"OS disk {os_disk_id} has no osType", "InvalidParameter")
            vm = FakeVm(vm_id, name, location, size, disks[0].id, [d.id for d in disks[1:]],
                        [n.id for n in nics], dict(tags), boot_diagnostics, params=params)  # fmt: skip
            for disk in disks:
                disk.managed_by = vm_id
            for nic in nics:
                nic.vm_id = vm_id
            self.vms[vm_id.lower()] = vm
            if fault is not None and fault.created:
                vm.provisioning_state, vm.power_state = "failed", None
                raise fault.error
        serial = self.boot(vm) if self.boot else ""  # the guest boots outside the lock
        with self._lock:
            vm.serial += serial
        return vm_id

    def create_vnet(
        self, resource_group: str, name: str, *, location: str, subnets: dict[str, str], tags: dict[str, str]
    ) -> dict[str, str]:
        with self._lock:
            fault = self._begin("create_vnet", name)
            self._check_placement(resource_group, location)
            self._check_name(VNET, name)
            self._check_tags(tags)
            if not subnets:
                raise _invalid("a virtual network needs at least one subnet", "InvalidParameter")
            prefixes = {}
            for subnet_name, prefix in subnets.items():
                try:
                    prefixes[subnet_name] = ipaddress.IPv4Network(prefix)
                except ValueError as exc:
                    raise _invalid(f"{prefix!r} is not an IPv4 prefix", "InvalidAddressPrefix") from exc
            networks = sorted(prefixes.values())
            if any(a.overlaps(b) for a, b in itertools.pairwise(networks)):
                raise _invalid(f"subnet prefixes overlap: {subnets}", "NetcfgInvalidSubnet")
            vnet_id = self.resource_id(VNET, resource_group, name)
            params = tuple(sorted(subnets.items()))
            existing = self.vnets.get(vnet_id.lower())
            if existing is not None:
                if existing.params != params:
                    raise _invalid(
                        f"virtual network {name}: its subnets cannot change here",
                        "InUseSubnetCannotBeUpdated",
                    )
                existing.tags = dict(tags)
                return self._end(fault, {s.rsplit("/", 1)[1]: s for s in existing.subnet_ids})
            ids = {n: f"{vnet_id}/subnets/{n}" for n in subnets}
            for subnet_name, subnet_id in ids.items():
                self.subnets[subnet_id.lower()] = Subnet(subnet_id, vnet_id, prefixes[subnet_name], location)
            self.vnets[vnet_id.lower()] = FakeVnet(
                vnet_id, name, location, dict(tags), list(ids.values()), params
            )
            return self._end(fault, ids)

    def get_subnet(self, subnet_id: str) -> SubnetInfo:
        with self._lock:
            self._end(self._begin("get_subnet", subnet_id), None)
            subnet = self.subnets.get(subnet_id.lower())
            if subnet is None:
                raise TargetError(f"subnet {subnet_id} not found", code="NotFound", transient=False)
            nics = [n.id for n in self.nics.values() if n.subnet_id.lower() == subnet_id.lower()]
            return SubnetInfo(subnet.id, str(subnet.prefix), subnet.location, nics)

    def vm_sizes(self, location: str) -> list[VmSize]:
        from shared.policies.sizing import AZURE_SIZES

        with self._lock:
            self._end(self._begin("vm_sizes", location), None)
            if location != self.location:
                raise _invalid(f"location {location} is not available", "LocationNotAvailableForResourceType")
            table = {name: (cpus, memory) for name, cpus, memory, _nics in AZURE_SIZES}
            return [VmSize(name, *table.get(name, (2, 4096)), 4) for name in self.sizes]

    def instance_view(self, vm_id: str) -> VmView:
        with self._lock:
            self._end(self._begin("instance_view", vm_id), None)
            vm = self._vm(vm_id)
            statuses = [f"ProvisioningState/{vm.provisioning_state}"]
            if vm.power_state is not None:
                statuses.append(f"PowerState/{vm.power_state}")
            return VmView(vm.provisioning_state, vm.power_state, statuses)

    def serial_log(self, vm_id: str) -> str:
        with self._lock:
            self._end(self._begin("serial_log", vm_id), None)
            vm = self._vm(vm_id)
            if not vm.boot_diagnostics:
                raise _invalid(f"boot diagnostics are not enabled on {vm.name}", "BootDiagnosticsDisabled")
            return vm.serial

    def delete(self, resource_id: str) -> bool:
        with self._lock:
            self._end(self._begin("delete", resource_id), None)
            key = resource_id.lower()
            if key in self.vms:
                vm = self.vms.pop(key)
                for disk_id in (vm.os_disk_id, *vm.data_disk_ids):
                    if disk_id.lower() in self.disks:
                        self.disks[disk_id.lower()].managed_by = None
                for nic_id in vm.nic_ids:
                    if nic_id.lower() in self.nics:
                        self.nics[nic_id.lower()].vm_id = None
                return True
            if key in self.nics:
                nic = self.nics[key]
                if nic.vm_id is not None:
                    raise TargetError(
                        f"NIC {resource_id} is attached to {nic.vm_id}", code="NicInUse", transient=False
                    )
                subnet = self.subnets.get(nic.subnet_id.lower())
                if subnet is not None:
                    subnet.used.discard(ipaddress.IPv4Address(nic.private_ip))
                del self.nics[key]
                return True
            if key in self.vnets:
                vnet = self.vnets[key]
                users = [
                    n.id
                    for n in self.nics.values()
                    if n.subnet_id.lower() in {s.lower() for s in vnet.subnet_ids}
                ]
                if users:
                    raise TargetError(
                        f"virtual network {resource_id} has NICs in its subnets: {users}",
                        code="InUseSubnetCannotBeDeleted",
                        transient=False,
                    )
                for subnet_id in vnet.subnet_ids:
                    self.subnets.pop(subnet_id.lower(), None)
                del self.vnets[key]
                return True
            if key in self.disks:
                disk = self.disks[key]
                if disk.managed_by is not None:
                    raise TargetError(
                        f"disk {resource_id} is attached to {disk.managed_by}",
                        code="OperationNotAllowed",
                        transient=False,
                    )
                del self.disks[key]
                return True
            self._parse_id(resource_id)  # a malformed id is an error, a well-formed unknown one is gone
            return False

    def list_tagged(self, resource_group: str, tags: dict[str, str]) -> list[str]:
        with self._lock:
            self._end(self._begin("list_tagged", resource_group), None)
            if resource_group.lower() not in self.resource_groups:
                raise _invalid(f"resource group {resource_group} does not exist", "ResourceGroupNotFound")
            found = []
            for r in self._all():
                rg = self._parse_id(r.id)[0]
                if rg.lower() == resource_group.lower() and all(r.tags.get(k) == v for k, v in tags.items()):
                    found.append(r.id)
            return found

    # --- checks ARM makes ----------------------------------------------------------------------
    def _begin(self, operation: str, target: str) -> _Fault | None:
        self.calls.append((operation, target))
        queue = self._faults.get(operation)
        fault = None
        if queue and queue[0].skip:
            queue[0].skip -= 1
        elif queue:
            fault = queue.pop(0)
        if fault is not None and not fault.created:
            raise fault.error
        return fault

    def _end(self, fault: _Fault | None, result: Any) -> Any:
        if fault is not None:  # a "created" fault on a call that created nothing new
            raise fault.error
        return result

    def _vm(self, vm_id: str) -> FakeVm:
        vm = self.vms.get(vm_id.lower())
        if vm is None:
            raise TargetError(f"virtual machine {vm_id} not found", code="NotFound", transient=False)
        return vm

    def _parse_id(self, resource_id: str) -> tuple[str, str, str]:
        m = re.fullmatch(
            r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/([^/]+/[^/]+)/([^/]+)",
            resource_id,
            re.I,
        )
        if m is None or m.group(1).lower() != self.subscription_id.lower():
            raise _invalid(
                f"{resource_id!r} is not a resource id in subscription {self.subscription_id}",
                "LinkedInvalidPropertyId",
            )
        return m.group(2), m.group(3), m.group(4)

    def _check_placement(self, resource_group: str, location: str) -> None:
        if resource_group.lower() not in self.resource_groups:
            raise _invalid(f"resource group {resource_group} could not be found", "ResourceGroupNotFound")
        if location != self.location:
            raise _invalid(
                f"location {location} is not available to this subscription",
                "LocationNotAvailableForResourceType",
            )

    def _check_name(self, resource_type: str, name: str) -> None:
        longest, pattern = _NAME_RULES[resource_type]
        if not 1 <= len(name) <= longest or not pattern.match(name):
            raise _invalid(f"{name!r} is not a valid name for {resource_type}", "InvalidResourceName")

    def _check_tags(self, tags: dict[str, str]) -> None:
        if len(tags) > 50:
            raise _invalid("at most 50 tags", "InvalidTag")
        for k, v in tags.items():
            if not 1 <= len(k) <= 512 or _BAD_TAG_CHARS & set(k) or len(v) > 256:
                raise _invalid(f"invalid tag {k!r}={v!r}", "InvalidTag")

    def _allocate(self, subnet: Subnet, private_ip: str | None) -> ipaddress.IPv4Address:
        reserved = {subnet.prefix.network_address + i for i in range(4)} | {subnet.prefix.broadcast_address}
        if private_ip is not None:
            try:
                address = ipaddress.IPv4Address(private_ip)
            except ValueError as exc:
                raise _invalid(f"{private_ip!r} is not an IPv4 address", "InvalidParameter") from exc
            if address not in subnet.prefix:
                raise _invalid(f"{address} is not in {subnet.prefix}", "PrivateIPAddressNotInSubnet")
            if address in reserved:
                raise _invalid(
                    f"{address} is reserved by Azure in {subnet.prefix}", "PrivateIPAddressIsReserved"
                )
            if address in subnet.used:
                raise _invalid(f"{address} is in use", "PrivateIPAddressInUse")
            return address
        for address in subnet.prefix.hosts():
            if address not in reserved and address not in subnet.used:
                return address
        raise _invalid(f"subnet {subnet.id} is full", "SubnetIsFull")

    def blob_client(self, blob_url: str) -> Any:
        """The blob ``blob_url`` names in this subscription's storage account (``InvalidParameter`` if another's)."""
        base = str(self.blob_service.url).rstrip("/") + "/"
        if not blob_url.startswith(base):
            raise _invalid(f"{blob_url} is not in storage account {base}", "InvalidParameter")
        container, _, blob_name = blob_url[len(base) :].partition("/")
        return self.blob_service.get_blob_client(
            urllib.parse.unquote(container), urllib.parse.unquote(blob_name)
        )

    def _check_vhd(self, blob_url: str) -> int:
        """What ARM checks before importing a VHD; its virtual size."""
        from azure.core.exceptions import ResourceNotFoundError

        blob = self.blob_client(blob_url)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError as exc:
            raise _invalid(f"source blob {blob_url} does not exist", "InvalidParameter") from exc
        if props.blob_type != "PageBlob":
            raise _invalid(f"{blob_url} is a {props.blob_type}, not a page blob", "InvalidParameter")
        size = int(props.size)
        if size < FOOTER_SIZE + MiB:
            raise _invalid(f"{blob_url} is too small to be a VHD", "InvalidParameter")
        try:
            footer = parse_vhd_footer(
                blob.download_blob(offset=size - FOOTER_SIZE, length=FOOTER_SIZE).readall()
            )
        except ValueError as exc:
            raise _invalid(
                f"{blob_url} does not end with a valid VHD footer: {exc}", "InvalidParameter"
            ) from exc
        if footer.disk_type != DISK_TYPE_FIXED:
            raise _invalid(f"{blob_url} is not a fixed VHD (type {footer.disk_type})", "InvalidParameter")
        virtual = size - FOOTER_SIZE
        if footer.current_size != virtual:
            raise _invalid(
                f"VHD size {footer.current_size} does not match the blob ({virtual})", "InvalidParameter"
            )
        if virtual % MiB:
            raise _invalid(f"VHD virtual size {virtual} is not a multiple of 1 MiB", "InvalidParameter")
        return virtual
