"""The failback cycle's refusals through the API (in process, SQLite): wrong states, an
unsupported failover, unknown origins, RBAC, and the audit trail. The cycle itself runs
against real QEMU in test_failback.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.domain.failback import Failback, FailbackStep, ReverseDisk, ReverseMachine
from shared.domain.plans import PlanState, ProtectionPlan
from tests.support.control import InProcessApi


@pytest.fixture
def control(tmp_path: Path) -> InProcessApi:
    c = InProcessApi(tmp_path)
    site = {"id": "local", "name": "here", "site_kind": "local", "repository_url": str(tmp_path / "repo"),
            "recovery_target": {"platform": "qemu", "work_dir": str(tmp_path / "vms")}}  # fmt: skip
    assert c.call("POST", "/sites", site, as_="admin").status == 201
    plan = {"id": "app", "name": "App", "source_site_id": "local", "target_site_id": "local",
            "machines": [{"machine_id": "app", "disks": [{"disk_id": "app-d0", "source": str(tmp_path / "a.img")}]}]}  # fmt: skip
    assert c.call("POST", "/plans", plan, as_="operator").status == 201
    return c


def failed_over(c: InProcessApi, *, origin: str = "/data/a.qcow2", unsupported: str | None = None) -> None:
    store = c.ctl.store
    plan = store.get(ProtectionPlan, "app")
    store.update(plan.model_copy(update={"state": PlanState.FAILED_OVER}))
    store.create(Failback(
        id="app", plan_id="app", platform="qemu", target_site_id="local", failover_job_id="job-f1",
        unsupported=unsupported,
        machines=[ReverseMachine(machine_id="app", instance_id="i-1", qmp_socket="/tmp/x.qmp", vm_uuid="u-1",
                                 disks=[ReverseDisk(disk_id="app-d0", reverse_disk_id="app-d0.r1", seed_point_id="p1",
                                                    source="device:0", origin=origin)])],
        history=[FailbackStep(phase="failed-over", at=datetime.now(UTC), actor="operator", job_id="job-f1")],
    ))  # fmt: skip


def test_nothing_to_fail_back_before_a_failover(control: InProcessApi) -> None:
    for path in ("/plans/app/reverse-protect", "/plans/app/failback"):
        reply = control.call("POST", path, {} if path.endswith("failback") else None, as_="operator")
        assert reply.status == 404 and "has not failed over" in reply.body["error"]["message"]
    assert control.call("GET", "/plans/app/failback", as_="viewer").status == 404


def test_failback_needs_reverse_protection_first_and_readers_cannot_act(control: InProcessApi) -> None:
    failed_over(control)
    reply = control.call("POST", "/plans/app/failback", {}, as_="operator")
    assert reply.status == 409 and "start reverse protection first" in reply.body["error"]["message"]
    assert control.call("POST", "/plans/app/reverse-protect", as_="viewer").status == 403
    assert control.call("POST", "/plans/app/failback", {"verify": "yes please"}, as_="operator").status == 422
    started = control.call("POST", "/plans/app/reverse-protect", as_="operator")
    assert started.status == 201 and started.body["job_kind"] == "reverse-replication"
    params = started.body["params"]
    assert params["machines"][0]["disks"][0] == {"disk_id": "app-d0.r1", "source": "device:0", "seed_parent": ["app-d0", "p1"]}
    assert params["source"]["kvm"]["qmp_sockets"] == ["/tmp/x.qmp"]
    fb = control.call("GET", "/plans/app/failback", as_="viewer").body
    assert fb["phase"] == "reverse-protecting" and fb["reverse_job_id"] == started.body["id"]
    assert control.call("GET", "/plans/app", as_="viewer").body["state"] == "reverse-protecting"
    again = control.call("POST", "/plans/app/failback", {}, as_="operator")
    assert again.status == 409 and "wait for it" in again.body["error"]["message"]  # the reverse run is still queued
    audit = control.call("GET", "/audit", as_="admin").body["items"]
    assert any(e["action"] == "POST /plans/<plan_id>/reverse-protect" and e["status"] == 201 for e in audit)


def test_unsupported_failover_and_unknown_origin_are_refused_with_the_reason(control: InProcessApi) -> None:
    failed_over(control, unsupported="machines recovered into aws cannot be protected in reverse yet")
    reply = control.call("POST", "/plans/app/reverse-protect", as_="operator")
    assert reply.status == 409 and "recovered into aws" in reply.body["error"]["message"]

    store = control.ctl.store
    fb = store.get(Failback, "app")
    store.update(fb.model_copy(update={"unsupported": None, "phase": "reverse-protecting",
                                       "machines": [fb.machines[0].model_copy(update={"disks": [
                                           fb.machines[0].disks[0].model_copy(update={"origin": ""})]})]}))  # fmt: skip
    plan = store.get(ProtectionPlan, "app")
    store.update(plan.model_copy(update={"state": PlanState.REVERSE_PROTECTING}))
    reply = control.call("POST", "/plans/app/failback", {}, as_="operator")
    assert reply.status == 409 and "origin of disk(s) app-d0 is unknown" in reply.body["error"]["message"]
