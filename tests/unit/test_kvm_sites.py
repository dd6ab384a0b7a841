"""kvm sites: which site may hold a KVM host connection, what the services refuse and why,
and what a plan of KVM VMs hands its node (SQLite stores in a temp folder, no QEMU)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.adapters.local.sqlite_metadata import SqliteMetadataStore
from shared.adapters.local.sqlite_queue import SqliteJobQueue
from shared.domain.inventory import Site, SiteKind
from shared.domain.kvm import KvmHostConnection
from shared.domain.plans import ProtectedDisk, ProtectedMachine, ProtectionPlan, SourceVm
from shared.domain.vsphere import InventoryDisk, InventoryVm, VCenterConnection
from shared.errors import InvalidInputError, InvalidStateError
from shared.services import inventory, kvm, plans
from shared.services.context import Control

SOCKETS = KvmHostConnection(qmp_sockets=["/run/vms/web.qmp", "/run/vms/db.qmp"])
VC = VCenterConnection(url="https://vc.example/sdk", username="svc", password_ref="env:VC_PW")


def site(site_id: str, kind: SiteKind, **fields: Any) -> Site:
    return Site(id=site_id, name=site_id, site_kind=kind, repository_url="/unused", **fields)


# --- the site validator -----------------------------------------------------------------------
def test_only_a_kvm_site_holds_qmp_sockets() -> None:
    assert site("k", SiteKind.KVM, kvm=SOCKETS).kvm == SOCKETS
    for kind in (SiteKind.VMWARE, SiteKind.LOCAL, SiteKind.AWS, SiteKind.AZURE):
        with pytest.raises(ValidationError, match="only a kvm site has a KVM host connection"):
            site("x", kind, kvm=SOCKETS)
    with pytest.raises(ValidationError, match="only a vmware site has a vCenter connection"):
        site("k", SiteKind.KVM, vcenter=VC)


def test_a_site_has_an_inventory_source_only_with_its_own_connection() -> None:
    assert site("k", SiteKind.KVM, kvm=SOCKETS).has_inventory_source
    assert site("v", SiteKind.VMWARE, vcenter=VC).has_inventory_source
    assert not site("k", SiteKind.KVM).has_inventory_source
    assert not site("v", SiteKind.VMWARE).has_inventory_source
    assert not site("l", SiteKind.LOCAL).has_inventory_source


def test_source_params_name_exactly_what_the_node_reads() -> None:
    assert inventory.source_params(site("k", SiteKind.KVM, kvm=SOCKETS)) == {
        "kind": "kvm", "site_id": "k", "kvm": {"qmp_sockets": ["/run/vms/web.qmp", "/run/vms/db.qmp"]}}  # fmt: skip
    vc = inventory.source_params(site("v", SiteKind.VMWARE, vcenter=VC))
    assert vc is not None and vc["kind"] == "vsphere" and vc["vcenter"]["url"] == "https://vc.example/sdk"
    assert inventory.source_params(site("k", SiteKind.KVM)) is None
    assert inventory.source_params(site("l", SiteKind.LOCAL)) is None


def test_a_kvm_vm_becomes_a_machine_with_device_disks_by_position() -> None:
    vm = InventoryVm(id="k.uuid-1", site_id="k", moref="uuid-1", instance_uuid="1", name="web 1",
                     disks=[InventoryDisk(key=0, capacity_bytes=1 << 30), InventoryDisk(key=1, capacity_bytes=1 << 20)])  # fmt: skip
    machine = inventory.machine_from_inventory(vm)
    assert machine.machine_id == "web-1" and machine.vm == SourceVm(moref="uuid-1", instance_uuid="1", inventory_id="k.uuid-1")
    assert [(d.disk_id, d.source) for d in machine.disks] == [("web-1-disk0", "device:0"), ("web-1-disk1", "device:1")]


# --- the services ------------------------------------------------------------------------------
@pytest.fixture
def ctl(tmp_path: Path) -> Control:
    c = Control(store=SqliteMetadataStore(tmp_path / "m.db"), queue=SqliteJobQueue(tmp_path / "q.db"),
                jwt_secret="x" * 40)  # fmt: skip
    for s in (site("k", SiteKind.KVM), site("v", SiteKind.VMWARE), site("dr", SiteKind.LOCAL)):
        c.store.create(s)
    return c


def test_set_kvm_is_refused_off_a_kvm_site(ctl: Control) -> None:
    for site_id in ("v", "dr"):
        with pytest.raises(InvalidInputError, match="only kvm sites have a KVM host connection"):
            kvm.set_kvm(ctl, site_id, SOCKETS, actor="alice")
        with pytest.raises(InvalidInputError, match="only kvm sites"):
            kvm.clear_kvm(ctl, site_id)
    assert ctl.store.get(Site, "v").kvm is None


def test_a_sync_needs_a_site_with_an_inventory_and_its_connection(ctl: Control) -> None:
    with pytest.raises(InvalidStateError, match=r"no KVM host connection \(QMP sockets\) yet \(PUT /sites/k/kvm\)"):
        inventory.request_sync(ctl, "k", actor="alice", reason="test")
    with pytest.raises(InvalidStateError, match=r"no vCenter connection yet \(PUT /sites/v/vcenter\)"):
        inventory.request_sync(ctl, "v", actor="alice", reason="test")
    with pytest.raises(InvalidInputError, match="only vmware and kvm sites have an inventory"):
        inventory.request_sync(ctl, "dr", actor="alice", reason="test")


def test_setting_sockets_queues_one_sync_and_clearing_keeps_the_site(ctl: Control) -> None:
    updated, job = kvm.set_kvm(ctl, "k", SOCKETS, actor="alice")
    assert updated.kvm == SOCKETS and job.params == {"site_id": "k"} and job.created_by == "alice"
    _, again = kvm.set_kvm(ctl, "k", KvmHostConnection(qmp_sockets=["/run/vms/web.qmp"]), actor="bob")
    assert again.id == job.id  # one open sync at a time; it reads the new list when it runs
    assert ctl.store.get(Site, "k").kvm == KvmHostConnection(qmp_sockets=["/run/vms/web.qmp"])
    assert [s["site_id"] for s in inventory.node_sources(ctl)] == ["k"]
    assert kvm.clear_kvm(ctl, "k").kvm is None
    assert inventory.node_sources(ctl) == []


def _plan(source_site_id: str) -> ProtectionPlan:
    machine = ProtectedMachine(machine_id="web", vm=SourceVm(moref="uuid-1"),
                               disks=[ProtectedDisk(disk_id="web-disk0", source="device:0")])  # fmt: skip
    return ProtectionPlan(id="p", name="p", source_site_id=source_site_id, target_site_id="dr", machines=[machine],
                          quiesce=True)  # fmt: skip


def test_a_plan_of_kvm_vms_gets_the_sites_sockets_and_no_quiesce(ctl: Control) -> None:
    with pytest.raises(InvalidInputError, match="nor a kvm site with QMP sockets"):
        plans.replication_params(ctl, _plan("k"))
    kvm.set_kvm(ctl, "k", SOCKETS, actor="alice")
    params = plans.replication_params(ctl, _plan("k"))
    assert params["source"] == inventory.source_params(ctl.store.get(Site, "k"))
    assert "quiesce" not in params
    ctl.store.update(ctl.store.get(Site, "v").model_copy(update={"vcenter": VC}))
    vmware = plans.replication_params(ctl, _plan("v"))
    assert vmware["source"]["kind"] == "vsphere" and vmware["quiesce"] is True
