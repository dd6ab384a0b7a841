"""The REST API, fuzzed from its own OpenAPI document over real HTTP.

One embedded control plane (``cli.embedded.bootstrap`` in a temporary folder, SQLite stores)
answers on a free loopback port through the same stdlib server ``lifeboat up`` uses. Then:

* schemathesis generates requests (valid and invalid) for every documented operation,
  authenticated as the admin, and checks that none gets a 5xx and that every answer
  conforms to the schema documented for its status code (bounded: a few examples each);
* hand-written requests check the error envelope ``{"error": {code, message, request_id,
  details}}`` for a malformed body, wrong types, an oversized body, an unknown route and a
  missing token.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from cli.embedded import bootstrap
from functions.api import app as api
from functions.embedded.http_server import MAX_BODY, make_server, serve_in_thread
from shared.domain.identity import NODE_PERMISSIONS


@dataclass
class Api:
    url: str
    token: str  # the admin's JWT
    node_token: str  # the local node's credential (node routes only), from its enrollment

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def auth_for(self, method: str, path: str) -> dict[str, str]:
        """The admin's token, or the node's for the routes only a node may call."""
        rule = re.sub(r"\{([^}]+)\}", r"<\1>", path)
        if api.ROUTES.get((method.upper(), rule)) in NODE_PERMISSIONS:
            return {"Authorization": f"Bearer {self.node_token}"}
        return self.auth


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    env = bootstrap(Path(tmp_path_factory.mktemp("embedded")) / "data")
    assert env.admin_password
    api.configure(env.ctl)
    server = make_server(api, "127.0.0.1", _free_port())
    thread = serve_in_thread(server)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, _, body = _request(
            f"{url}/auth/login",
            "POST",
            json.dumps({"username": "admin", "password": env.admin_password}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200, body
        status, _, enrolled = _request(  # the local node enrolls: its credential is in the answer
            f"{url}/nodes/register",
            "POST",
            json.dumps({"name": "local-node", "site_id": "local"}).encode(),
            {"Authorization": f"Bearer {env.enrollment_token}", "Content-Type": "application/json"},
        )
        assert status == 201, enrolled
        live = Api(url, json.loads(body)["access_token"], json.loads(enrolled)["credential"]["secret"])
        yield live
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def api_schema(live_api: Api) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json", timeout=30)
    schema.config.update(base_url=live_api.url)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")

# --- property-based: every documented operation ---------------------------------------------


@pytest.mark.fuzz
@pytest.mark.ops
@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
    suppress_health_check=list(HealthCheck),
)
def test_api_fuzz(case: schemathesis.Case, live_api: Api) -> None:
    case.call_and_validate(
        headers=live_api.auth_for(case.method, case.path),
        timeout=30,
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )


@pytest.mark.ops
def test_the_document_lists_every_route_so_the_fuzzer_reaches_it(live_api: Api) -> None:
    """Every route the API registers (functions/api/core.ROUTES) is an operation of /openapi.json."""
    status, _, body = _request(f"{live_api.url}/openapi.json")
    assert status == 200
    documented = {(method.upper(), path) for path, ops in json.loads(body)["paths"].items() for method in ops}
    registered = {(method, re.sub(r"<([^>]+)>", r"{\1}", rule)) for method, rule in api.ROUTES}
    itself = {("GET", "/openapi.json"), ("GET", "/docs")}  # the document and its viewer
    assert registered - itself - documented == set()
    assert len(registered) >= 60, len(registered)


# --- hand-written: the error envelope --------------------------------------------------------


def _error_of(status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The ``error`` object of an error answer, after checking its shape."""
    assert headers.get("Content-Type", "").startswith("application/json"), (status, headers, body)
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) == {"code", "message", "request_id", "details"}, err
    assert isinstance(err["code"], str) and err["code"], err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["request_id"], str), err
    return err


def test_malformed_json_body_is_a_4xx_with_a_clear_message(live_api: Api) -> None:
    status, headers, body = _request(
        f"{live_api.url}/sites",
        "POST",
        b'{"name": "x", "site_kind": ',
        {**live_api.auth, "Content-Type": "application/json"},
    )
    assert 400 <= status < 500, (status, body)
    err = _error_of(status, headers, body)
    assert "json" in err["message"].lower(), err


def test_wrong_types_are_a_422_naming_the_field(live_api: Api) -> None:
    status, headers, body = _request(
        f"{live_api.url}/tokens",
        "POST",
        json.dumps({"name": "t", "roles": ["viewer"], "ttl_days": "soon"}).encode(),
        {**live_api.auth, "Content-Type": "application/json"},
    )
    assert status == 422, (status, body)
    err = _error_of(status, headers, body)
    assert err["code"] == "Validation"
    assert "ttl_days" in err["message"], err
    assert any("ttl_days" in [str(p) for p in d["loc"]] for d in err["details"]), err


def test_login_with_a_number_for_username_is_a_422(live_api: Api) -> None:
    status, headers, body = _request(
        f"{live_api.url}/auth/login",
        "POST",
        json.dumps({"username": 42, "password": "x"}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 422, (status, body)
    assert "username" in _error_of(status, headers, body)["message"]


def test_oversized_body_is_refused_with_a_message(live_api: Api) -> None:
    host, port = live_api.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", "/sites")
        for k, v in {**live_api.auth, "Content-Type": "application/json"}.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(MAX_BODY + 1))
        conn.endheaders()
        # The server answers from the headers alone, before reading the body.
        resp = conn.getresponse()
        status, headers, body = resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()
    assert status in (400, 413), (status, body)
    err = _error_of(status, headers, body)
    assert "larger than" in err["message"], err


@pytest.mark.parametrize("path", ["/auth/login", "/sites"])
def test_multipart_without_boundary_is_a_4xx(live_api: Api, path: str) -> None:
    """Found by the fuzzer: powertools raises a bare ValueError for this Content-Type."""
    status, headers, body = _request(
        f"{live_api.url}{path}",
        "POST",
        json.dumps({"username": "admin", "password": "x"}).encode(),
        {**live_api.auth, "Content-Type": "multipart/form-data"},
    )
    assert 400 <= status < 500, (status, body)
    _error_of(status, headers, body)


def test_unknown_route_is_a_404(live_api: Api) -> None:
    status, headers, body = _request(f"{live_api.url}/no/such/route", headers=live_api.auth)
    assert status == 404, (status, body)
    err = _error_of(status, headers, body)
    assert err["code"] == "NotFound"
    assert "/no/such/route" in err["message"], err


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic YWRtaW46eA=="}, {"Authorization": "Bearer not-a-token"}],
    ids=["none", "basic", "garbage-bearer"],
)
def test_missing_or_bad_auth_is_a_401(live_api: Api, headers: dict[str, str]) -> None:
    status, resp_headers, body = _request(f"{live_api.url}/sites", headers=headers)
    assert status == 401, (status, body)
    err = _error_of(status, resp_headers, body)
    assert err["code"] == "Authentication"
    assert err["request_id"], err  # set by the resolver, unlike the HTTP server's own refusals


def test_concurrent_requests_all_answer(live_api: Api) -> None:
    """The threaded server and SQLite stores take parallel callers without a 5xx."""
    statuses: list[int] = []

    def call() -> None:
        statuses.append(_request(f"{live_api.url}/sites?limit=5", headers=live_api.auth)[0])

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 16
