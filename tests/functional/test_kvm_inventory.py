"""KVM inventory end to end: real QEMU VMs (TCG, qcow2 disks, a QMP socket each), a kvm site
whose QMP sockets are set through the REST API (in process, SQLite) over a real HTTP server,
and syncs run by a real node agent: what the inventory records, a socket that does not
answer, a VM that went away, a plan built from the inventory, and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from functions.api import app as api
from functions.embedded.http_server import make_server, serve_in_thread
from node_runtime.agent import NodeAgent
from node_runtime.sources.resolve import SourcePolicy
from shared.api_client import ApiClient
from tests.support.control import InProcessApi
from tests.support.qemu_vms import KvmVm, MiB, crash, need_qemu, qemu_vms

pytestmark = pytest.mark.kvm
ALPHA = ("alpha", [16, 8])  # MiB; two disks: keys 0 and 1
BETA = ("beta", [32])


class World:
    """API in process + HTTP, one node agent allowed to read site ``kvm1``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.control = InProcessApi(tmp)
        self.server = make_server(SimpleNamespace(resolve=api.resolve), "127.0.0.1", 0)
        serve_in_thread(self.server)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.operator = ApiClient(self.url, self.control.tokens["operator"])
        self.operator.create_site(id="dr", name="DR", site_kind="local", repository_url=str(tmp / "repo"))
        self.operator.create_site(id="kvm1", name="KVM host", site_kind="kvm", repository_url=str(tmp / "unused"))
        self.agent = NodeAgent(ApiClient(self.url, self.control.tokens["node1"]), name="n1", site_id="dr",
                               poll_seconds=0.1, progress_seconds=0.2,
                               source_policy=SourcePolicy(allowed_roots=[tmp], source_sites=["kvm1"]))  # fmt: skip
        self.agent.register()

    def set_sockets(self, *sockets: str) -> dict[str, Any]:
        return self.operator.request("PUT", "/sites/kvm1/kvm", {"qmp_sockets": list(sockets)})

    def run_next_job(self) -> dict[str, Any]:
        job = self.agent.client.claim(self.agent.node_id)
        assert job is not None, "no job to claim"
        self.agent.run_job(job)
        return self.operator.job(job["id"])

    def sync(self) -> dict[str, Any]:
        self.control.clock.advance(minutes=5)  # what a sync did not see since it started is missing
        queued = self.operator.request("POST", "/sites/kvm1/inventory/sync", {})
        job = self.run_next_job()
        assert job["id"] == queued["id"]
        return job

    def vms(self) -> dict[str, dict[str, Any]]:
        return {v["name"]: v for v in self.operator.pages("/inventory/vms", {"site_id": "kvm1"})}


def sock(vm: KvmVm) -> str:
    return str(vm.qmp_socket)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    need_qemu()
    monkeypatch.delenv("LIFEBOAT_PASSWORD", raising=False)
    w = World(tmp_path)
    yield w
    w.server.shutdown()


@pytest.fixture
def vms() -> Iterator[list[KvmVm]]:
    need_qemu()
    with qemu_vms(ALPHA, BETA) as started:
        yield started


def test_sync_records_the_vms_reports_a_dead_socket_and_marks_a_vm_gone(world: World, vms: list[KvmVm]) -> None:
    alpha, beta = vms
    nobody = str(alpha.folder / "nobody.qmp")  # no QEMU behind it
    site = world.set_sockets(sock(alpha), sock(beta), nobody)
    assert site["kvm"] == {"qmp_sockets": [sock(alpha), sock(beta), nobody]}
    assert site["sync_job"]["job_kind"] == "inventory-sync" and site["sync_job"]["state"] == "queued"

    job = world.run_next_job()
    assert job["id"] == site["sync_job"]["id"] and job["state"] == "succeeded", job
    assert job["result"]["vms"] == 2 and job["result"]["missing"] == 0
    (dead,) = job["result"]["unreachable"]
    assert dead.startswith(f"{nobody}: ") and "No such file" in dead
    message = job["progress"]["message"]
    assert "discovered 2 VMs behind 3 QMP socket(s)" in message and f"1 unreachable: {nobody}" in message

    found = world.vms()
    assert set(found) == {"alpha", "beta"}
    a, b = found["alpha"], found["beta"]
    assert a["moref"] == f"uuid-{alpha.uuid}" and a["id"] == f"kvm1.uuid-{alpha.uuid}"  # the SMBIOS UUID names it
    assert a["instance_uuid"] == alpha.uuid
    assert a["host"] == sock(alpha) and a["state"] == "present" and a["nics"] == []
    assert (a["power_state"], a["cpus"], a["memory_mb"]) == ("running", 1, 64)
    assert [(d["key"], d["capacity_bytes"], d["file"]) for d in a["disks"]] == [
        (0, 16 * MiB, str(alpha.images[0])), (1, 8 * MiB, str(alpha.images[1]))]  # fmt: skip
    assert [(d["key"], d["capacity_bytes"]) for d in b["disks"]] == [(0, 32 * MiB)]
    assert b["power_state"] == "running" and b["moref"] == f"uuid-{beta.uuid}"
    synced = world.operator.request("GET", "/sites/kvm1")["last_inventory_sync"]
    assert synced["ok"] is True and synced["vms"] == 2 and synced["job_id"] == job["id"]
    audit = world.control.call("GET", "/audit", as_="admin").body["items"]
    assert any(e["action"] == "PUT /sites/<site_id>/kvm" and e["outcome"] == "success" for e in audit)

    # --- beta's QEMU dies: its socket refuses, beta is marked missing (kept), alpha stays
    crash(beta)
    job = world.sync()
    assert job["state"] == "succeeded" and job["result"]["vms"] == 1 and job["result"]["missing"] == 1, job
    assert [u.split(": ", 1)[0] for u in job["result"]["unreachable"]] == [sock(beta), nobody]
    assert "Connection refused" in job["result"]["unreachable"][0]
    assert f"2 unreachable: {sock(beta)}" in job["progress"]["message"]
    after = world.vms()
    assert after["beta"]["state"] == "missing" and after["beta"]["missing_since"]
    assert after["alpha"]["state"] == "present" and after["alpha"]["missing_since"] is None

    # --- a plan from the inventory: device:<key> disks; its runs read the site's sockets
    machine = world.operator.request("POST", f"/inventory/vms/{a['id']}/machine", {"machine_id": "web"})
    assert machine["vm"] == {"moref": a["moref"], "instance_uuid": a["instance_uuid"], "inventory_id": a["id"]}
    assert [(d["disk_id"], d["source"]) for d in machine["disks"]] == [("web-disk0", "device:0"), ("web-disk1", "device:1")]
    world.operator.create_plan(id="p1", name="p1", source_site_id="kvm1", target_site_id="dr", machines=[machine])
    world.operator.plan_action("p1", "protect")
    run = world.operator.plan_action("p1", "replicate-now")
    params = world.operator.job(run["id"])["params"]
    assert params["source"] == {"kind": "kvm", "site_id": "kvm1",
                                "kvm": {"qmp_sockets": [sock(alpha), sock(beta), nobody]}}  # fmt: skip
    assert "quiesce" not in params  # VMware Tools quiescing: vmware plans only
    assert [d["source"] for d in params["machines"][0]["disks"]] == ["device:0", "device:1"]


def test_a_sync_where_no_socket_answers_fails_and_keeps_the_inventory(world: World, tmp_path: Path) -> None:
    gone = [str(tmp_path / "gone-1.qmp"), str(tmp_path / "gone-2.qmp")]
    world.set_sockets(*gone)
    job = world.run_next_job()
    assert job["state"] == "failed", job
    error = job["errors"][-1]
    assert "none of the 2 QMP socket(s) of site kvm1 answered (no VM found)" in error
    assert all(path in error for path in gone)
    site = world.operator.request("GET", "/sites/kvm1")
    assert site["last_inventory_sync"]["ok"] is False and gone[0] in site["last_inventory_sync"]["error"]
    assert world.vms() == {}


def test_the_node_sweeps_only_vsphere_sources(world: World, tmp_path: Path) -> None:
    world.set_sockets(str(tmp_path / "vm.qmp"))
    sources = world.agent.client.node_sources(world.agent.node_id)
    assert [s["kind"] for s in sources] == ["kvm"]
    assert world.agent.sweep_snapshots() == []  # a kvm source is skipped, not an error


def _cli(w: World, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIFEBOAT_API": w.url, "LIFEBOAT_TOKEN": w.control.tokens["operator"],
           "LIFEBOAT_CONFIG_DIR": str(w.tmp / "cli-config"), "COLUMNS": "200"}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])  # fmt: skip


def test_cli_sets_syncs_lists_and_clears_a_kvm_host(world: World, vms: list[KvmVm]) -> None:
    alpha, beta = vms
    nobody = str(alpha.folder / "nobody.qmp")
    stop = threading.Event()
    runner = threading.Thread(target=world.agent.run, args=(stop,), daemon=True)  # the node's own loop
    runner.start()
    try:
        r = _cli(world, "sites", "kvm", "kvm1", "--qmp-socket", sock(alpha), "--qmp-socket", nobody)
        assert r.returncode == 0, r.stderr
        assert "inventory synced: 1 VMs present, 0 items marked missing" in r.stdout
        assert f"1 QMP socket(s) did not answer: {nobody}" in r.stdout

        r = _cli(world, "sites", "kvm", "kvm1", "--qmp-socket", sock(alpha), "--qmp-socket", sock(beta),
                 "--no-wait", "--json")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["kvm"]["qmp_sockets"] == [sock(alpha), sock(beta)]
        r = _cli(world, "inventory", "sync", "kvm1")
        assert r.returncode == 0 and "inventory synced: 2 VMs present" in r.stdout, (r.stdout, r.stderr)
        r = _cli(world, "inventory", "list", "--site", "kvm1", "--json")
        assert r.returncode == 0, r.stderr
        assert sorted(v["name"] for v in json.loads(r.stdout)) == ["alpha", "beta"]

        r = _cli(world, "sites", "kvm", "kvm1", "--clear", "--qmp-socket", sock(alpha))
        assert r.returncode == 2 and "give either --qmp-socket PATH (one or more) or --clear" in r.stderr
        r = _cli(world, "sites", "kvm", "dr", "--qmp-socket", sock(alpha))
        assert r.returncode == 2 and "only kvm sites have a KVM host connection" in r.stderr
        r = _cli(world, "sites", "kvm", "kvm1", "--qmp-socket", "relative.qmp")
        assert r.returncode == 2 and "absolute unix socket path" in r.stderr
        r = _cli(world, "sites", "kvm", "kvm1", "--clear")
        assert r.returncode == 0 and "forgot the QMP sockets of site kvm1" in r.stdout, r.stderr
        assert world.operator.request("GET", "/sites/kvm1")["kvm"] is None
        r = _cli(world, "inventory", "sync", "kvm1")
        assert r.returncode == 5 and "no KVM host connection (QMP sockets) yet" in r.stderr
        assert len(world.vms()) == 2  # the inventory stays
    finally:
        stop.set()
        runner.join(timeout=10)


def test_only_the_kvm_route_sets_sockets_and_only_configured_nodes_see_them(tmp_path: Path) -> None:
    a = InProcessApi(tmp_path)  # no QEMU needed: the control plane's rules alone
    body = {"qmp_sockets": ["/run/vms/web.qmp"]}
    for site_id, kind in (("kvm1", "kvm"), ("dr", "local")):
        r = a.call("POST", "/sites", {"id": site_id, "name": site_id, "site_kind": kind,
                                       "repository_url": str(tmp_path / site_id)}, as_="operator")  # fmt: skip
        assert r.status == 201, r.body
    r = a.call("POST", "/sites", {"name": "x", "site_kind": "kvm", "repository_url": "/x", "kvm": body}, as_="operator")
    assert r.status in (400, 422) and "kvm" in str(r.body)  # not through the site body
    site = a.call("GET", "/sites/kvm1", as_="operator").body
    forged = {k: v for k, v in site.items() if k not in ("id", "created_at", "updated_at")} | {"kvm": body}
    r = a.call("PUT", "/sites/kvm1", forged, as_="operator")
    assert r.status in (400, 422) and "kvm" in str(r.body)
    assert a.call("PUT", "/sites/kvm1/kvm", body, as_="viewer").status == 403
    r = a.call("PUT", "/sites/dr/kvm", body, as_="operator")
    assert r.status == 400 and "only kvm sites have a KVM host connection" in r.body["error"]["message"]
    r = a.call("PUT", "/sites/kvm1/kvm", {"qmp_sockets": ["/a.qmp", "/a.qmp"]}, as_="operator")
    assert r.status in (400, 422) and "listed once" in str(r.body)
    r = a.call("POST", "/sites/kvm1/inventory/sync", {}, as_="operator")
    assert r.status == 409 and "PUT /sites/kvm1/kvm" in r.body["error"]["message"]

    assert a.call("PUT", "/sites/kvm1/kvm", body, as_="operator").status == 200
    for n, sites in (("node1", ["kvm1"]), ("node2", [])):
        assert a.call("POST", "/nodes/register", {"name": n, "site_id": "dr", "source_sites": sites}, as_=n).status == 201
    assert a.call("GET", "/nodes/node-1/sources", as_="node1").body["items"] == [
        {"kind": "kvm", "site_id": "kvm1", "kvm": body}]  # fmt: skip
    assert a.call("GET", "/nodes/node-2/sources", as_="node2").body["items"] == []
    r = a.call("POST", "/nodes/node-1/sources/kvm1/credentials", as_="node1")
    assert r.status == 400 and "only vmware sites have a vCenter" in r.body["error"]["message"]  # no secret to hand out
    r = a.call("DELETE", "/sites/kvm1/kvm", as_="operator")
    assert r.status == 200 and r.body["kvm"] is None
    audit = [e["action"] for e in a.call("GET", "/audit", as_="admin").body["items"]]
    assert "PUT /sites/<site_id>/kvm" in audit and "DELETE /sites/<site_id>/kvm" in audit
