"""The ARM test server's routes: REST calls -> the fake's port calls, plus long-running operations."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.errors import LifeboatError
from tests.support.arm_resources import render
from tests.support.arm_server import OPERATION_PATH, RESOURCE_PATH, SIZES_PATH, SUBNET_PATH, TYPES, ArmError
from tests.support.fake_azure_compute import FakeVnet

if TYPE_CHECKING:
    from tests.support.arm_server import ArmServer

Answer = tuple[int, Any, dict[str, str]]


class Routes:
    def __init__(self, server: ArmServer) -> None:
        self.server = server
        self.compute = server.compute
        self.failed: set[str] = set()  # lower ids whose create operation failed

    def dispatch(self, method: str, path: str, body: bytes) -> Answer:
        m = OPERATION_PATH.match(path)
        if m is not None and method == "GET":
            status = self.server.operation_status(m.group("op"))
            if m.group("what").lower() == "operationresults":  # the Location of a delete
                return (
                    (202, None, {"Location": self._op_url_of(path)})
                    if status["status"] == "InProgress"
                    else (200, None, {})
                )
            return 200, status, {}
        m = SUBNET_PATH.match(path)
        if m is not None and method == "GET":
            return 200, self._subnet(path), {}
        m = SIZES_PATH.match(path)
        if m is not None and method == "GET":
            sizes = self.compute.vm_sizes(m.group("loc"))
            return 200, {"value": [{"name": s.name, "numberOfCores": s.cpus, "memoryInMB": s.memory_mb,
                                    "maxDataDiskCount": s.max_data_disks} for s in sizes]}, {}  # fmt: skip
        m = RESOURCE_PATH.match(path)
        if m is None or m.group("kind") not in TYPES:
            raise ArmError(404, "InvalidResourceType", f"no route for {method} {path}")
        if m.group("sub").lower() != self.compute.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"subscription {m.group('sub')} not found")
        rg, kind, name, action = m.group("rg"), m.group("kind"), m.group("name"), m.group("action")
        if name is None and method == "GET":
            return self._list(rg, kind)
        if name is None:
            raise ArmError(405, "MethodNotAllowed", f"{method} on a collection")
        resource_id = self.compute.resource_id(TYPES[kind], rg, name)
        if action is not None:
            return self._action(method, kind, resource_id, name, action)
        if method == "GET":
            found = self._find(resource_id)
            if found is None:
                raise ArmError(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{TYPES[kind]}/{name}' under resource group '{rg}' was not found.",
                )
            return 200, self._render(found), {}
        if method == "PUT":
            return self._put(kind, rg, name, resource_id, json.loads(body or b"{}"))
        if method == "DELETE":
            return self._delete(kind, name, resource_id)
        raise ArmError(405, "MethodNotAllowed", f"{method} {path}")

    # --- reads ------------------------------------------------------------------------------------
    def _find(self, resource_id: str) -> Any:
        key = resource_id.lower()
        for table in (self.compute.disks, self.compute.nics, self.compute.vms, self.compute.vnets):
            if key in table:
                return table[key]
        subnets = [s for s in self.compute.subnets.values() if s.vnet_id.lower() == key]
        if subnets:  # a network that existed before (InMemoryAzureCompute.add_subnet)
            vnet_id = subnets[0].vnet_id
            return FakeVnet(
                vnet_id, vnet_id.rsplit("/", 1)[1], subnets[0].location, {}, [s.id for s in subnets]
            )
        return None

    def _subnet(self, subnet_id: str) -> dict[str, Any]:
        subnet = self.compute.subnets.get(subnet_id.lower())
        if subnet is None:
            raise ArmError(404, "NotFound", f"Resource {subnet_id} not found.")
        users = [n for n in self.compute.nics.values() if n.subnet_id.lower() == subnet_id.lower()]
        configs = [{"id": f"{n.id}/ipConfigurations/ipconfig1"} for n in users]
        return {"id": subnet.id, "name": subnet.id.rsplit("/", 1)[1],
                "properties": {"addressPrefix": str(subnet.prefix), "provisioningState": "Succeeded",
                               "ipConfigurations": configs}}  # fmt: skip

    def _render(self, resource: Any, state: str = "Succeeded") -> dict[str, Any]:
        failed = resource.id.lower() in self.failed
        return render(self.compute, resource, "Failed" if failed else state)

    def _list(self, rg: str, kind: str) -> Answer:
        if rg.lower() not in self.compute.resource_groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        table = {"disks": self.compute.disks, "networkInterfaces": self.compute.nics,
                 "virtualMachines": self.compute.vms, "virtualNetworks": self.compute.vnets}[kind]  # fmt: skip
        prefix = f"/subscriptions/{self.compute.subscription_id}/resourcegroups/{rg}/".lower()
        return (
            200,
            {"value": [self._render(r) for r in table.values() if r.id.lower().startswith(prefix)]},
            {},
        )

    def _action(self, method: str, kind: str, vm_id: str, name: str, action: str) -> Answer:
        if kind != "virtualMachines":
            raise ArmError(404, "InvalidResourceType", f"{kind} has no action {action}")
        if action == "instanceView" and method == "GET":
            view = self.compute.instance_view(vm_id)  # NotFound and injected faults from the fake
            power = view.power_state
            if view.provisioning_state != "failed" and power == "running":
                power = self.server.hypervisor.power_state(name) or "starting"
            statuses = [{"code": f"ProvisioningState/{view.provisioning_state}", "level": "Info",
                         "displayStatus": f"Provisioning {view.provisioning_state}"}]  # fmt: skip
            if power is not None:
                statuses.append(
                    {"code": f"PowerState/{power}", "level": "Info", "displayStatus": f"VM {power}"}
                )
            return 200, {"statuses": statuses}, {}
        if action == "retrieveBootDiagnosticsData" and method == "POST":
            self.compute.serial_log(vm_id)  # BootDiagnosticsDisabled and NotFound as the fake decides
            url = self.server.sas_url(name)
            return 200, {"consoleScreenshotBlobUri": url.replace("serial.log", "screenshot.bmp"),
                         "serialConsoleLogBlobUri": url}, {}  # fmt: skip
        raise ArmError(404, "InvalidResourceType", f"no action {method} {action}")

    # --- creates ------------------------------------------------------------------------------------
    def _put(self, kind: str, rg: str, name: str, resource_id: str, body: dict[str, Any]) -> Answer:
        location = str(body.get("location", ""))
        tags = {str(k): str(v) for k, v in (body.get("tags") or {}).items()}
        props = body.get("properties") or {}
        existed = self._find(resource_id) is not None
        work: Callable[[], None] = lambda: None  # noqa: E731
        failure = self.server.take_lro_failure(kind)
        try:
            if kind == "disks":
                work = self._put_disk(rg, name, location, tags, props)
            elif kind == "networkInterfaces":
                self._put_nic(rg, name, location, tags, props)
            elif kind == "virtualMachines":
                work = self._put_vm(rg, name, location, tags, props, boot=failure is None)
            else:
                subnets = {s["name"]: s["properties"]["addressPrefix"] for s in props.get("subnets", [])}
                self.compute.create_vnet(rg, name, location=location, subnets=subnets, tags=tags)
        except LifeboatError as exc:
            if existed or self._find(resource_id) is None:
                raise  # refused before anything was created: a synchronous error
            failure = {"code": str(exc.fields.get("code", "InternalOperationError")), "message": str(exc)}
        if failure is not None:
            self.failed.add(resource_id.lower())
            if kind == "virtualMachines":
                self.compute.set_power_state(resource_id, None, "failed")
        resource = self._find(resource_id)
        operation, result = self.server.start_operation(location, work, failure)
        if kind == "disks":  # the Disks API accepts a PUT with 202 and the operation's URLs
            return 202, None, {"Azure-AsyncOperation": operation, "Location": result}
        state = "Updating" if existed else "Creating"
        return (200 if existed else 201), self._render(resource, state), {"Azure-AsyncOperation": operation}

    def _put_disk(
        self, rg: str, name: str, location: str, tags: dict[str, str], props: dict[str, Any]
    ) -> Callable[[], None]:
        data = props.get("creationData") or {}
        if data.get("createOption") != "Import":
            raise ArmError(400, "InvalidParameter", "only createOption Import is served here")
        if not data.get("storageAccountId"):
            raise ArmError(
                400, "InvalidParameter", "creationData.storageAccountId is required to import a VHD"
            )
        source = str(data.get("sourceUri", ""))
        self.compute.create_disk_from_vhd(
            rg, name, location=location, blob_url=source, size_gib=props.get("diskSizeGB"),
            os_type=props.get("osType"), tags=tags, hyper_v_generation=props.get("hyperVGeneration", "V1"),
        )  # fmt: skip
        return lambda: self.server.hypervisor.import_vhd(name, source)

    def _put_nic(
        self, rg: str, name: str, location: str, tags: dict[str, str], props: dict[str, Any]
    ) -> None:
        configs = props.get("ipConfigurations") or []
        if len(configs) != 1:
            raise ArmError(400, "InvalidParameter", "exactly one IP configuration is served here")
        ip = configs[0].get("properties") or {}
        if "publicIPAddress" in ip:
            raise ArmError(400, "InvalidParameter", "public IP addresses are not served here")
        static = ip.get("privateIPAllocationMethod") == "Static"
        self.compute.create_nic(
            rg, name, location=location, subnet_id=str((ip.get("subnet") or {}).get("id", "")),
            nsg_id=(props.get("networkSecurityGroup") or {}).get("id"),
            private_ip=ip.get("privateIPAddress") if static else None, tags=tags,
        )  # fmt: skip

    def _put_vm(
        self, rg: str, name: str, location: str, tags: dict[str, str], props: dict[str, Any], *, boot: bool
    ) -> Callable[[], None]:
        storage = props.get("storageProfile") or {}
        os_disk = str(((storage.get("osDisk") or {}).get("managedDisk") or {}).get("id", ""))
        data = [
            str(d["managedDisk"]["id"])
            for d in sorted(storage.get("dataDisks") or [], key=lambda d: d["lun"])
        ]
        nics = [str(n["id"]) for n in (props.get("networkProfile") or {}).get("networkInterfaces") or []]
        diagnostics = ((props.get("diagnosticsProfile") or {}).get("bootDiagnostics") or {}).get(
            "enabled", False
        )
        vm_id = self.compute.create_vm(
            rg, name, location=location, size=str((props.get("hardwareProfile") or {}).get("vmSize", "")),
            os_disk_id=os_disk, data_disk_ids=data, nic_ids=nics, tags=tags, boot_diagnostics=bool(diagnostics),
        )  # fmt: skip
        disks = [self.compute.disks[d.lower()] for d in (os_disk, *data)]
        names = [d.id.rsplit("/", 1)[1] for d in disks]
        generation = disks[0].hyper_v_generation

        def start() -> None:
            if boot and vm_id.lower() not in self.failed:
                self.server.hypervisor.start(name, names, generation=generation)

        return start

    # --- deletes -------------------------------------------------------------------------------------
    def _delete(self, kind: str, name: str, resource_id: str) -> Answer:
        resource = self._find(resource_id)
        if resource is None:
            return 204, None, {}
        self.compute.delete(resource_id)  # NicInUse, InUseSubnetCannotBeDeleted ... as the fake decides
        self.failed.discard(resource_id.lower())
        hypervisor = self.server.hypervisor
        work = {
            "virtualMachines": lambda: hypervisor.stop(name),
            "disks": lambda: hypervisor.delete_disk(name),
        }.get(kind, lambda: None)
        operation, result = self.server.start_operation(resource.location, work, None)
        return 202, None, {"Azure-AsyncOperation": operation, "Location": result}

    def _op_url_of(self, path: str) -> str:
        return f"{self.server.url}{path}?api-version=2024-01-01"
