"""The reports over real HTTP and from the CLI: an embedded control plane (``bootstrap``,
SQLite stores) on a loopback port, seeded with tests/support/reports.py's history, its
clock at ``NOW``. JSON and CSV (parsed with the csv module), bad periods (422),
unauthenticated calls (401), and ``lifeboat report ...`` run as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.embedded import bootstrap
from functions.api import app as api
from functions.embedded.http_server import make_server, serve_in_thread
from tests.e2e.test_api_schemathesis import Api, _request
from tests.support.reports import NOW, G, seed

pytestmark = pytest.mark.ops
DAY = {"start": "2026-01-10T00:00:00Z", "end": "2026-01-11T00:00:00+00:00"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    env = bootstrap(Path(tmp_path_factory.mktemp("reports")) / "data")
    env.ctl.now = lambda: NOW
    seed(env.ctl.store)
    api.configure(env.ctl)
    httpd = make_server(api, "127.0.0.1", 0)
    thread = serve_in_thread(httpd)
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        status, _, body = _request(
            f"{url}/auth/login",
            "POST",
            json.dumps({"username": "admin", "password": env.admin_password}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200, body
        yield Api(url, json.loads(body)["access_token"], env.enrollment_token)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def get(
    server: Api, path: str, params: dict[str, Any] | None = None, *, auth: bool = True
) -> tuple[int, dict, bytes]:
    query = "?" + urllib.parse.urlencode(params) if params else ""
    return _request(f"{server.url}{path}{query}", "GET", None, server.auth if auth else {})


def get_json(server: Api, path: str, params: dict[str, Any] | None = None) -> Any:
    status, headers, body = get(server, path, params)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    return json.loads(body)


def get_csv(server: Api, path: str, params: dict[str, Any], filename: str) -> list[dict[str, str]]:
    status, headers, body = get(server, path, {**params, "format": "csv"})
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/csv"), headers
    assert headers["Content-Disposition"] == f'attachment; filename="{filename}"', headers
    text = body.decode()
    assert text.endswith("\r\n"), "RFC 4180 line ends"
    return list(csv.DictReader(io.StringIO(text, newline="")))


# --- RPO compliance ----------------------------------------------------------------------------
def test_rpo_compliance_json_has_the_exact_breach_intervals(server: Api) -> None:
    doc = get_json(server, "/reports/rpo-compliance", {**DAY, "plan_id": "web"})
    assert (doc["period_start"], doc["period_end"]) == ("2026-01-10T00:00:00Z", "2026-01-11T00:00:00Z")
    (web,) = doc["plans"]
    assert [(b["start"], b["end"], b["open"], b["machines"]) for b in web["breaches"]] == [
        ("2026-01-10T00:00:00Z", "2026-01-10T04:30:00Z", False, ["a", "b"]),
        ("2026-01-10T05:00:00Z", "2026-01-11T00:00:00Z", True, ["a", "b"]),
    ]
    assert web["percent_within_target"] == pytest.approx(100 * 30 / 1440)
    assert web["achieved"] == {
        "samples": 7,
        "p50_seconds": 7200.0,
        "p90_seconds": 70200.0,
        "p99_seconds": 70200.0,
        "max_seconds": 70200.0,
    }
    a = web["machines"][0]
    assert [(b["start"], b["end"]) for b in a["breaches"]] == [
        ("2026-01-10T00:30:00Z", "2026-01-10T00:45:00Z"),
        ("2026-01-10T02:30:00Z", "2026-01-10T04:00:00Z"),
        ("2026-01-10T05:00:00Z", "2026-01-10T22:00:00Z"),
        ("2026-01-10T23:00:00Z", "2026-01-11T00:00:00Z"),
    ]


def test_rpo_compliance_covers_every_protecting_plan_over_the_last_30_days_by_default(server: Api) -> None:
    doc = get_json(server, "/reports/rpo-compliance")
    assert doc["period_end"] == "2026-01-20T12:00:00Z" and doc["period_start"] == "2025-12-21T12:00:00Z"
    future = get_json(
        server, "/reports/rpo-compliance", {"start": "2026-01-19T00:00:00Z", "end": "2026-03-01"}
    )
    assert future["period_end"] == "2026-01-20T12:00:00Z", "the period ends now at the latest"
    plans = {p["plan_id"]: p for p in doc["plans"]}
    assert set(plans) == {"web", "db"}, "a draft plan protects nothing: not reported"
    db = plans["db"]  # never replicated: breached from its creation + 15 min to now
    assert db["period_start"] == "2026-01-01T00:00:00Z" and db["percent_within_target"] == pytest.approx(
        100 * 15 / (19.5 * 24 * 60)
    )
    assert [(b["start"], b["end"], b["open"]) for b in db["breaches"]] == [
        ("2026-01-01T00:15:00Z", "2026-01-20T12:00:00Z", True)
    ]


def test_rpo_compliance_csv(server: Api) -> None:
    rows = get_csv(
        server,
        "/reports/rpo-compliance",
        {**DAY, "plan_id": "web"},
        "rpo-compliance-20260110T000000Z-20260111T000000Z.csv",
    )
    assert [(r["plan_id"], r["machine_id"]) for r in rows] == [("web", ""), ("web", "a"), ("web", "b")]
    plan, a, b = rows
    assert plan["plan_name"] == "Web tier" and plan["target_seconds"] == "3600.0"
    assert plan["breaches"] == "2" and plan["open_breach"] == "true" and plan["breached_seconds"] == "84600.0"
    assert float(plan["percent_within_target"]) == pytest.approx(100 * 30 / 1440)
    assert plan["breach_intervals"] == (
        "2026-01-10T00:00:00+00:00/2026-01-10T04:30:00+00:00 2026-01-10T05:00:00+00:00/2026-01-11T00:00:00+00:00"
    )
    assert a["breaches"] == "4" and a["breached_seconds"] == str(1185 * 60.0) and a["samples"] == "5"
    assert b["p50_seconds"] == "5400.0" and b["max_seconds"] == "70200.0"


@pytest.mark.parametrize(
    ("params", "where", "why"),
    [
        ({"start": "2026-01-11T00:00:00Z", "end": "2026-01-10T00:00:00Z"}, "start", "before end"),
        ({"start": "2026-01-10T00:00:00Z", "end": "2026-01-10T00:00:00Z"}, "start", "before end"),
        ({"start": "2025-01-01T00:00:00Z", "end": "2026-01-03T00:00:00Z"}, "start", "366 days"),
        ({"end": "2025-01-01T00:00:00Z", "start": "2026-01-01T00:00:00Z"}, "start", "before end"),
        ({"start": "2026-01-20T12:00:00Z", "end": "2026-02-01T00:00:00Z"}, "start", "before now"),
        ({"start": "yesterday"}, "start", "ISO 8601"),
        ({"end": "2026-13-01T00:00:00Z"}, "end", "ISO 8601"),
        ({"format": "xml"}, "format", ""),
        ({"plan_id": "../etc"}, "plan_id", ""),
    ],
)
def test_bad_report_requests_are_a_422_naming_the_parameter(
    server: Api, params: dict[str, str], where: str, why: str
) -> None:
    status, _, body = get(server, "/reports/rpo-compliance", params)
    assert status == 422, body
    err = json.loads(body)["error"]
    assert err["code"] == "Validation" and err["message"].startswith(f"invalid request: query.{where}:"), err
    assert why in err["message"], err


def test_an_unknown_plan_is_a_404_and_reports_need_a_token(server: Api) -> None:
    status, _, body = get(server, "/reports/rpo-compliance", {"plan_id": "nope"})
    assert status == 404, body
    for path in ("/reports/rpo-compliance", "/reports/readiness", "/reports/storage"):
        for params in (None, {"format": "csv"}):
            status, _, body = get(server, path, params, auth=False)
            assert status == 401 and json.loads(body)["error"]["code"] == "Authentication", (path, body)
    status, _, body = _request(
        f"{server.url}/reports/storage", "GET", None, {"Authorization": "Bearer forged"}
    )
    assert status == 401, body
    node = {"Authorization": f"Bearer {server.node_token}"}  # a node enrollment token may not read reports
    status, _, body = _request(f"{server.url}/reports/readiness?format=csv", "GET", None, node)
    assert status == 403 and json.loads(body)["error"]["code"] == "PermissionDenied", body


# --- readiness and storage ---------------------------------------------------------------------
def test_readiness_json_and_csv(server: Api) -> None:
    doc = get_json(server, "/reports/readiness")
    plans = {p["plan_id"]: p for p in doc["plans"]}
    web, db = plans["web"], plans["db"]
    assert web["state"] == "ready" and web["last_success"]["report_id"] == "rep-web-1"
    assert web["last_success"]["age_seconds"] == 86400 and web["rto_seconds"] == 420
    assert web["stages"] == [{"stage": "disks", "seconds": 240.0}, {"stage": "boot", "seconds": 180.0}]
    assert (
        db["state"] == "failed"
        and db["last_failure"]["report_id"] == "rep-db-1"
        and db["last_success"] is None
    )
    edge = get_json(
        server, "/reports/readiness", {"plan_id": "web", "stale_after_days": 1}
    )  # exactly 1 day old
    assert [p["state"] for p in edge["plans"]] == ["ready"] and edge["stale_after_days"] == 1
    rows = get_csv(server, "/reports/readiness", {}, "readiness-20260120T120000Z.csv")
    by_plan = {r["plan_id"]: r for r in rows}
    assert by_plan["web"]["state"] == "ready" and by_plan["web"]["stage_seconds"] == "disks=240 boot=180"
    assert (
        by_plan["web"]["last_success_at"] == "2026-01-19T12:00:00+00:00"
        and by_plan["web"]["rto_seconds"] == "420.0"
    )
    assert by_plan["db"]["state"] == "failed" and by_plan["db"]["last_success_at"] == ""
    assert by_plan["db"]["reason"] == "the last test recovery (rep-db-1) failed; none has succeeded"
    status, _, body = get(server, "/reports/readiness", {"stale_after_days": 0})
    assert status == 422, body


def test_storage_json_and_csv(server: Api) -> None:
    doc = get_json(server, "/reports/storage")
    disks = {d["disk_id"]: d for d in doc["disks"]}
    a = disks["a-d0"]
    assert (a["points"], a["protected_bytes"], a["logical_bytes"]) == (7, 10 * G, 70 * G)
    assert (a["new_bytes"], a["stored_bytes"]) == (5 * G + 6 * (64 << 20), 10 * G // 4 + 6 * (32 << 20))
    assert a["reduction_ratio"] == pytest.approx(70 * G / a["stored_bytes"])
    assert a["compression_ratio"] == pytest.approx(a["new_bytes"] / a["stored_bytes"])
    total = doc["total"]
    assert (total["points"], total["protected_bytes"], total["logical_bytes"]) == (9, 14 * G, 78 * G)
    assert [r["site_id"] for r in doc["repositories"]] == ["local"]
    rows = get_csv(server, "/reports/storage", {}, "storage-20260120T120000Z.csv")
    assert [r["level"] for r in rows] == ["disk", "disk", "machine", "machine", "repository", "total"]
    assert rows[0]["disk_id"] == "a-d0" and int(rows[0]["stored_bytes"]) == a["stored_bytes"]
    assert rows[-1]["logical_bytes"] == str(78 * G) and rows[-1]["unrecorded_points"] == "0"
    assert get_json(server, "/reports/storage", {"plan_id": "db"})["disks"] == []


def test_the_rpo_summary_still_answers(server: Api) -> None:
    doc = get_json(server, "/reports/rpo")
    assert {p["plan_id"] for p in doc["plans"]} >= {"web", "db"}


# --- the CLI -----------------------------------------------------------------------------------
def lifeboat(server: Api, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LIFEBOAT_API": server.url,
        "LIFEBOAT_TOKEN": server.token,
        "COLUMNS": "250",
        "LIFEBOAT_CONFIG_DIR": "/nonexistent",
    }
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "report", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_cli_reports(server: Api) -> None:
    proc = lifeboat(server, "rpo-compliance", "--start", DAY["start"], "--end", DAY["end"], "--plan", "web")
    assert proc.returncode == 0, proc.stderr
    assert "2.08%" in proc.stdout and "2026-01-10T05:00:00Z" in proc.stdout and "open" in proc.stdout
    assert "19h30m" in proc.stdout  # b's age at the end, the largest sample

    proc = lifeboat(server, "rpo-compliance", "--start", DAY["start"], "--end", DAY["end"], "--csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout, newline="")))
    assert [(r["plan_id"], r["machine_id"]) for r in rows] == [
        ("db", ""),
        ("db", "db1"),
        ("web", ""),
        ("web", "a"),
        ("web", "b"),
    ]

    proc = lifeboat(server, "readiness", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {p["plan_id"]: p["state"] for p in json.loads(proc.stdout)["plans"]} == {
        "web": "ready",
        "db": "failed",
    }

    proc = lifeboat(server, "storage")
    assert proc.returncode == 0, proc.stderr
    assert "a-d0" in proc.stdout and "78.0 GiB" in proc.stdout and "(total)" in proc.stdout

    proc = lifeboat(
        server, "rpo-compliance", "--start", "2026-01-11T00:00:00Z", "--end", "2026-01-10T00:00:00Z"
    )
    assert proc.returncode == 2 and "start must be before end" in proc.stderr, (proc.returncode, proc.stderr)
    proc = lifeboat(server, "storage", "--plan", "x")
    assert proc.returncode == 0 and "(total)" in proc.stdout, proc.stderr
