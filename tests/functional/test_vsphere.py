"""vSphere sources end to end against the project's vCenter simulator (govmomi vcsim +
tools/vcsim: real flat disks, snapshots, CBT) over HTTPS, through the REST API in process
(SQLite), a real HTTP server and the node agent: connection, inventory sync, replication
through CBT, fallbacks, snapshot cleanup, TLS and credential failures, node-side safety."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from functions.api import app as api
from functions.api.schemas import SITE_SERVER_FIELDS
from functions.embedded.http_server import make_server, serve_in_thread
from node_runtime.agent import NodeAgent
from node_runtime.recovery.restore import restore
from node_runtime.sources.resolve import SourcePolicy
from node_runtime.sources.vsphere import datastore
from node_runtime.sources.vsphere.connection import Endpoint, connect
from shared.adapters.local.folder_store import FolderStore
from shared.api_client import ApiClient
from shared.domain.vsphere import VCenterTls
from shared.errors import AuthenticationError, SourceError
from shared.repo.repository import Repository
from tests.support.control import InProcessApi
from tests.support.pki import ca_and_server_cert
from tests.support.vcsim import Vcsim, start_vcsim

pytestmark = pytest.mark.vsphere
MiB = 1 << 20


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return ca_and_server_cert(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def sim(tmp_path: Path, pki: SimpleNamespace) -> Iterator[Vcsim]:
    s = start_vcsim(tmp_path / "vcsim", tls_cert=pki.cert, tls_key=pki.key, password="Sekr3t-vc-pw")
    yield s
    s.stop()


class World:
    """API in process + HTTP, one node agent allowed to read site ``vc``."""

    def __init__(self, tmp: Path, sim: Vcsim, pki: SimpleNamespace) -> None:
        self.tmp, self.sim, self.pki = tmp, sim, pki
        self.control = InProcessApi(tmp)
        self.server = make_server(SimpleNamespace(resolve=api.resolve), "127.0.0.1", 0)
        serve_in_thread(self.server)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.operator = ApiClient(self.url, self.control.tokens["operator"])
        self.operator.create_site(id="dr", name="DR", site_kind="local", repository_url=str(tmp / "repo"))
        self.operator.create_site(id="vc", name="vCenter", site_kind="vmware", repository_url=str(tmp / "unused"))
        self.agent = self.new_agent()
        self.agent.register()

    def new_agent(self) -> NodeAgent:
        return NodeAgent(ApiClient(self.url, self.control.tokens["node1"]), name="n1", site_id="dr",
                         progress_seconds=0.2, source_policy=SourcePolicy(allowed_roots=[self.tmp], source_sites=["vc"]))  # fmt: skip

    def connect_vcenter(self, **tls: Any) -> dict[str, Any]:
        body = {"url": self.sim.url, "username": self.sim.username, "password": self.sim.password,
                "tls": tls or {"ca_pem": self.pki.ca_pem}}  # fmt: skip
        return self.operator.request("PUT", "/sites/vc/vcenter", body)

    def run_next_job(self) -> dict[str, Any]:
        job = self.agent.client.claim(self.agent.node_id)
        assert job is not None, "no job to claim"
        self.agent.run_job(job)
        return self.operator.job(job["id"])

    def vms(self) -> list[dict[str, Any]]:
        return self.operator.pages("/inventory/vms", {"site_id": "vc"})

    def repo(self) -> Repository:
        return Repository.open(FolderStore(self.tmp / "repo"), lambda: "")


@pytest.fixture
def world(tmp_path: Path, sim: Vcsim, pki: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.delenv("LIFEBOAT_PASSWORD", raising=False)
    w = World(tmp_path, sim, pki)
    yield w
    w.server.shutdown()


def synced(w: World) -> dict[str, Any]:
    site = w.connect_vcenter()
    assert w.sim.password not in json.dumps(site) and site["vcenter"]["password_ref"].startswith("lifeboat-secret:")
    job = w.run_next_job()
    assert job["id"] == site["sync_job"]["id"] and job["state"] == "succeeded", job
    return job


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def restored(w: World, disk_id: str, point_id: str) -> bytes:
    repo = w.repo()
    target = w.tmp / f"restore-{point_id}.img"
    restore(repo, repo.read_point(disk_id, point_id), str(target))
    return target.read_bytes()


def protect_vm(w: World, vm: dict[str, Any], plan_id: str = "p1") -> dict[str, Any]:
    machine = w.operator.request("POST", f"/inventory/vms/{vm['id']}/machine", {"machine_id": "m1"})
    mapping = [{"source_network": n, "target_network": "lan", "test_network": "bubble"}
               for n in dict.fromkeys(machine["networks"])]  # fmt: skip
    w.operator.create_plan(id=plan_id, name=plan_id, source_site_id="vc", target_site_id="dr", rpo_minutes=600,
                           machines=[machine], network_mapping=mapping)  # fmt: skip
    w.operator.plan_action(plan_id, "protect")
    return machine


def replicate(w: World, plan_id: str = "p1") -> dict[str, Any]:
    w.operator.plan_action(plan_id, "replicate-now")
    return w.run_next_job()


def snapshots_of(sim: Vcsim, moref: str) -> int:
    return next(v["snapshots"] for v in sim.vms() if v["moref"] == moref)


# --- tests ------------------------------------------------------------------------------------------
def test_inventory_sync_discovers_the_simulator_and_marks_a_deleted_vm(world: World) -> None:
    wrong = world.operator.request("PUT", "/sites/vc/vcenter", {"url": world.sim.url, "username": world.sim.username,
                                                                "password": "typo", "tls": {"insecure": True}})  # fmt: skip
    job = synced(world)  # the sync queued with the typo runs with the corrected connection
    assert job["id"] == wrong["sync_job"]["id"]
    vms = world.vms()
    assert len(vms) == len(world.sim.vms()) and job["result"]["vms"] == len(vms)
    vm = vms[0]
    assert vm["moref"].startswith("vm-") and vm["instance_uuid"] and vm["state"] == "present"
    assert vm["cpus"] >= 1 and vm["memory_mb"] > 0 and vm["firmware"] in ("bios", "efi")
    assert vm["disks"] and vm["disks"][0]["file"].startswith("[") and vm["disks"][0]["capacity_bytes"] > 0
    assert vm["nics"] and vm["nics"][0]["network"] and vm["nics"][0]["mac"]
    kinds = {o["object_type"] for o in world.operator.pages("/inventory/objects", {"site_id": "vc"})}
    assert kinds == {"datacenter", "cluster", "host", "datastore", "network"}

    gone = vms[-1]
    protect_vm(world, gone)  # a plan that names the VM before it disappears
    session = connect(Endpoint("vc", world.sim.url, world.sim.username, world.sim.password,
                               VCenterTls(ca_pem=world.pki.ca_pem)))  # fmt: skip
    try:
        target = next(v for v in session.vms() if v._moId == gone["moref"])
        if str(target.runtime.powerState) == "poweredOn":
            target.PowerOffVM_Task()
            time.sleep(0.5)
        target.Destroy_Task()
        time.sleep(0.5)
    finally:
        session.close()
    assert gone["moref"] not in {v["moref"] for v in world.sim.vms()}
    world.control.clock.advance(minutes=5)
    world.operator.request("POST", "/sites/vc/inventory/sync", {})
    assert world.run_next_job()["state"] == "succeeded"
    after = {v["id"]: v for v in world.vms()}
    assert after[gone["id"]]["state"] == "missing" and after[gone["id"]]["missing_since"]
    assert all(v["state"] == "present" for k, v in after.items() if k != gone["id"])
    site = world.operator.request("GET", "/sites/vc")
    assert site["last_inventory_sync"]["ok"] is True
    assert world.operator.request("GET", "/plans/p1")["machines"][0]["vm"]["moref"] == gone["moref"]  # kept
    failed = replicate(world)
    assert failed["state"] == "failed" and f"VM {gone['moref']}" in failed["errors"][-1]
    assert "gone from vCenter" in failed["errors"][-1]


def test_three_disk_vm_full_and_two_incrementals_restore_identical(world: World) -> None:
    sim = world.sim
    vm_sim = sim.vms()[0]
    keys = [vm_sim["disks"][0]["key"], sim.add_disk(vm_sim["moref"], 8 * MiB), sim.add_disk(vm_sim["moref"], 4 * MiB)]
    rnd = __import__("random").Random(7)
    for i, key in enumerate(keys):
        for off in (0, 3 * MiB + 4096 * i):
            sim.write(vm_sim["moref"], key, off, rnd.randbytes(256 << 10))
    synced(world)
    vm = next(v for v in world.vms() if v["moref"] == vm_sim["moref"])
    assert [d["key"] for d in vm["disks"]] == keys
    machine = protect_vm(world, vm)
    history: list[dict[str, bytes]] = []
    points: list[dict[str, Any]] = []
    for run in range(3):
        if run:
            for key in keys:  # small changes between runs
                sim.write(vm_sim["moref"], key, rnd.randrange(0, 3 * MiB), rnd.randbytes(70_000))
        expected = {d["disk_id"]: sim.read_current(vm_sim["moref"], int(d["source"].split(":")[1]))
                    for d in machine["disks"]}  # fmt: skip
        job = replicate(world)
        assert job["state"] == "succeeded", job
        assert snapshots_of(sim, vm_sim["moref"]) == 0
        result = job["result"]["machines"][0]
        assert result["hardware"]["cpus"] >= 1 and len(result["hardware"]["disks"]) == 3
        for d in result["disks"]:
            assert d["change_token"] and d["read"] == ("full" if run == 0 else "changed"), d
            assert restored(world, d["disk_id"], d["point_id"]) == expected[d["disk_id"]]
        history.append(expected)
        points.append(result)
    for expected, result in zip(history, points, strict=True):  # every point still restores its moment
        for d in result["disks"]:
            assert sha(restored(world, d["disk_id"], d["point_id"])) == sha(expected[d["disk_id"]])
    incremental = world.repo().read_point(points[2]["disks"][0]["disk_id"], points[2]["disks"][0]["point_id"])
    assert incremental.stats.bytes_read <= 4 * MiB  # CBT: only the changed blocks were read
    recorded = world.operator.points(plan_id="p1")
    assert len(recorded) == 3 and all(p["hardware"] for p in recorded)


def test_cbt_reset_falls_back_to_a_full_read_that_is_still_identical(world: World) -> None:
    sim = world.sim
    vm_sim = sim.vms()[0]
    key = vm_sim["disks"][0]["key"]
    sim.write(vm_sim["moref"], key, MiB, os.urandom(300_000))
    synced(world)
    vm = next(v for v in world.vms() if v["moref"] == vm_sim["moref"])
    machine = protect_vm(world, vm)
    assert replicate(world)["state"] == "succeeded"
    sim.reset_cbt(vm_sim["moref"], key)
    sim.write(vm_sim["moref"], key, 5 * MiB, os.urandom(100_000))
    expected = sim.read_current(vm_sim["moref"], key)
    job = replicate(world)
    assert job["state"] == "succeeded", job
    disk = job["result"]["machines"][0]["disks"][0]
    assert disk["read"] == "full" and "reset" in disk["read_note"]
    assert "reset" in job["progress"]["message"]
    assert restored(world, machine["disks"][0]["disk_id"], disk["point_id"]) == expected
    point = world.repo().read_point(disk["disk_id"], disk["point_id"])
    assert point.stats.blocks_new <= 2  # deduplicated against the previous point


def test_snapshot_is_removed_after_a_failure_mid_read_and_no_point_is_made(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = world.sim
    vm_sim = sim.vms()[0]
    sim.write(vm_sim["moref"], vm_sim["disks"][0]["key"], 0, os.urandom(4 * MiB))
    synced(world)
    vm = next(v for v in world.vms() if v["moref"] == vm_sim["moref"])
    protect_vm(world, vm)
    calls = {"n": 0}
    real_read = datastore.FlatDisk.read

    def failing(self: datastore.FlatDisk, offset: int, length: int) -> bytes:
        calls["n"] += 1
        if calls["n"] > 2:
            raise SourceError("injected: datastore read failed")
        return real_read(self, offset, length)

    monkeypatch.setattr(datastore.FlatDisk, "read", failing)
    job = replicate(world)
    assert job["state"] == "failed" and "injected" in job["errors"][-1]
    assert snapshots_of(sim, vm_sim["moref"]) == 0
    assert world.operator.points(plan_id="p1") == []


def test_wrong_password_unreachable_and_untrusted_certificate_fail_clearly(world: World) -> None:
    sim, pki = world.sim, world.pki
    good = VCenterTls(ca_pem=pki.ca_pem)
    with pytest.raises(AuthenticationError, match=r"site vc: .*user name or password"):
        connect(Endpoint("vc", sim.url, sim.username, "wrong", good))
    with pytest.raises(SourceError, match=r"site vc: .*unreachable"):
        connect(Endpoint("vc", "https://127.0.0.1:1/sdk", sim.username, sim.password, good))
    with pytest.raises(SourceError, match=rf"site vc: .*not trusted.*{pki.thumbprint}"):
        connect(Endpoint("vc", sim.url, sim.username, sim.password, VCenterTls()))
    with pytest.raises(SourceError, match="pinned thumbprint"):
        connect(Endpoint("vc", sim.url, sim.username, sim.password, VCenterTls(thumbprint="ab" * 32)))
    connect(Endpoint("vc", sim.url, sim.username, sim.password, VCenterTls(thumbprint=pki.thumbprint))).close()

    # through the control plane: the sync job fails naming the site; nothing is stored
    site = world.operator.request("PUT", "/sites/vc/vcenter", {"url": sim.url, "username": sim.username,
                                                               "password": "wrong", "tls": {"ca_pem": pki.ca_pem}})  # fmt: skip
    job = world.run_next_job()
    assert job["id"] == site["sync_job"]["id"] and job["state"] == "failed"
    assert "site vc" in job["errors"][-1] and "password" in job["errors"][-1]
    assert world.vms() == []
    status = world.operator.request("GET", "/sites/vc")["last_inventory_sync"]
    assert status["ok"] is False and "site vc" in status["error"]


def test_bad_certificate_fails_replication_with_no_point(world: World) -> None:
    sim = world.sim
    synced(world)
    vm = world.vms()[0]
    protect_vm(world, vm)
    world.connect_vcenter(thumbprint="cd" * 32)
    world.run_next_job()  # the sync that the new connection queued fails too
    job = replicate(world)
    assert job["state"] == "failed" and "pinned thumbprint" in job["errors"][-1]
    assert world.operator.points(plan_id="p1") == []
    assert all(v["snapshots"] == 0 for v in sim.vms())


def test_a_plan_naming_a_file_outside_the_allowed_roots_is_refused_before_reading(world: World) -> None:
    world.operator.create_plan(id="bad", name="bad", source_site_id="dr", target_site_id="dr",
                               machines=[{"machine_id": "x", "disks": [{"disk_id": "x-d0", "source": "/etc/shadow"}]}])  # fmt: skip
    world.operator.plan_action("bad", "protect")
    job = replicate(world, "bad")
    assert job["state"] == "failed"
    assert "/etc/shadow is outside this node's allowed source roots" in job["errors"][-1]
    assert not (world.tmp / "repo").exists() or world.repo().list_points() == []


def test_a_killed_node_leaves_its_snapshot_and_the_restarted_node_sweeps_it(world: World, tmp_path: Path) -> None:
    sim = world.sim
    vm_sim = sim.vms()[0]
    sim.write(vm_sim["moref"], vm_sim["disks"][0]["key"], 0, os.urandom(8 * MiB))
    synced(world)
    vm = next(v for v in world.vms() if v["moref"] == vm_sim["moref"])
    machine = protect_vm(world, vm)
    plan = world.operator.request("GET", "/plans/p1")
    world.operator.request("PUT", "/plans/p1", {**{k: plan[k] for k in plan if k not in (
        "id", "created_at", "updated_at", "state")}, "bandwidth_limit_mbps": 0.5, "machines": [machine]})  # fmt: skip
    world.operator.plan_action("p1", "replicate-now")
    token = tmp_path / "node.token"
    token.write_text(world.control.tokens["node1"])
    cmd = [sys.executable, "-m", "cli.main", "node", "run", "--api", world.url, "--site", "dr", "--name", "n1",
           "--token-file", str(token), "--poll-seconds", "0.2", "--source-site", "vc", "--source-root", str(tmp_path)]  # fmt: skip
    log = (tmp_path / "node.log").open("w")
    node = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 60
        while snapshots_of(sim, vm_sim["moref"]) == 0:
            assert time.monotonic() < deadline and node.poll() is None, (tmp_path / "node.log").read_text()
            time.sleep(0.1)
        time.sleep(0.5)
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        assert snapshots_of(sim, vm_sim["moref"]) == 1  # left behind by the killed node
        removed = world.new_agent()
        removed.register()
        assert removed.sweep_snapshots() and snapshots_of(sim, vm_sim["moref"]) == 0
    finally:
        if node.poll() is None:
            node.kill()
        log.close()


def test_a_plan_built_from_inventory_recovers_into_qemu_sized_from_the_vm_and_boots(
    world: World, tmp_path: Path
) -> None:
    from pyVmomi import vim

    from functions.recovery.node_jobs import job_runners
    from functions.recovery.targets import build_target
    from node_runtime.sources.vsphere.snapshots import wait_task
    from tests.support.bootdisk import boot_line, build_boot_disk

    sim = world.sim
    vm_sim = sim.vms()[0]
    image = build_boot_disk(tmp_path / "boot.img", marker="vsphere-vm1", size_mib=64)
    sim.load(vm_sim["moref"], vm_sim["disks"][0]["key"], image)
    session = connect(Endpoint("vc", sim.url, sim.username, sim.password, VCenterTls(ca_pem=world.pki.ca_pem)))
    try:  # a BIOS VM (the boot disk has no EFI loader) of 1 vCPU and 384 MiB: the instance gets the same
        vm = session.content.searchIndex.FindByUuid(None, vm_sim["uuid"], True, True)
        wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(numCPUs=1, memoryMB=384, firmware="bios")), "resize")
    finally:
        session.close()
    world.operator.request("PUT", "/sites/dr", {
        **{k: v for k, v in world.operator.request("GET", "/sites/dr").items()
           if k not in ("id", "created_at", "updated_at", *SITE_SERVER_FIELDS)},
        "recovery_target": {"platform": "qemu", "work_dir": str(tmp_path / "vms")}})  # fmt: skip
    synced(world)
    vm_row = next(v for v in world.vms() if v["moref"] == vm_sim["moref"])
    machine = world.operator.request("POST", f"/inventory/vms/{vm_row['id']}/machine", {"machine_id": "vm1"})
    world.operator.create_plan(
        id="p1", name="from inventory", source_site_id="vc", target_site_id="dr", rpo_minutes=600,
        machines=[{**machine, "boot_marker": boot_line("vsphere-vm1")}], boot_timeout_seconds=180,
        network_mapping=[{"source_network": n, "target_network": "lan", "test_network": "bubble"}
                         for n in dict.fromkeys(machine["networks"])],
    )  # fmt: skip
    world.operator.plan_action("p1", "protect")
    world.agent.runners.update(job_runners(build_target))
    job = replicate(world)
    assert job["state"] == "succeeded", job
    hardware = job["result"]["machines"][0]["hardware"]
    assert hardware["memory_mb"] == 384 and hardware["firmware"] == "bios"
    recovery = world.operator.request("POST", "/plans/p1/recover", {"mode": "test"})
    try:
        done = world.run_next_job()
        assert done["id"] == recovery["id"] and done["state"] == "succeeded", done
        report = world.operator.request("GET", f"/recoveries/{recovery['id']}")
        (m,) = [m for g in report["groups"] for m in g["machines"]]
        assert m["status"] == "recovered", m
        assert m["evidence"]["ok"] and "BOOT-OK vsphere-vm1" in m["evidence"]["excerpt"], m
        spec = json.loads(next((tmp_path / "vms").rglob("vm.json")).read_text())
        assert spec["cpus"] == 1 and spec["memory_mib"] == 384 and spec["firmware"] == "bios"
    finally:  # a machine that failed validation is kept for inspection until the test is cleaned up
        world.operator.plan_action("p1", "cleanup-test")
        cleaned = world.run_next_job()
    assert cleaned["state"] == "succeeded", cleaned
