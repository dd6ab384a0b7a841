"""The ARM JSON of the fake's disks, NICs, VMs and virtual networks (what GET and PUT answer)."""

from __future__ import annotations

from typing import Any

from tests.support.fake_azure_compute import FakeDisk, FakeNic, FakeVm, FakeVnet, InMemoryAzureCompute

GiB = 1 << 30


def _base(resource: Any, kind: str, name: str) -> dict[str, Any]:
    return {
        "id": resource.id,
        "name": name,
        "type": kind,
        "location": resource.location,
        "tags": dict(resource.tags),
    }


def render(compute: InMemoryAzureCompute, resource: Any, state: str = "Succeeded") -> dict[str, Any]:
    name = resource.id.rsplit("/", 1)[1]
    if isinstance(resource, FakeDisk):
        props: dict[str, Any] = {
            "creationData": {"createOption": "Import", "sourceUri": resource.source_uri},
            "diskSizeGB": -(-resource.size_bytes // GiB),
            "diskSizeBytes": resource.size_bytes,
            "provisioningState": state,
            "diskState": "Attached" if resource.managed_by else "Unattached",
        }
        if resource.os_type:
            props.update(osType=resource.os_type, hyperVGeneration=resource.hyper_v_generation)
        out = {
            **_base(resource, "Microsoft.Compute/disks", name),
            "sku": {"name": "Standard_LRS"},
            "properties": props,
        }
        if resource.managed_by:
            out["managedBy"] = resource.managed_by
        return out
    if isinstance(resource, FakeNic):
        ip = {
            "privateIPAddress": resource.private_ip,
            "privateIPAllocationMethod": "Static" if resource.static else "Dynamic",
            "privateIPAddressVersion": "IPv4",
            "subnet": {"id": resource.subnet_id},
            "primary": True,
            "provisioningState": state,
        }
        props = {
            "ipConfigurations": [
                {"id": f"{resource.id}/ipConfigurations/ipconfig1", "name": "ipconfig1", "properties": ip}
            ],
            "provisioningState": state,
        }
        if resource.nsg_id:
            props["networkSecurityGroup"] = {"id": resource.nsg_id}
        if resource.vm_id:
            props["virtualMachine"] = {"id": resource.vm_id}
        return {**_base(resource, "Microsoft.Network/networkInterfaces", name), "properties": props}
    if isinstance(resource, FakeVm):
        state = "Failed" if resource.provisioning_state == "failed" else state
        return {
            **_base(resource, "Microsoft.Compute/virtualMachines", name),
            "properties": {
                "hardwareProfile": {"vmSize": resource.size},
                "storageProfile": {
                    "osDisk": {"createOption": "Attach", "managedDisk": {"id": resource.os_disk_id}},
                    "dataDisks": [
                        {"lun": i, "createOption": "Attach", "managedDisk": {"id": d}}
                        for i, d in enumerate(resource.data_disk_ids)
                    ],
                },
                "networkProfile": {
                    "networkInterfaces": [
                        {"id": n, "properties": {"primary": i == 0}} for i, n in enumerate(resource.nic_ids)
                    ]
                },
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": resource.boot_diagnostics}},
                "provisioningState": state,
            },
        }
    if isinstance(resource, FakeVnet):
        subnets = []
        for subnet_id in resource.subnet_ids:
            subnet = compute.subnets[subnet_id.lower()]
            users = [n for n in compute.nics.values() if n.subnet_id.lower() == subnet_id.lower()]
            subnets.append({
                "id": subnet.id, "name": subnet.id.rsplit("/", 1)[1],
                "properties": {"addressPrefix": str(subnet.prefix), "provisioningState": state,
                               "ipConfigurations": [{"id": f"{n.id}/ipConfigurations/ipconfig1"} for n in users]},
            })  # fmt: skip
        prefixes = sorted({s["properties"]["addressPrefix"] for s in subnets})
        return {
            **_base(resource, "Microsoft.Network/virtualNetworks", name),
            "properties": {
                "addressSpace": {"addressPrefixes": prefixes},
                "subnets": subnets,
                "provisioningState": state,
            },
        }
    raise TypeError(f"cannot render {resource!r}")
