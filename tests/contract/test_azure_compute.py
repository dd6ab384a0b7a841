"""The Azure compute port's contract (node_runtime/recovery/targets/azure/compute.py), on both sides.

``memory``: the in-memory fake the target's unit tests use. ``arm``: the real adapter
(:class:`ArmCompute` on azure-mgmt-compute/network) over HTTPS against the project's ARM
server, which applies the same fake's rules behind ARM's REST. The same assertions on both
prove the adapter translates the contract faithfully (errors, codes, idempotence, LROs).
Page blobs live in Azurite (required, never skipped).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from node_runtime.recovery.azure_vhd import AzurePageBlobVhdWriter
from node_runtime.recovery.targets.azure.arm import ArmCompute
from node_runtime.recovery.targets.azure.compute import DISK, NIC, VM, VNET, AzureCompute
from shared.errors import InvalidInputError, TargetError
from tests.support.arm_server import TOKEN, ArmServer
from tests.support.fake_azure_compute import InMemoryAzureCompute

RG, LOCATION = "lifeboat-recovery", "westeurope"
MiB = 1 << 20
ACCOUNT_ID = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/storage/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"


class Token:
    def __init__(self, token: str = TOKEN) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


class World:
    def __init__(
        self, fake: InMemoryAzureCompute, port: AzureCompute, container: Any, server: ArmServer | None
    ):
        self.fake, self.port, self.container, self.server = fake, port, container, server
        self.subnet = fake.add_subnet("network", "prod-vnet", "app", "10.1.0.0/24")

    def vhd(self, name: str, size: int = 4 * MiB) -> str:
        blob = self.container.get_blob_client(name)
        writer = AzurePageBlobVhdWriter(blob, None, size)
        writer.write(0, b"\xeb\x63" + bytes(510))
        writer.finish()
        return str(blob.url)

    def disk(self, name: str, url: str | None = None, **kw: Any) -> str:
        return self.port.create_disk_from_vhd(RG, name, location=LOCATION, blob_url=url or self.vhd(f"{name}.vhd"),
                                              size_gib=None, os_type=kw.pop("os_type", "Linux"), tags={"t": "1"}, **kw)  # fmt: skip

    def nic(self, name: str, ip: str | None = None, subnet: str | None = None) -> Any:
        return self.port.create_nic(RG, name, location=LOCATION, subnet_id=subnet or self.subnet, nsg_id=None,
                                    private_ip=ip, tags={"t": "1"})  # fmt: skip

    def vm(self, name: str, disk: str, nics: list[str], size: str = "Standard_B2s") -> str:
        return self.port.create_vm(RG, name, location=LOCATION, size=size, os_disk_id=disk, data_disk_ids=[],
                                   nic_ids=nics, tags={"t": "1"})  # fmt: skip


@pytest.fixture(params=["memory", "arm"])
def world(request: pytest.FixtureRequest, azurite: Any, tmp_path: Path) -> Iterator[World]:
    service = azurite.service()
    container = service.create_container(f"contract-{uuid.uuid4().hex[:10]}")
    fake = InMemoryAzureCompute(service, location=LOCATION, resource_groups=(RG, "network"))
    if request.param == "memory":
        yield World(fake, fake, container, None)
    else:
        with ArmServer(fake, tmp_path) as server:
            port = ArmCompute(Token(), fake.subscription_id, storage_account_id=ACCOUNT_ID, base_url=server.url,
                              connection_verify=str(server.ca_file), polling_interval=0.02, retry_backoff_factor=0.02)  # fmt: skip
            yield World(fake, port, container, server)
    container.delete_container()


def code(exc: pytest.ExceptionInfo[Any]) -> str:
    return str(exc.value.fields.get("code"))


def test_resource_ids_are_computed_without_io(world: World) -> None:
    calls = len(world.fake.calls)
    vm_id = world.port.resource_id(VM, RG, "web")
    assert vm_id == f"/subscriptions/{world.fake.subscription_id}/resourceGroups/{RG}/providers/{VM}/web"
    assert len(world.fake.calls) == calls
    with pytest.raises(InvalidInputError):
        world.port.resource_id("Microsoft.Compute/galleries", RG, "x")


def test_disk_import_is_an_idempotent_put_and_checks_the_vhd(world: World) -> None:
    url = world.vhd("a.vhd")
    first = world.disk("d1", url)
    assert world.disk("d1", url).lower() == first.lower() == world.port.resource_id(DISK, RG, "d1").lower()
    with pytest.raises(InvalidInputError) as exc:
        world.disk("d1", world.vhd("b.vhd"))
    assert code(exc) == "PropertyChangeNotAllowed"
    block = world.container.get_blob_client("block.vhd")
    block.upload_blob(b"x" * 1024)
    with pytest.raises(InvalidInputError) as exc:
        world.disk("d2", str(block.url))
    assert code(exc) == "InvalidParameter" and "page blob" in str(exc.value)
    with pytest.raises(InvalidInputError) as exc:
        world.disk("d3", os_type="Solaris")
    with pytest.raises(InvalidInputError) as exc:
        world.disk("d4", hyper_v_generation="V3")
    assert sorted(d.id.rsplit("/", 1)[1] for d in world.fake.disks.values()) == ["d1"]


def test_nics_allocate_addresses_and_refuse_what_arm_refuses(world: World) -> None:
    assert world.nic("n1").private_ip == "10.1.0.4"  # .0-.3 are Azure's
    assert world.nic("n2", "10.1.0.50").private_ip == "10.1.0.50"
    for ip, expected in (("10.2.0.5", "PrivateIPAddressNotInSubnet"), ("10.1.0.1", "PrivateIPAddressIsReserved"),
                         ("10.1.0.50", "PrivateIPAddressInUse")):  # fmt: skip
        with pytest.raises(InvalidInputError) as exc:
            world.nic(f"bad-{ip.replace('.', '-')}", ip)
        assert code(exc) == expected
    with pytest.raises(InvalidInputError) as exc:
        world.nic("n3", subnet=world.subnet.replace("/app", "/nope"))
    assert code(exc) == "InvalidResourceReference"
    info = world.port.get_subnet(world.subnet)
    assert info.address_prefix == "10.1.0.0/24" and info.location == LOCATION and len(info.nic_ids) == 2
    with pytest.raises(TargetError) as exc:
        world.port.get_subnet(world.subnet.replace("/app", "/nope"))
    assert code(exc) == "NotFound"


def test_vm_lifecycle_and_cleanup_order(world: World) -> None:
    disk = world.disk("os")
    nic = world.nic("nic")
    with pytest.raises(InvalidInputError):
        world.vm("vm", disk, [nic.id], size="Standard_Z99")
    vm = world.vm("vm", disk, [nic.id])
    view = world.port.instance_view(vm)
    assert view.provisioning_state == "succeeded" and view.power_state in ("running", "starting")
    assert isinstance(world.port.serial_log(vm), str)
    assert "Standard_B2s" in {s.name for s in world.port.vm_sizes(LOCATION)}
    with pytest.raises(TargetError) as exc:
        world.port.delete(nic.id)  # still attached
    assert code(exc) in ("NicInUse", "OperationNotAllowed") and exc.value.fields["transient"] is False
    assert sorted(world.port.list_tagged(RG, {"t": "1"})) == sorted([disk, nic.id, vm], key=str)
    assert world.port.delete(vm) is True and world.port.delete(vm) is False
    assert world.port.delete(nic.id) is True and world.port.delete(disk) is True
    with pytest.raises(TargetError) as exc:
        world.port.instance_view(vm)
    assert code(exc) in ("NotFound", "ResourceNotFound")
    assert world.port.list_tagged(RG, {"t": "1"}) == []
    with pytest.raises(InvalidInputError) as exc:
        world.port.list_tagged("nowhere", {})
    assert code(exc) == "ResourceGroupNotFound"


def test_an_isolated_network_is_kept_while_a_nic_uses_it(world: World) -> None:
    subnets = world.port.create_vnet(
        RG, "lb-test", location=LOCATION, subnets={"app": "10.1.0.0/24"}, tags={"t": "1"}
    )
    vnet_id = world.port.resource_id(VNET, RG, "lb-test")
    assert subnets["app"].lower() == f"{vnet_id}/subnets/app".lower()
    nic = world.nic("test-nic", "10.1.0.10", subnet=subnets["app"])
    with pytest.raises(TargetError) as exc:
        world.port.delete(vnet_id)
    assert code(exc) == "InUseSubnetCannotBeDeleted"
    assert world.port.delete(nic.id) and world.port.delete(vnet_id) and not world.port.delete(vnet_id)
    assert world.port.resource_id(NIC, RG, "test-nic") == nic.id or nic.id.lower().endswith("/test-nic")


def test_arm_refuses_a_wrong_token_and_a_missing_api_version(azurite: Any, tmp_path: Path) -> None:
    fake = InMemoryAzureCompute(azurite.service(), location=LOCATION, resource_groups=(RG,))
    with ArmServer(fake, tmp_path) as server:
        port = ArmCompute(Token("stolen"), fake.subscription_id, storage_account_id=ACCOUNT_ID, base_url=server.url,
                          connection_verify=str(server.ca_file), polling_interval=0.02)  # fmt: skip
        with pytest.raises(TargetError) as exc:
            port.list_tagged(RG, {})
        assert exc.value.fields["status"] == 401
        context = ssl.create_default_context(cafile=str(server.ca_file))
        request = urllib.request.Request(f"{server.url}/subscriptions/{fake.subscription_id}/resourceGroups/{RG}"
                                         "/providers/Microsoft.Compute/disks", headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as http:
            urllib.request.urlopen(request, context=context)
        assert http.value.code == 400
        assert json.loads(http.value.read())["error"]["code"] == "MissingApiVersionParameter"
