"""Metrics as the control plane emits them (shared/domain/metrics.py is the catalogue).

One scenario (tests/support/metrics_lab.py: a real replication of two disk images, a
scheduler tick, a failed and a cancelled job, a test recovery) runs twice: with the
CloudWatch EMF adapter, whose printed documents are parsed back, and inside the embedded
control plane of ``lifeboat up``, whose ``GET /metrics`` is scraped over HTTP and parsed
with prometheus-client's own parser. ``lifeboat up`` itself is started once to check that
its composition root serves the catalogue with the scrape token.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.embedded import bootstrap
from functions.api import app as api
from functions.embedded.http_server import make_server, serve_in_thread
from shared.adapters.metrics.emf import MAX_VALUES, EmfMetrics
from shared.adapters.metrics.prometheus import PrometheusMetrics
from shared.domain.identity import Role
from shared.domain.metrics import CATALOGUE, NAMESPACE, MetricKind, spec
from shared.errors import InvalidInputError
from tests.support import metrics_lab
from tests.support.control import Clock, InProcessApi
from tests.support.emf import emf_documents
from tests.support.metrics_lab import LAG_SECONDS, Lab, Outcome, written_bytes

pytestmark = pytest.mark.ops
ALL_NAMES = {m.name for m in CATALOGUE}


def check_outcome(lab: Lab, outcome: Outcome) -> None:
    assert outcome.replication["state"] == "succeeded", outcome.replication
    assert outcome.stale["state"] == "failed" and outcome.cancelled["state"] == "cancelled"
    assert outcome.recovery["state"] == "succeeded" and outcome.report["state"] == "succeeded"
    assert len(outcome.tick_created) == 1 and len(outcome.tick_alerts) == 1
    assert outcome.retried_completion_refused


@pytest.fixture
def emf_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Lab, Outcome, list[dict[str, Any]]]:
    monkeypatch.delenv("LIFEBOAT_PASSWORD", raising=False)  # an unencrypted repository
    return metrics_lab.run_with_emf(tmp_path)


def test_a_replication_and_a_recovery_print_every_catalogue_metric_as_emf(emf_run: Any) -> None:
    lab, outcome, docs = emf_run
    check_outcome(lab, outcome)
    assert {d["name"] for d in docs} == ALL_NAMES
    values: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = defaultdict(list)
    for d in docs:
        m = spec(d["name"])
        assert d["namespace"] == NAMESPACE and d["unit"] == m.unit, d
        assert d["dimensions"] == {"service": m.service, **{k: d["dimensions"][k] for k in m.dimensions}}, d
        values[(d["name"], tuple(sorted((k, v) for k, v in d["dimensions"].items() if k != "service")))] += d[
            "values"
        ]

    def total(name: str, **dims: str) -> float:
        return sum(values[(name, tuple(sorted(dims.items())))])

    written = sum(written_bytes(p) for p in lab.images.values())
    assert 0 < written < 6 * (1 << 20)  # the images have holes: those are not replicated
    assert total("ReplicatedBytes") == written
    assert 0 < total("ChangedBytes") <= written and total("RepositoryBytesStored") > 0
    assert len(values[("ReplicationThroughput", ())]) == 2 and min(values[("ReplicationThroughput", ())]) > 0
    assert values[("DedupRatio", (("plan", "shop"),))] == [written / total("ChangedBytes")]
    assert values[("RpoLagSeconds", (("plan", "shop"),))] == [
        LAG_SECONDS
    ]  # the never replicated plan has none
    assert total("JobsCreated") == 1 and total("RpoAlertsOpened") == 1
    # each job counted once: started at its claim, ended at its completion (the retried one refused)
    assert total("JobsStarted", kind="replication") == 2 and total("JobsStarted", kind="test-recovery") == 1
    assert (
        total("JobsSucceeded", kind="replication") == 1 and total("JobsSucceeded", kind="test-recovery") == 1
    )
    assert total("JobsFailed", kind="replication") == 1 and total("JobsCancelled", kind="replication") == 1
    stages = {dims[0][1] for name, dims in values if name == "RecoveryStageSeconds"}
    reported = {s["stage"] for g in outcome.report["groups"] for m in g["machines"] for s in m["stages"]}
    assert stages == reported and {"reconstruct", "validate-boot"} <= stages
    for stage in stages:  # one observation per machine, as long as the report says
        assert sorted(values[("RecoveryStageSeconds", (("stage", stage),))]) == sorted(
            s["seconds"]
            for g in outcome.report["groups"]
            for m in g["machines"]
            for s in m["stages"]
            if s["stage"] == stage
        )
    assert values[("RecoveryRtoSeconds", (("mode", "test"),))] == [outcome.report["rto_seconds"]]


def test_flushing_again_prints_nothing_and_a_bad_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = EmfMetrics()
    metrics.count("JobsStarted", kind="replication")
    metrics.flush()
    assert len(emf_documents(capsys.readouterr().out)) == 1
    metrics.flush()
    assert capsys.readouterr().out == ""
    for bad in (lambda: metrics.count("JobStarted", kind="replication"),  # not in the catalogue
                lambda: metrics.count("JobsStarted"),  # its dimension missing
                lambda: metrics.gauge("JobsStarted", 1, kind="replication"),  # a counter
                lambda: metrics.count("ReplicatedBytes", -5),
                lambda: metrics.observe("RecoveryStageSeconds", float("nan"), stage="boot")):  # fmt: skip
        with pytest.raises(ValueError):
            bad()


def test_more_than_a_hundred_observations_split_into_valid_documents(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = EmfMetrics()
    for i in range(250):
        metrics.observe("RecoveryStageSeconds", float(i), stage="reconstruct")
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error"
        )  # powertools warns when a document it flushed on its own leaves one empty
        metrics.flush()
    docs = emf_documents(capsys.readouterr().out)
    assert [len(d["values"]) for d in docs] == [MAX_VALUES, MAX_VALUES, 250 - 2 * MAX_VALUES]
    assert sorted(v for d in docs for v in d["values"]) == [float(i) for i in range(250)]


# --- lifeboat up: GET /metrics ----------------------------------------------------------------
@dataclass
class Scraped:
    status: int
    content_type: str
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def scrape(url: str, token: str | None) -> Scraped:
    request = Request(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urlopen(request, timeout=30) as reply:
            return Scraped(reply.status, reply.headers["Content-Type"], reply.read().decode())
    except HTTPError as exc:
        return Scraped(exc.code, exc.headers["Content-Type"], exc.read().decode())


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def family_name(name: str) -> str:
    """prometheus-client's parser names a counter's family without ``_total``."""
    m = spec(name)
    return m.prometheus_name.removesuffix("_total") if m.kind is MetricKind.COUNTER else m.prometheus_name


def sample(fams: dict[str, Any], name: str, suffix: str = "", **labels: str) -> float:
    family = fams[family_name(name)]
    wanted = spec(name).prometheus_name + suffix if not suffix else family_name(name) + suffix
    found = [s.value for s in family.samples if s.name == wanted and s.labels == labels]
    assert len(found) == 1, (name, labels, family.samples)
    return found[0]


def test_the_embedded_control_plane_serves_the_same_metrics_at_get_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIFEBOAT_PASSWORD", raising=False)
    monkeypatch.setenv("LIFEBOAT_METRICS_TOKEN", "scrape-" + "s" * 40)
    env = bootstrap(tmp_path / "data")
    api.configure(env.ctl)
    server = make_server(api, "127.0.0.1", 0)
    serve_in_thread(server)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        lab = Lab(env.ctl, url, tmp_path, Clock(datetime.now(UTC)))
        outcome = metrics_lab.run(lab)
        check_outcome(lab, outcome)
        viewer, node = lab.token("grafana", Role.VIEWER), env.enrollment_token

        assert scrape(url, None).status == 401
        assert scrape(url, "scrape-wrong").status == 401
        assert scrape(url, node).status == 403  # a node enrollment token may not read
        denied = scrape(url, None).json()["error"]
        assert denied["code"] == "Authentication"
        for token in (viewer, "scrape-" + "s" * 40):
            reply = scrape(url, token)
            assert reply.status == 200 and reply.content_type.startswith("text/plain")
        fams = families(reply.text)
    finally:
        server.shutdown()

    assert {family_name(m.name) for m in CATALOGUE} <= set(fams)
    with_samples = {m.name for m in CATALOGUE if any(s.value for s in fams[family_name(m.name)].samples)}
    assert with_samples == ALL_NAMES  # the same names the EMF run printed
    written = sum(written_bytes(p) for p in lab.images.values())
    assert sample(fams, "ReplicatedBytes") == written
    assert sample(fams, "RpoLagSeconds", plan="shop") == LAG_SECONDS
    assert sample(fams, "JobsStarted", kind="replication") == 2
    assert sample(fams, "JobsSucceeded", kind="test-recovery") == 1
    assert sample(fams, "JobsFailed", kind="replication") == 1
    assert sample(fams, "RecoveryStageSeconds", "_count", stage="reconstruct") == 2  # two machines
    assert sample(fams, "ReplicationThroughput", "_count") == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lifeboat_up_serves_the_catalogue_to_its_scrape_token(tmp_path: Path) -> None:
    port, token = free_port(), "scrape-" + "u" * 40
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--data-dir", str(tmp_path / "data"), "--port", str(port), "--no-node"],
        env={**os.environ, "LIFEBOAT_METRICS_TOKEN": token}, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # it prints its URL once it serves
            if line.startswith("Lifeboat is up"):
                break
        else:
            pytest.fail(f"lifeboat up exited with {proc.wait()}")
        url = f"http://127.0.0.1:{port}"
        assert scrape(url, None).status == 401
        reply = scrape(url, token)
        assert reply.status == 200, reply.text
        assert {family_name(m.name) for m in CATALOGUE} <= set(families(reply.text))
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_monitoring_doc_lists_every_catalogue_metric() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "monitoring.md").read_text()
    missing = [m.name for m in CATALOGUE if f"`{m.name}`" not in doc or f"`{m.prometheus_name}`" not in doc]
    assert not missing, f"docs/monitoring.md does not list {missing}"


def test_a_short_scrape_token_is_refused_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFEBOAT_METRICS_TOKEN", "short")
    with pytest.raises(InvalidInputError, match="at least 24 characters"):
        bootstrap(tmp_path / "data")


def test_malformed_disk_statistics_are_refused_whole_and_counted_once_when_right(tmp_path: Path) -> None:
    control = InProcessApi(tmp_path)
    control.ctl.metrics = metrics = PrometheusMetrics()
    site = {"id": "dr", "name": "dr", "site_kind": "local", "repository_url": str(tmp_path / "repo")}
    plan = {"id": "web", "name": "web", "source_site_id": "dr", "target_site_id": "dr",
            "machines": [{"machine_id": "w1", "disks": [{"disk_id": "w1-d0", "source": "/x"}]}]}  # fmt: skip
    assert control.call("POST", "/sites", site, as_="operator").status == 201
    assert control.call("POST", "/plans", plan, as_="operator").status == 201
    assert control.call("POST", "/plans/web/protect", as_="operator").status == 200
    job = control.call("POST", "/plans/web/replicate-now", as_="operator").body
    assert control.call("POST", "/nodes/register", {"name": "n1", "site_id": "dr"}, as_="node1").status == 201
    assert control.call("POST", "/nodes/node-1/claim", as_="node1").body["id"] == job["id"]

    def complete(**stats: Any) -> Any:
        disk = {"disk_id": "w1-d0", "point_id": "20261125T120005000Z-0badf00d", "disk_size": 4 << 20, **stats}
        result = {"machines": [{"machine_id": "w1", "time": "2026-11-25T12:00:05+00:00", "disks": [disk]}]}
        return control.call("POST", f"/jobs/{job['id']}/complete", {"state": "succeeded", "result": result},
                            as_="node1")  # fmt: skip

    for bad in ({"bytes_read": -5}, {"bytes_read": "lots"}, {"seconds": -1.0}, {"bytes_stored": -1}):
        reply = complete(**bad)
        assert reply.status == 422 and reply.body["error"]["code"] == "Validation", (bad, reply)
    assert control.call("GET", f"/jobs/{job['id']}", as_="viewer").body["state"] == "running"  # nothing lost
    fams = families(metrics.exposition()[1].decode())
    assert sample(fams, "ReplicatedBytes") == 0 and not [s for s in fams["lifeboat_jobs_succeeded"].samples]

    good = {"bytes_read": 3 << 20, "bytes_new": 1 << 20, "bytes_stored": 600_000, "seconds": 2.0}
    assert complete(**good).status == 200
    assert complete(**good).status == 409  # a retried completion: refused, not counted again
    fams = families(metrics.exposition()[1].decode())
    assert sample(fams, "ReplicatedBytes") == 3 << 20 and sample(fams, "ChangedBytes") == 1 << 20
    assert sample(fams, "RepositoryBytesStored") == 600_000 and sample(fams, "DedupRatio", plan="web") == 3.0
    assert sample(fams, "ReplicationThroughput", "_sum") == (3 << 20) / 2.0
    assert sample(fams, "JobsSucceeded", kind="replication") == 1
    point = control.call("GET", "/points?plan_id=web", as_="viewer").body["items"][0]["disks"][0]
    assert {k: point[k] for k in good} == good  # kept on the recovery point too
