"""Node authentication over the real embedded HTTP server (``cli.embedded.bootstrap``, SQLite).

Enrollment token -> register -> per-node credential; a node acts only on its own node and
jobs; rotation ends the old secret; revocation from the admin refuses the node's next call
(401, audited) until it enrolls again; malformed requests are 422 and change nothing. The
agent's side (state file, automatic rotation, re-enrollment) runs against the same server.
"""

from __future__ import annotations

import json
import logging
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cli.embedded import Embedded, bootstrap
from functions.api import app as api
from functions.embedded.http_server import make_server, serve_in_thread
from node_runtime.credentials import NodeIdentity, StateFile
from shared.api_client import ApiClient
from shared.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)

pytestmark = pytest.mark.ops


@dataclass
class Server:
    url: str
    env: Embedded
    admin: ApiClient

    def enroll(self, name: str, *, token: str | None = None) -> tuple[dict[str, Any], ApiClient]:
        """Register a node with an enrollment token; the client then carries its credential."""
        node = ApiClient(self.url, token or self.env.enrollment_token).register_node(
            name=name, site_id="local"
        )
        return node, ApiClient(self.url, node["credential"]["secret"])

    def queue_job(self, plan_id: str) -> str:
        plan = {"id": plan_id, "name": plan_id, "source_site_id": "local", "target_site_id": "local",
                "rpo_minutes": 60, "machines": [{"machine_id": "m1", "disks": [{"disk_id": f"{plan_id}-d0",
                                                                                "source": "/nonexistent.img"}]}]}  # fmt: skip
        self.admin.create_plan(**plan)
        self.admin.plan_action(plan_id, "protect")
        return str(self.admin.plan_action(plan_id, "replicate-now")["id"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    env = bootstrap(tmp_path / "data")
    assert env.admin_password
    api.configure(env.ctl)
    http = make_server(api, "127.0.0.1", _free_port())
    thread = serve_in_thread(http)
    url = f"http://127.0.0.1:{http.server_address[1]}"
    try:
        admin = ApiClient(url)
        admin.login("admin", env.admin_password)
        yield Server(url, env, admin)
    finally:
        http.shutdown()
        http.server_close()
        thread.join(10)


def test_enroll_register_then_claim_with_the_node_credential(server: Server) -> None:
    enrollment = ApiClient(server.url, server.env.enrollment_token)
    node = enrollment.register_node(name="n1", site_id="local")
    cred = node["credential"]
    assert cred["secret"].startswith("lbt_") and cred["token_id"] in cred["secret"]
    # only its hash is stored: the token list never shows it, the node list shows the node
    tokens = server.admin.pages("/tokens")
    mine = next(t for t in tokens if t["id"] == cred["token_id"])
    assert mine["node_id"] == node["id"] and mine["roles"] == ["node"] and "secret" not in json.dumps(tokens)
    listed = next(n for n in server.admin.pages("/nodes") if n["id"] == node["id"])
    assert listed["revoked"] is False and listed["online"] is True

    job_id = server.queue_job("p1")
    client = ApiClient(server.url, cred["secret"])
    claimed = client.claim(node["id"])
    assert claimed is not None and claimed["id"] == job_id and claimed["node_id"] == node["id"]
    assert client.heartbeat(node["id"], 1)["running_jobs"] == 1
    assert client.progress(job_id, bytes_done=1, bytes_total=2)["state"] == "running"
    # re-registering with its credential updates its own node and issues nothing new
    again = client.register_node(name="n1-renamed", site_id="local", capacity=7)
    assert again["id"] == node["id"] and again["capacity"] == 7 and "credential" not in again


def test_an_enrollment_token_only_registers(server: Server) -> None:
    node, _ = server.enroll("n1")
    server.queue_job("p1")
    enrollment = ApiClient(server.url, server.env.enrollment_token)
    for call in (lambda: enrollment.claim(node["id"]), lambda: enrollment.heartbeat(node["id"], 0),
                 lambda: enrollment.rotate_credential(node["id"]), lambda: enrollment.node_sources(node["id"])):  # fmt: skip
        with pytest.raises(PermissionDeniedError):
            call()
    assert server.admin.jobs(state="queued")  # nothing was claimed
    # a revoked enrollment token enrolls no more
    token_id = server.env.enrollment_token.removeprefix("lbt_").split("_", 1)[0]
    server.admin.request("DELETE", f"/tokens/{token_id}")
    with pytest.raises(AuthenticationError):
        enrollment.register_node(name="n2", site_id="local")


def test_node_a_is_refused_node_bs_routes_and_jobs(server: Server) -> None:
    a, client_a = server.enroll("a")
    b, client_b = server.enroll("b")
    job_id = server.queue_job("p1")
    assert client_a.claim(a["id"])["id"] == job_id
    client_a.progress(job_id, bytes_done=5, bytes_total=10, message="a's")
    before = server.admin.job(job_id)
    for call in (lambda: client_b.claim(a["id"]), lambda: client_b.heartbeat(a["id"], 0),
                 lambda: client_b.rotate_credential(a["id"]), lambda: client_b.node_sources(a["id"]),
                 lambda: client_b.progress(job_id, bytes_done=9, bytes_total=10),
                 lambda: client_b.complete(job_id, "succeeded"), lambda: client_b.complete(job_id, "failed")):  # fmt: skip
        with pytest.raises(PermissionDeniedError):
            call()
    assert client_b.claim(b["id"]) is None  # B's own claim does not take A's leased job
    after = server.admin.job(job_id)
    assert after == before and after["node_id"] == a["id"] and after["state"] == "running"
    assert after["progress"]["message"] == "a's"


def test_revoked_node_gets_401_is_audited_and_must_enroll_again(server: Server) -> None:
    node, client = server.enroll("n1")
    client.heartbeat(node["id"], 0)
    revoked = server.admin.revoke_node(node["id"])
    assert revoked["revoked"] is True and revoked["revoked_at"] and revoked["online"] is False
    assert next(n for n in server.admin.pages("/nodes") if n["id"] == node["id"])["revoked"] is True
    with pytest.raises(AuthenticationError):
        client.heartbeat(node["id"], 0)
    with pytest.raises(AuthenticationError):
        client.register_node(name="n1", site_id="local")  # its credential cannot re-register it
    token_id = node["credential"]["token_id"]
    audit = server.admin.request("GET", "/audit", params={"actor": f"anonymous (token {token_id})"})["items"]
    assert [(e["action"], e["status"], e["outcome"]) for e in audit][:2] == [
        ("POST /nodes/register", 401, "denied"), ("POST /nodes/<node_id>/heartbeat", 401, "denied")]  # fmt: skip
    revoke_events = server.admin.request("GET", "/audit", params={"actor": "admin"})["items"]
    assert any(e["action"] == "POST /nodes/<node_id>/revoke" and e["status"] == 200 for e in revoke_events)
    # a valid enrollment token brings it back, as a new node
    fresh, fresh_client = server.enroll("n1")
    assert fresh["id"] != node["id"]
    fresh_client.heartbeat(fresh["id"], 0)
    with pytest.raises(ConflictError):  # an admin cannot hand a revoked node a new credential (409)
        server.admin.reissue_node_credential(node["id"])


def test_a_deleted_nodes_credential_cannot_bring_it_back(server: Server) -> None:
    node, client = server.enroll("gone")
    client.heartbeat(node["id"], 0)
    server.admin.request("DELETE", f"/nodes/{node['id']}")
    with pytest.raises(AuthenticationError):
        client.register_node(name="gone", site_id="local")  # it would have recreated the node
    with pytest.raises(NotFoundError):
        server.admin.request("GET", f"/nodes/{node['id']}")
    with pytest.raises(NotFoundError):  # deleting twice: the node is gone, nothing else changes
        server.admin.request("DELETE", f"/nodes/{node['id']}")


def test_rotation_ends_the_old_secret_and_the_new_one_works(server: Server) -> None:
    node, client = server.enroll("n1")
    old = client.token
    answer = client.rotate_credential(node["id"], grace_seconds=0)
    assert answer["secret"] != old and answer["token_id"] != node["credential"]["token_id"]
    with pytest.raises(AuthenticationError):
        ApiClient(server.url, old).heartbeat(node["id"], 0)
    new = ApiClient(server.url, answer["secret"])
    assert new.heartbeat(node["id"], 0)["id"] == node["id"]
    # with a grace the old credential keeps working until it expires
    graced = new.rotate_credential(node["id"], grace_seconds=600)
    tokens = {t["id"]: t for t in server.admin.pages("/tokens")}
    expires = datetime.fromisoformat(tokens[answer["token_id"]]["expires_at"])
    assert timedelta(minutes=9) < expires - datetime.now(UTC) <= timedelta(minutes=10)
    new.heartbeat(node["id"], 0)
    assert node["credential"]["token_id"] not in tokens  # the revoked one was cleaned up
    # an admin reissues a credential (to hand to the node); the node's others end at once
    reissued = server.admin.reissue_node_credential(node["id"], grace_seconds=0)
    assert ApiClient(server.url, reissued["secret"]).heartbeat(node["id"], 0)["id"] == node["id"]
    for secret in (answer["secret"], graced["secret"]):
        with pytest.raises(AuthenticationError):
            ApiClient(server.url, secret).heartbeat(node["id"], 0)


def test_malformed_requests_get_422_and_change_nothing(server: Server) -> None:
    node, client = server.enroll("n1")
    tokens_before = len(server.admin.pages("/tokens"))
    for body in ({"grace_seconds": -1}, {"grace_seconds": 3601}, {"grace_seconds": "soon"}, {"extra": 1}, []):
        with pytest.raises(InvalidInputError) as exc:
            client.request("POST", f"/nodes/{node['id']}/credentials/rotate", body)
        assert exc.value.fields["status"] == 422, body
        with pytest.raises(InvalidInputError):
            server.admin.request("POST", f"/nodes/{node['id']}/credentials", body)
    for body in (
        {"name": "x", "roles": ["enrollment", "admin"]},
        {"name": "x", "roles": ["enrollment"], "ttl_days": 0},
    ):
        with pytest.raises(InvalidInputError) as exc:
            server.admin.request("POST", "/tokens", body)
        assert exc.value.fields["status"] == 422
    with pytest.raises(InvalidInputError):
        ApiClient(server.url, server.env.enrollment_token).request("POST", "/nodes/register", {"name": "x"})
    with pytest.raises(NotFoundError):
        server.admin.revoke_node("node-nope")
    assert len(server.admin.pages("/tokens")) == tokens_before
    assert client.heartbeat(node["id"], 0)["id"] == node["id"]  # its credential still works
    with pytest.raises(AuthenticationError):  # a token of the right shape but unknown
        ApiClient(server.url, "lbt_tok-000000000000_nope").heartbeat(node["id"], 0)


def test_agent_enrolls_keeps_its_credential_0600_rotates_and_re_enrolls(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state = StateFile(tmp_path / "node" / "state.json")
    details = {"name": "agent", "site_id": "local"}
    identity = NodeIdentity(ApiClient(server.url, server.env.enrollment_token), state=state,
                            rotate_after=timedelta(days=30), grace_seconds=0)  # fmt: skip
    node = identity.register(details)
    saved = state.load()
    assert saved is not None and saved.node_id == node["id"] and "credential" not in node
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o600
    assert identity.client.token == saved.secret
    assert not identity.maybe_rotate(datetime.now(UTC))  # young: kept
    assert identity.maybe_rotate(datetime.now(UTC) + timedelta(days=31))
    rotated = state.load()
    assert rotated is not None and rotated.token_id != saved.token_id and rotated.node_id == node["id"]
    with pytest.raises(AuthenticationError):
        ApiClient(server.url, saved.secret).heartbeat(node["id"], 0)
    # a restart re-registers with the saved credential: the same node
    restarted = NodeIdentity(ApiClient(server.url, server.env.enrollment_token), state=state)
    assert restarted.register(details)["id"] == node["id"]
    # revoked: the next start enrolls again with the enrollment token, as a new node
    server.admin.revoke_node(node["id"])
    again = NodeIdentity(ApiClient(server.url, server.env.enrollment_token), state=state)
    new_node = again.register(details)
    assert new_node["id"] != node["id"] and state.load().node_id == new_node["id"]  # type: ignore[union-attr]
    assert again.client.heartbeat(new_node["id"], 0)["id"] == new_node["id"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (saved.secret, rotated.secret, server.env.enrollment_token):
        assert secret not in logged
    assert saved.secret not in repr(saved)
