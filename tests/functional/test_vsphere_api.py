"""The vSphere control-plane rules, in process (API Gateway events, SQLite), no vCenter needed:
who may set a connection and read its password, what is never stored or served, and which
plans are refused before any job runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shared.adapters.local.sealed_secrets import SealedSecret, SealedSecretVault
from shared.domain.inventory import Node
from shared.errors import CorruptObjectError
from shared.ports.metadata_store import every
from tests.support.control import InProcessApi

VC = {"url": "https://vc.example:8443", "username": "svc", "password": "Very-Secret-42", "tls": {"insecure": True}}


@pytest.fixture
def api(tmp_path: Path) -> InProcessApi:
    a = InProcessApi(tmp_path)
    for site_id, kind in (("vc", "vmware"), ("dr", "local")):
        r = a.call("POST", "/sites", {"id": site_id, "name": site_id, "site_kind": kind,
                                       "repository_url": str(tmp_path / site_id)}, as_="operator")  # fmt: skip
        assert r.status == 201, r.body
    return a


def test_the_password_is_sealed_never_served_and_replaced_whole(api: InProcessApi, tmp_path: Path) -> None:
    r = api.call("PUT", "/sites/vc/vcenter", VC, as_="operator")
    assert r.status == 200, r.body
    assert r.body["vcenter"]["url"] == "https://vc.example:8443/sdk"  # the SDK path is added
    assert "Very-Secret-42" not in str(r.body) and r.body["sync_job"]["job_kind"] == "inventory-sync"
    assert "Very-Secret-42" not in str(api.call("GET", "/sites/vc", as_="viewer").body)
    raw = sqlite3.connect(tmp_path / "metadata.db").execute("select * from records").fetchall()
    assert "Very-Secret-42" not in str(raw)  # at rest only as AES-GCM ciphertext
    first_ref = r.body["vcenter"]["password_ref"]
    again = api.call("PUT", "/sites/vc/vcenter", {**VC, "password": "Another-1"}, as_="operator")
    assert again.status == 200 and again.body["vcenter"]["password_ref"] != first_ref
    assert again.body["sync_job"]["id"] == r.body["sync_job"]["id"]  # one open sync at a time
    assert len(list(every(api.ctl.store, SealedSecret))) == 1  # the old secret is gone
    with pytest.raises(CorruptObjectError):
        SealedSecretVault(api.ctl.store, b"w" * 32).get(again.body["vcenter"]["password_ref"])


def test_a_connection_is_refused_where_it_does_not_belong(api: InProcessApi) -> None:
    r = api.call("PUT", "/sites/dr/vcenter", VC, as_="operator")
    assert r.status == 400 and "only vmware sites" in r.body["error"]["message"]
    r = api.call("PUT", "/sites/vc/vcenter", {**VC, "url": "http://vc.example"}, as_="operator")
    assert r.status in (400, 422) and "https" in str(r.body)
    r = api.call("PUT", "/sites/vc/vcenter", {**VC, "tls": {"insecure": True, "thumbprint": "ab" * 32}},
                 as_="operator")  # fmt: skip
    assert r.status in (400, 422) and "insecure cannot be combined" in str(r.body)
    assert api.call("PUT", "/sites/vc/vcenter", VC, as_="viewer").status == 403
    assert list(every(api.ctl.store, SealedSecret)) == []  # nothing stored by the refusals
    site = api.call("GET", "/sites/vc", as_="operator").body
    body = {k: v for k, v in site.items() if k not in ("id", "created_at", "updated_at")}
    forged = {**body, "vcenter": {**VC, "password_ref": "file:/etc/shadow"}}
    forged["vcenter"].pop("password")
    r = api.call("PUT", "/sites/vc", forged, as_="operator")  # only the vcenter route sets a connection
    assert r.status in (400, 422) and "vcenter" in str(r.body)


def test_only_a_node_configured_for_the_site_gets_its_password(api: InProcessApi) -> None:
    api.call("PUT", "/sites/vc/vcenter", VC, as_="operator")
    for n, sites in (("node1", ["vc"]), ("node2", [])):
        r = api.call("POST", "/nodes/register", {"name": n, "site_id": "dr", "source_sites": sites}, as_=n)
        assert r.status == 201, r.body
    ok = api.call("POST", "/nodes/node-1/sources/vc/credentials", as_="node1")
    assert ok.status == 200 and ok.body == {"password": "Very-Secret-42"}
    assert [s["site_id"] for s in api.call("GET", "/nodes/node-1/sources", as_="node1").body["items"]] == ["vc"]
    denied = api.call("POST", "/nodes/node-2/sources/vc/credentials", as_="node2")
    assert denied.status == 403 and "--source-site" in denied.body["error"]["message"]
    assert api.call("GET", "/nodes/node-2/sources", as_="node2").body["items"] == []
    assert api.call("POST", "/nodes/node-1/sources/vc/credentials", as_="node2").status == 403
    assert api.call("POST", "/nodes/node-1/sources/vc/credentials", as_="operator").status == 403
    audit = api.call("GET", "/audit", as_="admin").body["items"]
    assert any(e["action"] == "POST /nodes/<node_id>/sources/<site_id>/credentials" for e in audit)
    assert api.ctl.store.get(Node, "node-1").source_sites == ["vc"]


def test_inventory_batches_only_from_the_node_running_that_sync(api: InProcessApi) -> None:
    job = api.call("PUT", "/sites/vc/vcenter", VC, as_="operator").body["sync_job"]
    for n in ("node1", "node2"):
        api.call("POST", "/nodes/register", {"name": n, "site_id": "dr", "source_sites": ["vc"]}, as_=n)
    claimed = api.call("POST", "/nodes/node-1/claim", as_="node1").body
    assert claimed["id"] == job["id"]
    vm = {"id": "vc.vm-1", "site_id": "vc", "moref": "vm-1", "name": "web"}
    r = api.call("POST", "/nodes/node-2/inventory", {"job_id": job["id"], "vms": [vm]}, as_="node2")
    assert r.status == 403
    other = {**vm, "id": "dr.vm-1", "site_id": "dr"}
    r = api.call("POST", "/nodes/node-1/inventory", {"job_id": job["id"], "vms": [other]}, as_="node1")
    assert r.status == 400 and "belongs to site dr" in r.body["error"]["message"]
    r = api.call("POST", "/nodes/node-1/inventory", {"job_id": job["id"], "vms": [vm], "final": True}, as_="node1")
    assert r.status == 200 and r.body["vms"] == 1, r.body
    assert [v["name"] for v in api.call("GET", "/inventory/vms?site_id=vc", as_="viewer").body["items"]] == ["web"]


def test_a_plan_of_vms_needs_a_vmware_source_with_a_connection(api: InProcessApi) -> None:
    machine = {"machine_id": "web", "vm": {"moref": "vm-1"}, "disks": [{"disk_id": "web-d0", "source": "device:2000"}]}
    for plan_id, source in (("p-local", "dr"), ("p-vc", "vc")):
        r = api.call("POST", "/plans", {"id": plan_id, "name": plan_id, "source_site_id": source,
                                        "target_site_id": "dr", "machines": [machine]}, as_="operator")  # fmt: skip
        assert r.status == 201, r.body
        r = api.call("POST", f"/plans/{plan_id}/protect", as_="operator")
        assert r.status == 400 and "not a vmware site with a vCenter connection" in r.body["error"]["message"]
    bad = {**machine, "disks": [{"disk_id": "web-d0", "source": "/dev/sda"}]}
    r = api.call("POST", "/plans", {"name": "x", "source_site_id": "vc", "target_site_id": "dr",
                                    "machines": [bad]}, as_="operator")  # fmt: skip
    assert r.status in (400, 422) and "device:<key>" in str(r.body)
