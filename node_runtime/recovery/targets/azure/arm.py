"""The Azure compute port on Azure Resource Manager, through the Azure SDKs.

:class:`ArmCompute` translates the port's calls (see :mod:`.compute` for the contract) to
``azure-mgmt-compute`` and ``azure-mgmt-network``: every create is a PUT of ARM's JSON
body, every create and delete is waited on with the SDK's own long-running-operation
poller, and throttling (429 with ``Retry-After``) and 5xx are retried by the SDK's retry
policy. ARM errors become :class:`~shared.errors.InvalidInputError` (the request was
wrong) or :class:`~shared.errors.TargetError`, with ARM's ``code`` and ``transient``.

Credentials come from ``azure-identity`` (:func:`default_credential`): the managed
identity in Azure, a service principal from ``AZURE_CLIENT_ID`` / ``AZURE_TENANT_ID`` /
``AZURE_CLIENT_SECRET``, or the Azure CLI login elsewhere.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.mgmt.compute import models as cm
from azure.mgmt.network import models as nm

from node_runtime.recovery.targets.azure.arm_errors import arm_error
from node_runtime.recovery.targets.azure.compute import (
    DISK,
    NIC,
    RESOURCE_TYPES,
    VM,
    VNET,
    NicInfo,
    SubnetInfo,
    VmSize,
    VmView,
)
from shared.errors import InvalidInputError

T = TypeVar("T")

_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"(?P<type>[^/]+/[^/]+)/(?P<name>[^/]+)(?:/subnets/(?P<subnet>[^/]+))?$",
    re.I,
)


def default_credential(**options: Any) -> Any:
    """``DefaultAzureCredential``: managed identity, environment service principal, CLI login."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(**options)


class ArmCompute:
    """:class:`~.compute.AzureCompute` for one subscription, on the real SDKs.

    ``base_url`` points the SDKs at another ARM endpoint (a sovereign cloud, or the test
    server); ``client_options`` go to both management clients (``polling_interval``,
    ``retry_total``, ``connection_verify``, ``transport`` ...); ``storage_account_id`` is
    the account holding the VHDs to import. ``read_blob`` downloads a boot-diagnostics
    SAS URI (default: ``azure-storage-blob``).
    """

    def __init__(
        self,
        credential: Any,
        subscription_id: str,
        *,
        storage_account_id: str,
        base_url: str | None = None,
        read_blob: Callable[[str], bytes] | None = None,
        **client_options: Any,
    ) -> None:
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.network import NetworkManagementClient

        self.subscription_id = subscription_id
        self.storage_account_id = storage_account_id
        self.compute = ComputeManagementClient(credential, subscription_id, base_url, **client_options)
        self.network = NetworkManagementClient(credential, subscription_id, base_url, **client_options)
        verify = client_options.get("connection_verify", True)
        self.read_blob = read_blob or (lambda url: _download(url, verify))

    # --- addressing --------------------------------------------------------------------------
    def resource_id(self, resource_type: str, resource_group: str, name: str) -> str:
        if resource_type not in RESOURCE_TYPES:
            raise InvalidInputError(f"unknown resource type {resource_type!r}", code="InvalidResourceType")
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}"
            f"/providers/{resource_type}/{name}"
        )

    # --- creates -------------------------------------------------------------------------------
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
        properties: dict[str, Any] = {
            "creationData": {
                "createOption": "Import",
                "sourceUri": blob_url,
                "storageAccountId": self.storage_account_id,
            }
        }
        if size_gib is not None:
            properties["diskSizeGB"] = size_gib
        if os_type is not None:
            properties["osType"] = os_type
            properties["hyperVGeneration"] = hyper_v_generation
        body = {"location": location, "tags": tags, "sku": {"name": "Standard_LRS"}, "properties": properties}
        disk = self._call(
            f"importing {blob_url} as disk {name}",
            lambda: self.compute.disks.begin_create_or_update(resource_group, name, cm.Disk(body)).result(),
        )
        return str(disk.id)

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
        ip: dict[str, Any] = {"subnet": {"id": subnet_id}, "privateIPAddressVersion": "IPv4"}
        if private_ip is not None:
            ip.update(privateIPAllocationMethod="Static", privateIPAddress=private_ip)
        else:
            ip["privateIPAllocationMethod"] = "Dynamic"
        properties: dict[str, Any] = {"ipConfigurations": [{"name": "ipconfig1", "properties": ip}]}
        if nsg_id is not None:
            properties["networkSecurityGroup"] = {"id": nsg_id}
        body = {"location": location, "tags": tags, "properties": properties}
        nic = self._call(
            f"creating NIC {name} in {subnet_id}",
            lambda: self.network.network_interfaces.begin_create_or_update(
                resource_group, name, nm.NetworkInterface(body)
            ).result(),
        )
        return NicInfo(str(nic.id), str(nic.ip_configurations[0].private_ip_address))

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
        os_disk = self._call(
            f"reading OS disk {os_disk_id}", lambda: self.compute.disks.get(*_rg_name(os_disk_id))
        )
        body = {
            "location": location,
            "tags": tags,
            "properties": {
                "hardwareProfile": {"vmSize": size},
                "storageProfile": {
                    "osDisk": {
                        "createOption": "Attach",
                        "osType": os_disk.os_type,
                        "managedDisk": {"id": os_disk_id},
                    },
                    "dataDisks": [
                        {"lun": lun, "createOption": "Attach", "managedDisk": {"id": disk_id}}
                        for lun, disk_id in enumerate(data_disk_ids)
                    ],
                },
                "networkProfile": {
                    "networkInterfaces": [
                        {"id": nic_id, "properties": {"primary": i == 0}} for i, nic_id in enumerate(nic_ids)
                    ]
                },
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": boot_diagnostics}},
            },
        }
        vm = self._call(
            f"creating VM {name}",
            lambda: self.compute.virtual_machines.begin_create_or_update(
                resource_group, name, cm.VirtualMachine(body)
            ).result(),
        )
        return str(vm.id)

    def create_vnet(
        self, resource_group: str, name: str, *, location: str, subnets: dict[str, str], tags: dict[str, str]
    ) -> dict[str, str]:
        body = {
            "location": location,
            "tags": tags,
            "properties": {
                "addressSpace": {"addressPrefixes": sorted(set(subnets.values()))},
                "subnets": [{"name": n, "properties": {"addressPrefix": p}} for n, p in subnets.items()],
            },
        }
        vnet = self._call(
            f"creating virtual network {name}",
            lambda: self.network.virtual_networks.begin_create_or_update(
                resource_group, name, nm.VirtualNetwork(body)
            ).result(),
        )
        return {str(s.name): str(s.id) for s in vnet.subnets or []}

    # --- reads ----------------------------------------------------------------------------------
    def get_subnet(self, subnet_id: str) -> SubnetInfo:
        m = _parse(subnet_id)
        if m.group("subnet") is None or m.group("type").lower() != VNET.lower():
            raise InvalidInputError(f"{subnet_id!r} is not a subnet id", code="LinkedInvalidPropertyId")
        rg, vnet_name, subnet_name = m.group("rg"), m.group("name"), m.group("subnet")
        subnet = self._call(
            f"reading subnet {subnet_id}", lambda: self.network.subnets.get(rg, vnet_name, subnet_name)
        )
        vnet = self._call(
            f"reading virtual network {vnet_name}", lambda: self.network.virtual_networks.get(rg, vnet_name)
        )
        nics = {str(c.id).split("/ipConfigurations/")[0] for c in subnet.ip_configurations or []}
        return SubnetInfo(str(subnet.id), str(subnet.address_prefix), str(vnet.location), sorted(nics))

    def vm_sizes(self, location: str) -> list[VmSize]:
        sizes = self._call(
            f"listing the VM sizes of {location}",
            lambda: list(self.compute.virtual_machine_sizes.list(location)),
        )
        return [VmSize(str(s.name), int(s.number_of_cores or 0), int(s.memory_in_mb or 0),
                       int(s.max_data_disk_count or 0)) for s in sizes]  # fmt: skip

    def instance_view(self, vm_id: str) -> VmView:
        view = self._call(
            f"reading the instance view of {vm_id}",
            lambda: self.compute.virtual_machines.instance_view(*_rg_name(vm_id)),
        )
        codes = [str(s.code) for s in view.statuses or []]
        provisioning = next(
            (c.split("/", 1)[1].lower() for c in codes if c.startswith("ProvisioningState/")), ""
        )
        power = next((c.split("/", 1)[1].lower() for c in codes if c.startswith("PowerState/")), None)
        statuses = [
            f"{s.code}: {s.display_status}" if s.display_status else str(s.code) for s in view.statuses or []
        ]
        return VmView(provisioning, power, statuses)

    def serial_log(self, vm_id: str) -> str:
        data = self._call(
            f"retrieving the boot diagnostics of {vm_id}",
            lambda: self.compute.virtual_machines.retrieve_boot_diagnostics_data(
                *_rg_name(vm_id), sas_uri_expiration_time_in_minutes=10
            ),
        )
        uri = data.serial_console_log_blob_uri
        if not uri:
            return ""
        try:
            return self.read_blob(str(uri)).decode("utf-8", errors="replace")
        except ResourceNotFoundError:
            return ""  # Azure writes the log a few minutes after boot
        except AzureError as exc:
            raise arm_error(exc, f"downloading the serial log of {vm_id}") from exc

    def list_tagged(self, resource_group: str, tags: dict[str, str]) -> list[str]:
        listings: list[Callable[[], Any]] = [
            lambda: self.compute.virtual_machines.list(resource_group),
            lambda: self.network.network_interfaces.list(resource_group),
            lambda: self.compute.disks.list_by_resource_group(resource_group),
            lambda: self.network.virtual_networks.list(resource_group),
        ]
        found: list[str] = []
        for listing in listings:
            resources: list[Any] = self._call(f"listing resource group {resource_group}", _listed(listing))
            found += [
                str(r.id) for r in resources if all((r.tags or {}).get(k) == v for k, v in tags.items())
            ]
        return found

    # --- deletes --------------------------------------------------------------------------------
    def delete(self, resource_id: str) -> bool:
        m = _parse(resource_id)
        if m.group("subnet") is not None:
            raise InvalidInputError(
                f"{resource_id} is a subnet: delete its network", code="InvalidResourceType"
            )
        kind, rg, name = m.group("type").lower(), m.group("rg"), m.group("name")
        operations: dict[str, Callable[[], Any]] = {
            VM.lower(): lambda: self.compute.virtual_machines.begin_delete(rg, name),
            DISK.lower(): lambda: self.compute.disks.begin_delete(rg, name),
            NIC.lower(): lambda: self.network.network_interfaces.begin_delete(rg, name),
            VNET.lower(): lambda: self.network.virtual_networks.begin_delete(rg, name),
        }
        if kind not in operations:
            raise InvalidInputError(f"cannot delete {resource_id}: not a type Lifeboat creates",
                                    code="InvalidResourceType")  # fmt: skip
        readers: dict[str, Callable[[], Any]] = {
            VM.lower(): lambda: self.compute.virtual_machines.get(rg, name),
            DISK.lower(): lambda: self.compute.disks.get(rg, name),
            NIC.lower(): lambda: self.network.network_interfaces.get(rg, name),
            VNET.lower(): lambda: self.network.virtual_networks.get(rg, name),
        }
        try:
            readers[kind]()
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise arm_error(exc, f"reading {resource_id}") from exc
        try:
            operations[kind]().result()
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise arm_error(exc, f"deleting {resource_id}") from exc
        return True

    # --- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _call(doing: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except AzureError as exc:
            raise arm_error(exc, doing) from exc


def _listed(listing: Callable[[], Any]) -> Callable[[], list[Any]]:
    return lambda: list(listing())


def _parse(resource_id: str) -> re.Match[str]:
    m = _ID.match(resource_id)
    if m is None:
        raise InvalidInputError(f"{resource_id!r} is not an ARM resource id", code="LinkedInvalidPropertyId")
    return m


def _rg_name(resource_id: str) -> tuple[str, str]:
    m = _parse(resource_id)
    return m.group("rg"), m.group("name")


def _download(url: str, verify: Any) -> bytes:
    """A blob by its SAS URI, with azure-storage-blob (the SAS is the only credential)."""
    from azure.storage.blob import BlobClient

    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "https":
        raise InvalidInputError("a boot-diagnostics URI must be https", code="InvalidParameter")
    blob = BlobClient.from_blob_url(url, connection_verify=verify)
    return bytes(blob.download_blob().readall())
