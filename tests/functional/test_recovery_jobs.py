"""Recovery modes through the control plane: the REST API in process behind the embedded
HTTP server on loopback, SQLite, a real node agent (with the recovery runners the CLI
wires in) and the in-memory target. Test, failover and migration, point choice, the
stored reports and the test cleanup.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from functions.api import app as api
from functions.embedded.http_server import make_server, serve_in_thread
from functions.recovery.node_jobs import job_runners
from node_runtime.agent import NodeAgent
from node_runtime.sources.resolve import SourcePolicy
from shared.api_client import ApiClient
from shared.errors import LifeboatError
from tests.support.control import InProcessApi
from tests.support.disks import MiB, create, mutate
from tests.support.fake_target import FakeTarget


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.control = InProcessApi(tmp)
        self.server = make_server(SimpleNamespace(resolve=api.resolve), "127.0.0.1", 0)
        serve_in_thread(self.server)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.operator = ApiClient(self.url, self.control.tokens["operator"])
        self.fake = FakeTarget()
        self.agent = NodeAgent(ApiClient(self.url, self.control.tokens["node1"]), name="n1", site_id="local",
                               runners=job_runners(lambda _cfg: self.fake.target()), progress_seconds=0.2,
                               source_policy=SourcePolicy(allowed_roots=[tmp]))  # fmt: skip
        self.images = {m: create(tmp / f"{m}.img", 2 * MiB, seed=80 + i) for i, m in enumerate(("db", "web"))}

    def run_next_job(self) -> dict[str, Any]:
        job = self.agent.client.claim(self.agent.node_id)
        assert job is not None, "no job to claim"
        self.agent.run_job(job)
        return self.operator.job(job["id"])


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.delenv("LIFEBOAT_PASSWORD", raising=False)  # an unencrypted repository
    w = World(tmp_path)
    w.operator.create_site(id="local", name="here", site_kind="local", repository_url=str(tmp_path / "repo"),
                           recovery_target={"platform": "qemu", "work_dir": str(tmp_path / "vms")})  # fmt: skip
    w.operator.create_plan(
        id="shop", name="Shop", source_site_id="local", target_site_id="local", rpo_minutes=600,
        machines=[{"machine_id": m, "networks": ["lan"], "disks": [{"disk_id": f"{m}-d0", "source": str(p)}]}
                  for m, p in w.images.items()],
        network_mapping=[{"source_network": "lan", "target_network": "prod-lan", "test_network": "bubble"}],
        boot_groups=[{"name": "data", "machines": ["db"]}, {"name": "front", "machines": ["web"]}],
    )  # fmt: skip
    w.operator.plan_action("shop", "protect")
    w.agent.register()
    w.operator.plan_action("shop", "replicate-now")
    assert w.run_next_job()["state"] == "succeeded"
    yield w
    w.server.shutdown()


def recover(w: World, mode: str, **extra: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    job = w.operator.request("POST", "/plans/shop/recover", {"mode": mode, **extra})
    done = w.run_next_job()
    assert done["id"] == job["id"]
    return done, w.operator.request("GET", f"/recoveries/{job['id']}")


def test_test_recovery_report_and_cleanup(world: World) -> None:
    done, report = recover(world, "test")
    assert done["state"] == "succeeded" and done["job_kind"] == "test-recovery"
    assert report["state"] == "succeeded" and report["cleanup_state"] == "pending"
    assert {n for n in (r.detail.get("network") for r in world.fake.created) if n} == {"bubble"}
    assert world.operator.request("GET", "/plans/shop")["state"] == "active"  # replication goes on
    listed = world.operator.request("GET", "/recoveries", params={"plan_id": "shop"})["items"]
    assert [r["id"] for r in listed] == [done["id"]]

    with pytest.raises(LifeboatError, match="clean it up first"):
        world.operator.request("POST", "/plans/shop/recover", {"mode": "test"})
    cleanup = world.operator.request("POST", "/plans/shop/cleanup-test")
    assert world.run_next_job()["state"] == "succeeded"
    after = world.operator.request("GET", f"/recoveries/{done['id']}")
    assert after["cleanup_state"] == "cleaned" and after["cleanup_job_id"] == cleanup["id"]
    assert world.fake.live == {}
    with pytest.raises(LifeboatError, match="no test recovery to clean up"):
        world.operator.request("POST", "/plans/shop/cleanup-test")


def test_failover_pauses_replication_and_uses_production_networks(world: World) -> None:
    done, report = recover(world, "failover")
    assert done["state"] == "succeeded" and done["job_kind"] == "recovery"
    assert report["mode"] == "failover" and report["cleanup_state"] == "not-needed"
    assert world.operator.request("GET", "/plans/shop")["state"] == "failed-over"  # the failback cycle starts
    fb = world.operator.request("GET", "/plans/shop/failback")
    assert fb["phase"] == "failed-over" and "without a QMP socket" in fb["unsupported"]  # the fake target has none
    assert {n for n in (r.detail.get("network") for r in world.fake.created) if n} == {"prod-lan"}
    with pytest.raises(LifeboatError):
        world.operator.request("POST", "/plans/shop/cleanup-test")
    # the origin came back without a failback: resuming closes the cycle
    assert world.operator.plan_action("shop", "resume")["state"] == "active"
    assert world.operator.request("GET", "/plans/shop/failback")["phase"] == "protected"


def test_migration_runs_a_final_incremental_and_recovers_it(world: World) -> None:
    first = {p["machine_id"]: p["id"] for p in world.operator.points(plan_id="shop")}
    mutate(world.images["web"], 0.1, seed=5)
    done, report = recover(world, "migration")
    assert done["state"] == "succeeded", done["errors"]
    points = world.operator.points(plan_id="shop")
    final = {p["machine_id"]: p["id"] for p in points if p["run_id"] == done["id"]}
    assert set(final) == {"db", "web"} and final != first  # the final incremental was recorded
    machines = {m["machine_id"]: m for g in report["groups"] for m in g["machines"]}
    assert {m: machines[m]["recovery_point_id"] for m in machines} == final
    assert any("migration" in n for n in report["notes"])
    web_disk = next(r.id for r in world.fake.created if r.type == "disk" and r.detail["machine"] == "web")
    assert bytes(world.fake.disks[web_disk]) == world.images["web"].read_bytes()  # the cut-over state
    assert world.operator.request("GET", "/plans/shop")["state"] == "paused"


def test_a_chosen_time_before_any_point_is_refused_with_the_reason(world: World) -> None:
    with pytest.raises(LifeboatError, match="no recovery point"):
        world.operator.request(
            "POST", "/plans/shop/recover", {"mode": "test", "point_time": "2001-01-01T00:00:00Z"}
        )


def test_a_partial_recovery_fails_the_job_but_keeps_the_report(world: World) -> None:
    from shared.errors import TargetError

    world.fake.fail[("create_instance", "web")] = TargetError("no capacity")
    done, report = recover(world, "test")
    assert done["state"] == "failed" and "web" in done["errors"][-1]
    assert report["state"] == "partial"
    web = next(m for g in report["groups"] for m in g["machines"] if m["machine_id"] == "web")
    assert web["failed_stage"] == "create-instance" and web["resources"] == []
