"""The Azure Functions app in process, on Azurite's table and queue services.

Each test calls the app's functions as the Python worker does
(``fa.<name>.build().get_user_function()(request)``) with the ports built by the app's own
composition root from app settings (``LIFEBOAT_STORAGE`` = Azurite's connection string),
so the path is: ``func.HttpRequest`` -> API Gateway event -> ``resolve`` -> Azure Table /
Azure Queue -> ``func.HttpResponse``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

import functions.azure.function_app as fa
from functions.azure import composition, http_adapter
from shared.adapters.azure.storage_queue import AzureStorageJobQueue
from shared.adapters.azure.table_metadata import AzureTableMetadataStore
from shared.domain.audit import AuditEvent
from shared.domain.identity import Role, User
from shared.services import auth
from tests.servers import AzuriteServices, azurite_services  # noqa: F401  (fixture)

PASSWORD = "correct-horse-battery"
SECRET = "azure-test-secret-" + "k" * 32
BASE = "https://lifeboat-test.azurewebsites.net"
DURABLE = {"recovery_flow", "test_cleanup", "flow_branch", "flow_task", "flow_finished", "flow_starter"}


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class App:
    store: AzureTableMetadataStore
    queue: AzureStorageJobQueue
    monkeypatch: pytest.MonkeyPatch

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = None,
             headers: dict[str, str] | None = None, raw: bytes | None = None) -> Reply:  # fmt: skip
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        req = func.HttpRequest(method, BASE + path, headers=hdrs, body=data)
        resp = fa.http_api.build().get_user_function()(req)
        text = resp.get_body().decode()
        return Reply(
            resp.status_code, json.loads(text) if text.startswith(("{", "[")) else text, dict(resp.headers)
        )

    def login(self, username: str = "admin") -> str:
        reply = self.call("POST", "/auth/login", {"username": username, "password": PASSWORD})
        assert reply.status == 200, reply
        return str(reply.body["access_token"])


@pytest.fixture
def app(azurite_services: AzuriteServices, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:  # noqa: F811
    conn = azurite_services.connection_string()
    suffix = uuid.uuid4().hex[:10]
    table, queue = f"lifeboat{suffix}", f"jobs-{suffix}"
    store = AzureTableMetadataStore.create_table(conn, table)  # Bicep creates them in Azure
    jobs = AzureStorageJobQueue.create_queues(conn, queue)
    for name in ("LIFEBOAT_ENTRA_AUTH", "WEBSITE_AUTH_ENABLED", "LIFEBOAT_ENTRA_ROLE_MAP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIFEBOAT_STORAGE", conn)
    monkeypatch.setenv("LIFEBOAT_TABLE", table)
    monkeypatch.setenv("LIFEBOAT_QUEUE", queue)
    monkeypatch.setenv("LIFEBOAT_JWT_SECRET", SECRET)
    composition.control.cache_clear()
    for role in (Role.ADMIN, Role.VIEWER):
        store.create(User(id=f"user-{role}", username=str(role), password_hash=auth.hash_password(PASSWORD),
                          roles=[role]))  # fmt: skip
    yield App(store, jobs, monkeypatch)
    composition.control.cache_clear()


SITE = {"id": "dr", "name": "DR site", "site_kind": "local", "repository_url": "/tmp/never-used"}
PLAN = {
    "id": "web", "name": "Web tier", "source_site_id": "dr", "target_site_id": "dr", "rpo_minutes": 15,
    "machines": [{"machine_id": "web1", "disks": [{"disk_id": "web1-d0", "source": "/tmp/web1.img"}]}],
}  # fmt: skip


def test_functions_are_indexed_with_the_expected_bindings() -> None:
    functions = {f.get_function_name(): json.loads(f.get_function_json()) for f in fa.app.get_functions()}
    assert set(functions) == {"api", "scheduler", *DURABLE}
    assert {f["scriptFile"] for f in functions.values()} == {"function_app.py"}
    # the recovery flow on Durable Functions (tests/azure/test_durable_flow.py runs it)
    for name in ("recovery_flow", "test_cleanup", "flow_branch"):
        assert functions[name]["bindings"] == [
            {"direction": "IN", "type": "orchestrationTrigger", "name": "context"}
        ]
    for name in ("flow_task", "flow_finished"):
        assert functions[name]["bindings"][0] | {"name": "-"} == {
            "direction": "IN", "type": "activityTrigger", "name": "-", "activity": name}  # fmt: skip
    starter = {b["type"]: b for b in functions["flow_starter"]["bindings"]}
    assert starter["queueTrigger"]["queueName"] == "lifeboat-flows"
    assert starter["queueTrigger"]["connection"] == "LIFEBOAT_STORAGE" and "durableClient" in starter
    http = functions["api"]["bindings"][0]
    assert (http["type"], http["route"], http["authLevel"]) == ("httpTrigger", "{*path}", "ANONYMOUS")
    assert set(http["methods"]) >= {"GET", "POST", "PUT", "DELETE"}
    timer = functions["scheduler"]["bindings"][0]
    assert timer["type"] == "timerTrigger" and timer["schedule"] == "0 * * * * *"
    host = json.loads((Path(fa.__file__).parent / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""  # /plans, not /api/plans
    assert host["extensions"]["durableTask"]["hubName"] == "lifeboat"
    assert host["extensions"]["queues"]["messageEncoding"] == "none"  # the starter writes plain JSON


def test_login_create_and_list_through_the_function(app: App) -> None:
    token = app.login()
    assert app.call("GET", "/auth/me", token=token).body["subject"] == "admin"
    assert app.call("POST", "/sites", SITE, token=token).status == 201
    created = app.call("POST", "/plans", PLAN, token=token)
    assert created.status == 201 and created.body["state"] == "draft"
    assert created.headers.get("Content-Type", "").startswith("application/json")
    listed = app.call("GET", "/plans?limit=10", token=app.login("viewer"))
    assert listed.status == 200 and [p["id"] for p in listed.body["items"]] == ["web"]
    assert app.call("POST", "/plans", {**PLAN, "id": "db"}, token=app.login("viewer")).status == 403
    # the records are in the Azure table, audit events included
    actions = {e.action for e in app.store.query(AuditEvent, limit=50).items}
    assert {"POST /auth/login", "POST /sites", "POST /plans"} <= actions

    # an API token (what a node uses) works through the same function
    made = app.call("POST", "/tokens", {"name": "n1", "roles": ["node"]}, token=token)
    assert made.status == 201
    node = app.call("POST", "/nodes/register", {"name": "n1", "site_id": "dr"}, token=made.body["secret"])
    assert node.status == 201, node


def test_unauthenticated_and_bad_tokens_get_401(app: App) -> None:
    for token in (None, "not-a-jwt", "lbt_nope_nope"):
        reply = app.call("GET", "/plans", token=token)
        assert reply.status == 401, (token, reply)
        assert reply.body["error"]["code"] == "Authentication" and reply.body["error"]["request_id"]
    assert app.call("GET", "/health").status == 200  # public


def test_unknown_route_is_404(app: App) -> None:
    reply = app.call("GET", "/no/such/route", token=app.login())
    assert reply.status == 404 and reply.body["error"]["code"] == "NotFound"
    assert app.call("DELETE", "/health").status == 404


def test_body_limits_and_media_type(app: App) -> None:
    token = app.login()
    big = b'{"name": "' + b"x" * http_adapter.MAX_BODY + b'"}'
    reply = app.call("POST", "/sites", raw=big, token=token)
    assert reply.status == 413 and reply.body["error"]["code"] == "PayloadTooLarge"
    reply = app.call(
        "POST", "/sites", raw=b"<site/>", token=token, headers={"Content-Type": "application/xml"}
    )
    assert reply.status == 415
    assert app.call("POST", "/sites", raw=b"{not json", token=token).status in (400, 422)


def test_timer_trigger_creates_the_due_job(app: App) -> None:
    token = app.login()
    app.call("POST", "/sites", SITE, token=token)
    app.call("POST", "/plans", PLAN, token=token)
    assert app.call("POST", "/plans/web/protect", token=token).body["state"] == "active"
    scheduler = fa.scheduler.build().get_user_function()
    scheduler(TimerRequest(past_due=False))
    jobs = app.call("GET", "/jobs?state=queued", token=token).body["items"]
    assert len(jobs) == 1 and jobs[0]["created_by"] == "scheduler" and jobs[0]["plan_id"] == "web"
    scheduler(TimerRequest(past_due=True))  # the job is still queued: no second one
    assert len(app.call("GET", "/jobs?state=queued", token=token).body["items"]) == 1
    messages = app.queue.receive(max_messages=10, visibility_seconds=1)
    assert [m.body.get("job_id") for m in messages] == [jobs[0]["id"]]


# --- Entra ID through App Service Authentication ------------------------------------------------
def principal(*roles: str, name: str = "alice@contoso.example", groups: tuple[str, ...] = ()) -> str:
    claims = [{"typ": "preferred_username", "val": name}, {"typ": "oid", "val": "0000-oid-alice"}]
    claims += [{"typ": "roles", "val": r} for r in roles] + [{"typ": "groups", "val": g} for g in groups]
    doc = {"auth_typ": "aad", "name_typ": "preferred_username", "role_typ": "roles", "claims": claims}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_entra_principal_is_honoured_only_behind_app_service_authentication(app: App) -> None:
    header = {"X-MS-CLIENT-PRINCIPAL": principal("Lifeboat.Admin")}
    # not opted in: the header is stripped, so a forged one gets nothing
    assert app.call("GET", "/plans", headers=header).status == 401
    # opted in but the platform's authentication is off: refuse everything, loudly
    app.monkeypatch.setenv("LIFEBOAT_ENTRA_AUTH", "true")
    reply = app.call("GET", "/plans", headers=header)
    assert reply.status == 503 and "WEBSITE_AUTH_ENABLED" in reply.body["error"]["message"]
    app.monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    assert app.call("POST", "/sites", SITE, headers=header).status == 201
    me = app.call("GET", "/auth/me", headers=header).body
    assert me["subject"] == "entra:alice@contoso.example" and me["roles"] == ["admin"]
    events = app.store.query(AuditEvent, descending=True, limit=5).items
    assert any(e.actor == "entra:alice@contoso.example" and e.action == "POST /sites" for e in events)
    # a user without a Lifeboat app role is authenticated but may do nothing
    assert app.call("GET", "/plans", headers={"X-MS-CLIENT-PRINCIPAL": principal("Reader")}).status == 403
    # groups map to roles through LIFEBOAT_ENTRA_ROLE_MAP
    app.monkeypatch.setenv("LIFEBOAT_ENTRA_ROLE_MAP", json.dumps({"group-ops": "viewer"}))
    grouped = {"X-MS-CLIENT-PRINCIPAL": principal(groups=("group-ops",))}
    assert app.call("GET", "/plans", headers=grouped).status == 200
    assert app.call("POST", "/plans", PLAN, headers=grouped).status == 403
    assert app.call("GET", "/plans", headers={"X-MS-CLIENT-PRINCIPAL": "%%%"}).status == 401
    # callers without the header still use bearer tokens (nodes, local users)
    assert app.call("GET", "/plans", token=app.login("viewer")).status == 200


# --- composition from app settings ---------------------------------------------------------------
def test_unresolved_key_vault_reference_is_refused(app: App) -> None:
    app.monkeypatch.setenv(
        "LIFEBOAT_JWT_SECRET", "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/jwt/)"
    )
    composition.control.cache_clear()
    reply = app.call("GET", "/plans", token="x")
    assert reply.status == 503 and "Key Vault" in reply.body["error"]["message"]
    app.monkeypatch.setenv("LIFEBOAT_JWT_SECRET", "short")
    assert app.call("GET", "/plans", token="x").status == 503


def test_identity_based_storage_settings() -> None:
    env = {"LIFEBOAT_STORAGE__accountName": "lbdata", "LIFEBOAT_JWT_SECRET": SECRET, "LIFEBOAT_TABLE": "t1"}
    settings = composition.storage_settings(env)
    assert settings.connection_string is None
    assert settings.table_endpoint == "https://lbdata.table.core.windows.net"
    assert settings.queue_endpoint == "https://lbdata.queue.core.windows.net"
    ctl = composition.build_control(env)  # no I/O: clients with the managed identity credential
    assert isinstance(ctl.store, AzureTableMetadataStore) and isinstance(ctl.queue, AzureStorageJobQueue)
    explicit = composition.storage_settings({"LIFEBOAT_STORAGE__tableServiceUri": "https://t.example",
                                             "LIFEBOAT_STORAGE__queueServiceUri": "https://q.example",
                                             "LIFEBOAT_STORAGE__clientId": "cid"})  # fmt: skip
    assert (explicit.table_endpoint, explicit.queue_endpoint, explicit.client_id) == (
        "https://t.example", "https://q.example", "cid")  # fmt: skip
    with pytest.raises(Exception, match="storage is not configured"):
        composition.storage_settings({})


def test_deployment_package_layout_and_indexing(tmp_path: Path) -> None:
    from functions.azure import package

    staged = package.stage(tmp_path / "stage", deps=False)
    zipped = package.make_zip(staged, tmp_path / "app.zip")
    import zipfile

    names = set(zipfile.ZipFile(zipped).namelist())
    assert {"function_app.py", "host.json", "requirements.txt", "functions/azure/function_app.py",
            "functions/api/app.py", "functions/embedded/http_server.py", "shared/services/scheduler.py",
            "functions/recovery/recovery_flow.asl.json", "functions/recovery/handlers.py",
            "node_runtime/recovery/osprep/__init__.py", "node_runtime/sources/secrets.py"} <= names  # fmt: skip
    assert not any(
        n.startswith(("tests/", "cdk/", "cli/", "node_runtime/agent", "node_runtime/replication/"))
        or "__pycache__" in n for n in names
    )  # fmt: skip
    requirements = (staged / "requirements.txt").read_text()
    assert all(
        p in requirements for p in ("azure-functions-durable", "azure-mgmt-compute", "azure-mgmt-network")
    )
    # the host imports the root module and finds `app` (with the staged code, not the repo's)
    probe = (
        "import function_app, functions, shared; from functions.azure import composition, durable_flow; "
        "composition.recovery_ports(); durable_flow.definition('recovery_flow.asl.json'); "
        "print(functions.__file__); print(sorted(f.get_function_name() for f in function_app.app.get_functions()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=staged, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == [
        str(staged / "functions/__init__.py"),
        str(sorted({"api", "scheduler", *DURABLE})),
    ]


def test_bootstrap_creates_the_first_admin_once(app: App) -> None:
    import os

    from functions.azure.bootstrap import create_admin
    from shared.errors import ConflictError

    env = {k: v for k, v in os.environ.items() if k.startswith("LIFEBOAT_")}
    password = create_admin(env, "root")
    reply = app.call("POST", "/auth/login", {"username": "root", "password": password})
    assert reply.status == 200 and app.call("GET", "/auth/me", token=reply.body["access_token"]).body[
        "roles"
    ] == ["admin"]
    with pytest.raises(ConflictError):
        create_admin(env, "root")
