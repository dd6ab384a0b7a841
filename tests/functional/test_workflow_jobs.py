"""Recovery runs handed to a workflow engine (Step Functions in AWS), and their ends coming
back as execution-status events: the control plane's side, on SQLite with a recording
starter. The engine itself is exercised in test_aws_walkthrough.py (moto) and
test_recovery_flow.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from functions.recovery.execution_events import handle
from shared.domain.jobs import Job
from shared.domain.points import DiskPoint, RecoveryPoint
from shared.domain.recovery import RecoveryReport
from shared.errors import TransientStoreError
from tests.support.control import InProcessApi


class Starter:
    def __init__(self) -> None:
        self.started: list[tuple[str, str, dict[str, Any]]] = []
        self.fail: Exception | None = None

    def start(self, flow: str, execution_name: str, payload: dict[str, Any]) -> str:
        if self.fail:
            raise self.fail
        self.started.append((flow, execution_name, payload))
        return f"arn:aws:states:us-east-1:1:execution:{flow}:{execution_name}"


@pytest.fixture
def api(tmp_path: Path) -> InProcessApi:
    a = InProcessApi(tmp_path)
    a.ctl.workflows = Starter()
    site = {"id": "dr", "name": "dr", "site_kind": "aws", "repository_url": "s3://b/p",
            "recovery_target": {"platform": "qemu", "work_dir": "/tmp/never"}}  # fmt: skip
    assert a.call("POST", "/sites", site, as_="operator").status == 201
    plan = {"id": "web", "name": "web", "source_site_id": "dr", "target_site_id": "dr",
            "machines": [{"machine_id": "w1", "disks": [{"disk_id": "w1-d0", "source": "/x"}]}]}  # fmt: skip
    assert a.call("POST", "/plans", plan, as_="operator").status == 201
    assert a.call("POST", "/plans/web/protect", as_="operator").status == 200
    a.ctl.store.create(RecoveryPoint(id="r1-w1", plan_id="web", machine_id="w1", run_id="r1", site_id="dr",
                                     time=datetime(2026, 11, 25, 11, 0, tzinfo=UTC),
                                     disks=[DiskPoint(disk_id="w1-d0", point_id="p", disk_size=1)]))  # fmt: skip
    return a


def report_for(job: dict[str, Any], state: str = "succeeded") -> dict[str, Any]:
    now = datetime.now(UTC)
    return RecoveryReport(id=job["id"], plan_id="web", job_id=job["id"], mode="test", platform="qemu", state=state,
                          started_at=now, finished_at=now).model_dump(mode="json")  # fmt: skip


def event(job_id: str, status: str, **detail: Any) -> dict[str, Any]:
    return {"detail": {"name": job_id, "status": status, "executionArn": f"arn:x:{job_id}", **detail}}


def test_a_recovery_starts_an_execution_named_after_its_job(api: InProcessApi) -> None:
    reply = api.call("POST", "/plans/web/recover", {"mode": "test"}, as_="operator")
    assert reply.status == 201, reply.body
    job = reply.body
    flow, name, payload = api.ctl.workflows.started[0]  # type: ignore[union-attr]
    assert (flow, name) == ("recovery", job["id"]) and payload == job["params"]["flow"]
    assert job["state"] == "running" and job["params"]["runner"] == "workflow"
    assert job["result"]["execution"].endswith(job["id"])
    # no node may claim it: nothing was queued
    assert api.call("POST", "/nodes/register", {"name": "n", "site_id": "dr"}, as_="node").status == 201
    assert api.call("POST", "/nodes/node-1/claim", as_="node").body is None


def test_the_execution_end_finishes_the_job_once_and_stores_the_report(api: InProcessApi) -> None:
    job = api.call("POST", "/plans/web/recover", {"mode": "test"}, as_="operator").body
    output = json.dumps({"report": report_for(job)})
    assert handle(event(job["id"], "RUNNING"), ctl=api.ctl) == {"ignored": "RUNNING"}
    assert handle(event(job["id"], "SUCCEEDED", output=output), ctl=api.ctl)["state"] == "succeeded"
    assert handle(event(job["id"], "SUCCEEDED", output=output), ctl=api.ctl)["already_ended"]
    assert api.ctl.store.get(RecoveryReport, job["id"]).state == "succeeded"


def test_an_output_too_big_for_the_event_is_read_from_the_execution(api: InProcessApi) -> None:
    job = api.call("POST", "/plans/web/recover", {"mode": "test"}, as_="operator").body

    class Sfn:
        def describe_execution(self, executionArn: str) -> dict[str, Any]:
            assert executionArn == f"arn:x:{job['id']}"
            return {"output": json.dumps({"report": report_for(job, "partial")})}

    assert handle(event(job["id"], "SUCCEEDED"), ctl=api.ctl, sfn=Sfn())["state"] == "failed"
    stored = api.ctl.store.get(Job, job["id"])
    assert stored.errors[-1].startswith("recovery partial")
    assert api.ctl.store.get(RecoveryReport, job["id"]).state == "partial"


def test_a_failed_execution_fails_the_job_with_its_cause(api: InProcessApi) -> None:
    job = api.call("POST", "/plans/web/recover", {"mode": "failover"}, as_="operator").body
    handle(event(job["id"], "TIMED_OUT", error="States.Timeout", cause="execution timed out"), ctl=api.ctl)
    stored = api.ctl.store.get(Job, job["id"])
    assert (
        stored.state == "failed"
        and "timed_out" in stored.errors[-1]
        and "States.Timeout" in stored.errors[-1]
    )


def test_an_engine_that_refuses_fails_the_job_and_the_call(api: InProcessApi) -> None:
    api.ctl.workflows.fail = TransientStoreError("Step Functions is throttling")  # type: ignore[union-attr]
    reply = api.call("POST", "/plans/web/recover", {"mode": "test"}, as_="operator")
    assert reply.status == 503 and "throttling" in reply.body["error"]["message"]
    [job] = api.ctl.store.query(Job, where={"plan_id": "web"}).items
    assert job.state == "failed" and "could not start" in job.errors[-1]


def test_migrations_still_go_to_a_node(api: InProcessApi) -> None:
    job = api.call("POST", "/plans/web/recover", {"mode": "migration"}, as_="operator").body
    assert job["state"] == "queued" and "final_replication" in job["params"]
    assert api.ctl.workflows.started == []  # type: ignore[union-attr]
