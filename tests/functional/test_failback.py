"""The failback cycle end to end (marker ``failback``): the REST API over loopback HTTP,
SQLite, a real node agent, real QEMU.

protect a qcow2 boot disk -> failover into QEMU (real TCG boot, validated) -> the recovered
VM writes -> reverse protection (its dirty bitmaps over NBD) -> failback writes into the
origin image only the blocks that differ -> forward protection resumes incrementally.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from functions.api import app as api
from functions.embedded.http_server import make_server, serve_in_thread
from functions.recovery.node_jobs import job_runners
from functions.recovery.targets import build_target
from node_runtime.agent import NodeAgent
from node_runtime.recovery.restore import restore
from node_runtime.sources.kvm.qmp import Qmp
from node_runtime.sources.resolve import SourcePolicy
from shared.adapters.local.folder_store import FolderStore
from shared.api_client import ApiClient
from shared.errors import LifeboatError
from shared.repo.repository import Repository
from tests.support import bootdisk
from tests.support.control import InProcessApi
from tests.support.kvm import KvmVm

pytestmark = pytest.mark.failback
MiB = 1 << 20
SIZE = 32 * MiB


def qemu_pids_under(folder: Path) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-x86_64") and any(str(folder).encode() in a for a in argv):
            pids.append(int(cmdline.parent.name))
    return pids


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.control = InProcessApi(tmp)
        self.server = make_server(SimpleNamespace(resolve=api.resolve), "127.0.0.1", 0)
        serve_in_thread(self.server)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.operator = ApiClient(self.url, self.control.tokens["operator"])
        policy = SourcePolicy(allowed_roots=[tmp], source_sites=["*"], scratch_dir=tmp / "scratch")
        self.agent = NodeAgent(ApiClient(self.url, self.control.tokens["node1"]), name="n1", site_id="local",
                               runners=job_runners(build_target), progress_seconds=0.2, source_policy=policy)  # fmt: skip
        self.marker = f"fb-{uuid.uuid4().hex[:10]}"
        raw = bootdisk.build_boot_disk(tmp / "boot.raw", marker=self.marker, size_mib=SIZE // MiB, stay=True)
        self.origin = tmp / "app.qcow2"
        subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(self.origin)], check=True)
        self.repo_dir = tmp / "repo"

    def run_next_job(self) -> dict[str, Any]:
        job = self.agent.client.claim(self.agent.node_id)
        assert job is not None, "no job to claim"
        self.agent.run_job(job)
        return self.operator.job(job["id"])

    def action(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        job = self.operator.request("POST", f"/plans/app/{path}", body)
        done = self.run_next_job()
        assert done["id"] == job["id"]
        return done

    def repo(self) -> Repository:
        return Repository.open(FolderStore(self.repo_dir), lambda: "")

    def origin_bytes(self) -> bytes:
        out = self.tmp / "origin-now.raw"
        subprocess.run(["qemu-img", "convert", "-q", "-O", "raw", str(self.origin), str(out)], check=True)
        return out.read_bytes()

    def point_bytes(self, disk_id: str, point_id: str) -> bytes:
        repo = self.repo()
        out = self.tmp / f"point-{point_id}.raw"
        restore(repo, repo.read_point(disk_id, point_id), str(out))
        return out.read_bytes()


def qemu_io(image: Path, command: str) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(image)], check=True, capture_output=True)


def guest_write(qmp_socket: str, offset: int, length: int, pattern: int) -> None:
    """A write by the recovered VM: through its drive, while it runs (the block layer a guest uses)."""
    with Qmp(qmp_socket) as qmp:
        qmp.cmd("human-monitor-command", **{"command-line": f'qemu-io disk0 "write -P {pattern} {offset} {length}"'})


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.delenv("LIFEBOAT_PASSWORD", raising=False)  # an unencrypted repository
    w = World(tmp_path)
    try:
        w.operator.create_site(id="local", name="here", site_kind="local", repository_url=str(w.repo_dir),
                               recovery_target={"platform": "qemu", "work_dir": str(tmp_path / "vms")})  # fmt: skip
        w.operator.create_plan(
            id="app", name="App", source_site_id="local", target_site_id="local", rpo_minutes=600,
            boot_timeout_seconds=120,
            machines=[{"machine_id": "app", "boot_marker": bootdisk.boot_line(w.marker),
                       "disks": [{"disk_id": "app-d0", "source": str(w.origin), "block_size": 256 * 1024}]}],
        )  # fmt: skip
        w.operator.plan_action("app", "protect")
        w.agent.register()
        w.operator.plan_action("app", "replicate-now")
        assert w.run_next_job()["state"] == "succeeded"
        yield w
    finally:
        w.server.shutdown()
        for pid in qemu_pids_under(tmp_path):  # never leak a QEMU, whatever failed
            os.kill(pid, signal.SIGKILL)


def test_failover_reverse_protect_failback_and_resume(world: World) -> None:
    w = world
    forward = w.operator.points(plan_id="app")[0]["disks"][0]
    qemu_io(w.origin, f"write -P 0x71 {30 * MiB} 4096")  # reached the origin after its last point: lost in the failover

    # failover: a real boot, validated on the serial console
    done = w.action("recover", {"mode": "failover"})
    assert done["state"] == "succeeded", done["errors"]
    assert w.operator.request("GET", "/plans/app")["state"] == "failed-over"
    fb = w.operator.request("GET", "/plans/app/failback")
    (machine,) = fb["machines"]
    assert fb["phase"] == "failed-over" and machine["disks"][0]["origin"] == str(w.origin)
    with pytest.raises(LifeboatError, match="protect them in reverse"):
        w.operator.plan_action("app", "replicate-now")

    # the recovered machine works: its writes go into the reverse lineage
    guest_write(machine["qmp_socket"], 28 * MiB + 512, 8192, 0x5C)
    first = w.action("reverse-protect")
    assert first["state"] == "succeeded", first["errors"]
    assert w.operator.request("GET", "/plans/app")["state"] == "reverse-protecting"
    (r1,) = first["result"]["machines"][0]["disks"]
    assert r1["disk_id"] == "app-d0.r1" and r1["read"] == "full"  # no bitmap yet: read, deduplicated vs the failover point
    assert r1["bytes_new"] <= 256 * 1024, "only the recovered machine's change is stored"

    guest_write(machine["qmp_socket"], 29 * MiB, 300 * 1024, 0x5D)
    second = w.action("reverse-protect")
    (r2,) = second["result"]["machines"][0]["disks"]
    assert r2["read"] == "changed" and r2["bytes_new"] <= 3 * 256 * 1024
    reverse_points = [p for p in w.operator.points(plan_id="app") if p.get("direction") == "reverse"]
    assert len(reverse_points) == 2

    # the origin is missing: refused before anything is paused or written
    w.origin.rename(w.tmp / "app.qcow2.away")
    refused = w.action("failback", {})
    assert refused["state"] == "failed" and "not reachable" in refused["errors"][-1]
    assert w.operator.request("GET", "/plans/app")["state"] == "reverse-protecting"
    (w.tmp / "app.qcow2.away").rename(w.origin)

    guest_write(machine["qmp_socket"], 31 * MiB, 4096, 0x5E)  # up to the pause, nothing is lost
    back = w.action("failback", {})
    assert back["state"] == "succeeded", back["errors"]
    (final,) = back["result"]["replication"]["machines"][0]["disks"]
    expected = w.point_bytes("app-d0.r1", final["point_id"])
    origin = w.origin_bytes()
    assert origin == expected
    assert origin[31 * MiB : 31 * MiB + 4096] == b"\x5e" * 4096 and origin[30 * MiB : 30 * MiB + 4096] != b"\x71" * 4096
    (written,) = back["result"]["failback"]["written"]
    # changed: 28 MiB (1 block), 29 MiB (2 blocks), 31 MiB (1 block); dirty on the origin: 30 MiB (1 block)
    assert (written["changed_blocks"], written["dirty_blocks"], written["written_blocks"]) == (4, 1, 5)
    assert written["written_bytes"] <= 5 * 256 * 1024 and written["written_bytes"] * 20 < SIZE
    assert w.operator.request("GET", "/plans/app")["state"] == "active"
    assert w.operator.request("GET", "/plans/app/failback")["phase"] == "protected"
    # the recovered machine and everything the failover made are gone
    assert back["result"]["cleanup"]["failed"] == []
    assert qemu_pids_under(w.tmp / "vms") == []

    # forward protection resumes from the failback point, incrementally
    qemu_io(w.origin, f"write -P 0x22 {27 * MiB} 4096")
    w.operator.plan_action("app", "replicate-now")
    resumed = w.run_next_job()
    (f2,) = resumed["result"]["machines"][0]["disks"]
    assert f2["read"] == "changed" and f2["bytes_new"] <= 256 * 1024
    repo = w.repo()
    assert repo.read_point("app-d0", f2["point_id"]).parent == written["point_id"] != forward["point_id"]
    assert w.point_bytes("app-d0", f2["point_id"]) == w.origin_bytes()


def test_a_running_kvm_vm_fails_over_and_back_into_its_own_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The KVM host case: the origin is a running VM behind a QMP socket, found through the
    kvm site's inventory; after failback it starts again on its image and its persistent
    dirty bitmap (written by failback) makes the next forward run incremental."""
    monkeypatch.delenv("LIFEBOAT_PASSWORD", raising=False)
    w = World(tmp_path)
    origin_vm = KvmVm(tmp_path / "kvmhost", "shop", [SIZE], boot_raw=tmp_path / "boot.raw", memory_mib=256)
    try:
        origin_vm.start()
        op = w.operator
        op.create_site(id="kvmhost", name="KVM host", site_kind="kvm", repository_url=str(w.repo_dir))
        op.create_site(id="local", name="here", site_kind="local", repository_url=str(w.repo_dir),
                       recovery_target={"platform": "qemu", "work_dir": str(tmp_path / "vms")})  # fmt: skip
        w.agent.register()
        op.request("PUT", "/sites/kvmhost/kvm", {"qmp_sockets": [str(origin_vm.qmp_socket)]})
        assert w.run_next_job()["state"] == "succeeded"  # the inventory sync
        (vm,) = op.request("GET", "/inventory/vms", params={"site_id": "kvmhost"})["items"]
        machine = op.request("POST", f"/inventory/vms/{vm['id']}/machine", {"machine_id": "shop"})
        machine["boot_marker"] = bootdisk.boot_line(w.marker)
        machine["disks"][0]["block_size"] = 256 * 1024
        op.create_plan(id="app", name="Shop", source_site_id="kvmhost", target_site_id="local", rpo_minutes=600,
                       boot_timeout_seconds=120, machines=[machine])  # fmt: skip
        op.plan_action("app", "protect")
        op.plan_action("app", "replicate-now")
        first = w.run_next_job()
        assert first["state"] == "succeeded", first["errors"]
        disk_id = machine["disks"][0]["disk_id"]

        origin_vm.write(0, 30 * MiB, 4096, 0x71)  # after the last point: lost in the disaster
        origin_vm.stop()  # the disaster
        failover = w.action("recover", {"mode": "failover"})
        assert failover["state"] == "succeeded", failover["errors"]
        fb = op.request("GET", "/plans/app/failback")
        assert fb["machines"][0]["disks"][0]["origin"] == str(origin_vm.images[0])
        guest_write(fb["machines"][0]["qmp_socket"], 28 * MiB, 8192, 0x5C)
        assert w.action("reverse-protect")["state"] == "succeeded"
        back = w.action("failback", {})
        assert back["state"] == "succeeded", back["errors"]
        (final,) = back["result"]["replication"]["machines"][0]["disks"]
        image = tmp_path / "shop-now.raw"
        subprocess.run(["qemu-img", "convert", "-q", "-O", "raw", str(origin_vm.images[0]), str(image)], check=True)
        assert image.read_bytes() == w.point_bytes(f"{disk_id}.r1", final["point_id"])
        (written,) = back["result"]["failback"]["written"]
        assert (written["changed_blocks"], written["dirty_blocks"]) == (1, 1)

        origin_vm.start()  # back on its own image, with the bitmap failback left in it
        origin_vm.write(0, 27 * MiB, 4096, 0x22)
        op.plan_action("app", "replicate-now")
        resumed = w.run_next_job()
        (f2,) = resumed["result"]["machines"][0]["disks"]
        assert f2["read"] == "changed" and f2["bytes_new"] <= 256 * 1024, f2
        assert w.repo().read_point(disk_id, f2["point_id"]).parent == written["point_id"]
    finally:
        origin_vm.stop()
        w.server.shutdown()
        for pid in qemu_pids_under(tmp_path):
            os.kill(pid, signal.SIGKILL)
