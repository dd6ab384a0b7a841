"""The REST API in process: powertools resolver + real SQLite metadata store and queue.

Requests are real API Gateway REST events (the shape the embedded HTTP server and API
Gateway both produce). Covers the RBAC matrix (every route x every role), audit events
for every mutating call, the job life cycle with leases and requeue, idempotency keys,
optimistic concurrency, validation, and the scheduler tick.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from functions.api.app import PUBLIC, ROUTES
from shared.domain.audit import AuditEvent
from shared.domain.identity import ROLE_PERMISSIONS, Role
from shared.services.scheduler import tick
from tests.support.control import InProcessApi

ROLES = ["admin", "operator", "viewer", "node", "enrollment", None]


@pytest.fixture
def api(tmp_path: Path) -> InProcessApi:
    return InProcessApi(tmp_path)


def site_body(site_id: str = "dr") -> dict:
    return {"id": site_id, "name": "DR site", "site_kind": "local", "repository_url": "/tmp/never-used"}


def plan_body(plan_id: str = "web", rpo: int = 15) -> dict:
    return {
        "id": plan_id, "name": "Web tier", "source_site_id": "dr", "target_site_id": "dr", "rpo_minutes": rpo,
        "machines": [{"machine_id": "web1", "disks": [{"disk_id": "web1-d0", "source": "/tmp/web1.img"}]},
                     {"machine_id": "db1", "disks": [{"disk_id": "db1-d0", "source": "/tmp/db1.img"}]}],
        "boot_groups": [{"name": "db", "machines": ["db1"]}, {"name": "web", "machines": ["web1"], "delay_seconds": 30}],
    }  # fmt: skip


def concrete(rule: str, role: str | None) -> str:
    """A path for ``rule``; a node acts on its own node id (others are refused by ownership)."""
    if role == "node":
        rule = rule.replace("<node_id>", "node-1")
    return re.sub(r"<[^>]+>", "x", rule)


@pytest.fixture(scope="module")
def matrix_api(tmp_path_factory: pytest.TempPathFactory) -> InProcessApi:
    return InProcessApi(tmp_path_factory.mktemp("rbac"))


def audit_count(api: InProcessApi) -> int:
    return len(api.ctl.store.query(AuditEvent, limit=500).items)


@pytest.mark.parametrize(("method", "rule"), sorted(ROUTES))
def test_rbac_matrix_every_route_every_role(matrix_api: InProcessApi, method: str, rule: str) -> None:
    api = matrix_api
    api.configure()
    permission = ROUTES[(method, rule)]
    for role in ROLES:
        before = audit_count(api)
        reply = api.call(method, concrete(rule, role), {} if method in ("POST", "PUT") else None, as_=role)
        if permission is PUBLIC:
            assert reply.status not in (401, 403), (role, reply)
        elif role is None:
            assert reply.status == 401, (role, reply)
        elif permission in ROLE_PERMISSIONS[Role(role)]:
            assert reply.status not in (401, 403), (role, reply)
        else:
            assert reply.status == 403, (role, reply)
            assert reply.body["error"]["code"] == "PermissionDenied"
        if method in ("POST", "PUT", "DELETE"):
            events = api.ctl.store.query(AuditEvent, descending=True, limit=1).items
            assert audit_count(api) == before + 1, f"{method} {rule} as {role} wrote no audit event"
            event = events[0]
            assert event.action == f"{method} {rule}"
            assert event.status == reply.status
            expected = (
                "denied" if reply.status in (401, 403) else ("success" if reply.status < 400 else "failed")
            )
            assert event.outcome == expected
        else:
            assert audit_count(api) == before


def test_plan_protect_replicate_claim_progress_complete(api: InProcessApi) -> None:
    assert api.call("POST", "/sites", site_body(), as_="operator").status == 201
    plan = api.call("POST", "/plans", plan_body(), as_="operator")
    assert plan.status == 201 and plan.body["state"] == "draft" and plan.body["revision"] == 1
    assert api.call("POST", "/plans/web/replicate-now", as_="operator").status == 409  # draft: protect first
    assert api.call("POST", "/plans/web/protect", as_="operator").body["state"] == "active"

    job = api.call("POST", "/plans/web/replicate-now", as_="operator", headers={"Idempotency-Key": "k1"})
    assert job.status == 201 and job.body["state"] == "queued"
    again = api.call("POST", "/plans/web/replicate-now", as_="operator", headers={"Idempotency-Key": "k1"})
    assert again.body["id"] == job.body["id"]  # replayed, not a second job
    assert "queue_message" not in job.body

    assert api.call("POST", "/nodes/register", {"name": "n1", "site_id": "dr"}, as_="node1").status == 201
    claimed = api.call("POST", "/nodes/node-1/claim", as_="node1")
    assert (
        claimed.status == 200 and claimed.body["id"] == job.body["id"] and claimed.body["state"] == "running"
    )
    assert claimed.body["params"]["machines"][0]["disks"][0]["disk_id"] == "web1-d0"
    assert api.call("POST", "/nodes/node-1/claim", as_="node1").status == 204  # nothing else queued
    # node 2 may not report on node 1's job
    assert api.call("POST", f"/jobs/{job.body['id']}/progress", {"bytes_done": 1}, as_="node2").status == 403
    progress = api.call(
        "POST", f"/jobs/{job.body['id']}/progress", {"bytes_done": 50, "bytes_total": 100}, as_="node1"
    )
    assert progress.status == 200 and progress.body["progress"]["bytes_done"] == 50

    result = {"machines": [
        {"machine_id": m, "time": "2026-11-25T12:00:05+00:00",
         "disks": [{"disk_id": f"{m}-d0", "point_id": "20261125T120005000Z-0badf00d", "disk_size": 1024}]}
        for m in ("web1", "db1")]}  # fmt: skip
    done = api.call(
        "POST", f"/jobs/{job.body['id']}/complete", {"state": "succeeded", "result": result}, as_="node1"
    )
    assert done.status == 200 and done.body["state"] == "succeeded"
    points = api.call("GET", "/points?plan_id=web", as_="viewer").body["items"]
    assert {p["machine_id"] for p in points} == {"web1", "db1"} and {p["run_id"] for p in points} == {
        job.body["id"]
    }
    assert (
        api.call("GET", "/points?plan_id=web&machine_id=db1", as_="viewer").body["items"][0]["machine_id"]
        == "db1"
    )
    report = api.call("GET", "/reports/rpo", as_="viewer").body["plans"]
    assert report[0]["plan_id"] == "web" and report[0]["state"] == "met"
    assert (
        api.call("POST", f"/jobs/{job.body['id']}/cancel", as_="operator").status == 409
    )  # already finished


def test_dead_node_job_is_requeued_and_completed_by_another(api: InProcessApi) -> None:
    api.call("POST", "/sites", site_body(), as_="admin")
    api.call("POST", "/plans", plan_body(), as_="admin")
    api.call("POST", "/plans/web/protect", as_="admin")
    job_id = api.call("POST", "/plans/web/replicate-now", as_="admin").body["id"]
    for n in (1, 2):
        assert (
            api.call("POST", "/nodes/register", {"name": f"n{n}", "site_id": "dr"}, as_=f"node{n}").status
            == 201
        )
    assert api.call("POST", "/nodes/node-1/claim", as_="node1").body["id"] == job_id
    assert api.call("POST", "/nodes/node-2/claim", as_="node2").status == 204  # leased to node 1
    api.clock.advance(minutes=6)  # node 1 went silent past its lease
    taken = api.call("POST", "/nodes/node-2/claim", as_="node2").body
    assert taken["id"] == job_id and taken["node_id"] == "node-2" and taken["attempts"] == 2
    assert any("stopped reporting" in e for e in taken["errors"])
    # the dead node coming back cannot finish a job that is no longer its own
    assert api.call("POST", f"/jobs/{job_id}/complete", {"state": "succeeded"}, as_="node1").status == 403
    assert (
        api.call("POST", f"/jobs/{job_id}/complete", {"state": "failed", "error": "boom"}, as_="node2").status
        == 200
    )
    assert api.call("GET", f"/jobs/{job_id}", as_="viewer").body["state"] == "failed"


def test_cancel_running_job_reaches_the_node(api: InProcessApi) -> None:
    api.call("POST", "/sites", site_body(), as_="admin")
    api.call("POST", "/plans", plan_body(), as_="admin")
    api.call("POST", "/plans/web/protect", as_="admin")
    job_id = api.call("POST", "/plans/web/replicate-now", as_="admin").body["id"]
    api.call("POST", "/nodes/register", {"name": "n1", "site_id": "dr"}, as_="node1")
    assert api.call("POST", "/nodes/node-1/claim", as_="node1").body["id"] == job_id
    assert api.call("POST", f"/jobs/{job_id}/cancel", as_="operator").body["state"] == "cancelling"
    answer = api.call("POST", f"/jobs/{job_id}/progress", {"bytes_done": 5}, as_="node1").body
    assert answer["state"] == "cancelling"
    done = api.call("POST", f"/jobs/{job_id}/complete", {"state": "cancelled"}, as_="node1").body
    assert done["state"] == "cancelled"


def test_scheduler_creates_one_job_per_due_plan_and_raises_rpo_alerts(api: InProcessApi) -> None:
    api.call("POST", "/sites", site_body(), as_="admin")
    api.call("POST", "/plans", plan_body(rpo=1), as_="admin")
    assert tick(api.ctl).created == []  # draft plans are not scheduled
    api.call("POST", "/plans/web/protect", as_="admin")
    first = tick(api.ctl)
    assert len(first.created) == 1
    assert tick(api.ctl).created == []  # the job is still queued: no second one
    jobs = api.call("GET", "/jobs?state=queued", as_="viewer").body["items"]
    assert [j["id"] for j in jobs] == first.created and jobs[0]["created_by"] == "scheduler"
    api.clock.advance(minutes=2)
    assert tick(api.ctl).alerts_opened  # never replicated and older than its 1-minute RPO
    alerts = api.call("GET", "/alerts", as_="viewer").body["items"]
    assert {a["machine_id"] for a in alerts} == {"web1", "db1"} and alerts[0]["severity"] == "critical"


def test_optimistic_concurrency_on_updates(api: InProcessApi) -> None:
    api.call("POST", "/sites", site_body(), as_="admin")
    site = api.call("GET", "/sites/dr", as_="viewer").body
    update = {k: site[k] for k in ("name", "site_kind", "region", "repository_url", "credentials_ref")}
    ok = api.call(
        "PUT", "/sites/dr", {**update, "name": "renamed", "revision": site["revision"]}, as_="operator"
    )
    assert ok.status == 200 and ok.body["revision"] == site["revision"] + 1
    stale = api.call(
        "PUT", "/sites/dr", {**update, "name": "lost update", "revision": site["revision"]}, as_="operator"
    )
    assert stale.status == 409 and "revision" in stale.body["error"]["message"].lower()
    bad = api.call(
        "PUT",
        "/sites/dr",
        {**update, "credentials_ref": "hunter2", "revision": ok.body["revision"]},
        as_="operator",
    )
    assert bad.status == 422 and "reference" in bad.body["error"]["message"]


def test_bad_input_gets_4xx_with_a_clear_message(api: InProcessApi) -> None:
    r = api.call("POST", "/sites", raw="{not json", as_="admin")
    assert 400 <= r.status < 500 and r.body["error"]["message"]
    r = api.call("POST", "/sites", {**site_body(), "site_kind": "mainframe"}, as_="admin")
    assert r.status == 422 and "site_kind" in r.body["error"]["message"]
    r = api.call("POST", "/sites", {**site_body(), "unexpected": 1}, as_="admin")
    assert r.status == 422
    r = api.call("POST", "/sites", {**site_body(), "credentials_ref": "hunter2"}, as_="admin")
    assert r.status == 422 and "reference" in r.body["error"]["message"]
    r = api.call("POST", "/sites", raw='{"name": "' + "x" * (2 << 20) + '"}', as_="admin")
    assert r.status == 400 and "larger than" in r.body["error"]["message"]
    r = api.call("GET", "/points?limit=100000", as_="viewer")
    assert r.status == 422
    r = api.call("GET", "/points?cursor=garbage", as_="viewer")
    assert r.status == 400
    r = api.call(
        "POST", "/plans", {**plan_body(), "boot_groups": [{"name": "g", "machines": ["ghost"]}]}, as_="admin"
    )
    assert r.status == 422 and "ghost" in r.body["error"]["message"]
    r = api.call("GET", "/nowhere", as_="viewer")
    assert r.status == 404


def test_login_failures_and_tokens(api: InProcessApi) -> None:
    assert api.call("POST", "/auth/login", {"username": "admin", "password": "wrong"}).status == 401
    assert api.call("POST", "/auth/login", {"username": "ghost", "password": "wrong"}).status == 401
    assert api.call("GET", "/sites", as_=None).status == 401
    api.tokens["forged"] = api.tokens["viewer"][:-4] + "AAAA"
    assert api.call("GET", "/sites", as_="forged").status == 401
    made = api.call("POST", "/tokens", {"name": "ci", "roles": ["viewer"]}, as_="admin")
    assert made.status == 201 and made.body["secret"].startswith("lbt_") and "secret_hash" not in made.body
    api.tokens["ci"] = made.body["secret"]
    assert api.call("GET", "/sites", as_="ci").status == 200
    assert api.call("DELETE", f"/tokens/{made.body['id']}", as_="admin").status == 200
    assert api.call("GET", "/sites", as_="ci").status == 401
    api.clock.advance(hours=1)  # JWTs live 30 minutes
    assert api.call("GET", "/sites", as_="viewer").status == 401
    users = api.call("GET", "/users", as_="admin")
    assert users.status == 401  # the admin's JWT expired too
    assert all("password_hash" not in u for u in (api.call("GET", "/auth/me", as_="ci").body or {}))


def test_openapi_is_served_and_describes_the_routes(api: InProcessApi) -> None:
    spec = api.call("GET", "/openapi.json").body
    assert spec["openapi"].startswith("3.1")
    assert "/plans/{plan_id}/replicate-now" in spec["paths"]
    assert api.call("GET", "/docs").status == 200


def test_cognito_claims_from_the_api_gateway_authorizer_are_the_principal(api: InProcessApi) -> None:
    """In AWS, API Gateway's Cognito authorizer has already checked the token: groups are roles."""
    import json as _json

    from functions.api import app as api_module
    from functions.embedded.http_server import _LambdaContext, to_event

    def call(method: str, path: str, groups: str, body: dict | None = None) -> int:
        event = to_event(method, path, {"Content-Type": "application/json"},
                         _json.dumps(body).encode() if body else b"", "10.0.0.1")  # fmt: skip
        event["requestContext"]["authorizer"] = {
            "claims": {"cognito:username": "alice", "cognito:groups": groups}
        }
        return int(api_module.resolve(event, _LambdaContext())["statusCode"])

    assert call("GET", "/sites", "viewer") == 200
    assert call("POST", "/sites", "viewer", site_body()) == 403
    assert call("POST", "/sites", "operator", site_body()) == 201
    assert call("GET", "/audit", "operator") == 403
    events = api.ctl.store.query(AuditEvent, descending=True, limit=2).items
    assert [(e.actor, e.outcome) for e in events] == [("alice", "success"), ("alice", "denied")]


def test_scheduler_lambda_handler_runs_a_tick(api: InProcessApi) -> None:
    from functions.scheduler.handler import handle

    api.call("POST", "/sites", site_body(), as_="admin")
    api.call("POST", "/plans", plan_body(), as_="admin")
    api.call("POST", "/plans/web/protect", as_="admin")
    result = handle({"source": "aws.events"}, ctl=api.ctl)
    assert len(result["created"]) == 1 and handle({}, ctl=api.ctl)["created"] == []
