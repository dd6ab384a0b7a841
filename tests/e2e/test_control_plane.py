"""The control plane as a user runs it: ``lifeboat up`` and ``lifeboat node run`` as separate
processes, everything over real HTTP on loopback.

A plan protecting two make_disk.py images with a 1-minute RPO is created through the API;
the scheduler and the node produce recovery points on their own; a mutation produces a
smaller incremental; a node killed with SIGKILL mid-job is restarted and the job
completes (after the short job lease this test configures).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.api_client import ApiClient
from tests.support.disks import MiB, create, mutate, sha256

LEASE_SECONDS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Processes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args], stdout=log, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def test_scheduler_and_node_protect_disks_and_survive_a_killed_node(procs: Processes, tmp_path: Path) -> None:
    data = tmp_path / "lifeboat-data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs.start("up", "up", "--data-dir", str(data), "--port", str(port), "--no-node",
                "--scheduler-seconds", "1", "--job-lease-seconds", str(LEASE_SECONDS))  # fmt: skip
    password = wait_for(
        "admin password", lambda: re.search(r"password '([^']+)'", procs.log("up")), 60
    ).group(1)
    node_args = ("node", "run", "--api", url, "--site", "local", "--name", "n1", "--poll-seconds", "0.5",
                 "--token-file", str(data / "secrets" / "node.token"), "--source-root", str(tmp_path))  # fmt: skip
    node = procs.start("node", *node_args)

    api = ApiClient(url)
    api.login("admin", password)
    assert api.request("GET", "/health")["status"] == "ok"
    spec = api.request("GET", "/openapi.json")
    assert "/plans" in spec["paths"]

    web = create(tmp_path / "web1.img", 12 * MiB, seed=1)
    db = create(tmp_path / "db1.img", 8 * MiB, seed=2)
    plan = api.create_plan(
        id="shop", name="Shop", source_site_id="local", target_site_id="local", rpo_minutes=1,
        machines=[{"machine_id": "web1", "disks": [{"disk_id": "web1-d0", "source": str(web), "block_size": 65536}]},
                  {"machine_id": "db1", "disks": [{"disk_id": "db1-d0", "source": str(db)}]}],
        boot_groups=[{"name": "db", "machines": ["db1"]}, {"name": "web", "machines": ["web1"]}],
    )  # fmt: skip
    assert plan["state"] == "draft"
    api.plan_action("shop", "protect")

    # the scheduler (every second) and the node make the first points on their own
    first = wait_for(
        "first recovery points", lambda: len(api.points(plan_id="shop")) >= 2 and api.points(plan_id="shop")
    )
    assert {p["machine_id"] for p in first} == {"web1", "db1"}
    assert len({p["run_id"] for p in first}) == 1  # one plan run, one consistent moment
    full_job = api.job(first[0]["run_id"])
    assert full_job["state"] == "succeeded" and full_job["created_by"] == "scheduler"
    full_bytes = sum(d["bytes_new"] for p in first for d in p["disks"])
    assert full_bytes > 10 * MiB

    # a 5% change: the next scheduled run (half the RPO later) sends much less
    mutate(web, 0.05, seed=3)
    second = wait_for("incremental points", lambda: len(api.points(plan_id="shop")) >= 4 and api.points(plan_id="shop"),
                      timeout=150, every=1)  # fmt: skip
    newest = [p for p in second if p["run_id"] != first[0]["run_id"]]
    incremental_bytes = sum(d["bytes_new"] for p in newest for d in p["disks"])
    assert 0 < incremental_bytes < full_bytes / 4
    # nodes record what each point added to the repository after deduplication and compression
    full_stored = sum(d["bytes_stored"] for p in first for d in p["disks"])
    assert 0 < sum(d["bytes_stored"] for p in newest for d in p["disks"]) < full_stored / 4
    # the data-plane CLI reads the same repository: the restored disk is the mutated one
    env = {**os.environ, "LIFEBOAT_PASSWORD": (data / "secrets" / "repository.key").read_text().strip()}
    out = tmp_path / "web1.restored"
    subprocess.run([sys.executable, "-m", "cli.main", "restore", "--repo", str(data / "repository"),
                    "--disk", "web1-d0", str(out)], check=True, env=env, capture_output=True)  # fmt: skip
    assert sha256(out) == sha256(web)

    # kill the node mid-job: pause scheduling, give the plan a big slow disk, replicate now by hand
    api.plan_action("shop", "pause")
    big = create(tmp_path / "big.img", 96 * MiB, seed=4)
    current = api.request("GET", "/plans/shop")
    body = {k: current[k] for k in ("name", "source_site_id", "target_site_id", "rpo_minutes", "machines",
                                    "boot_groups", "network_mapping", "scripts", "window", "retention")}  # fmt: skip
    body["machines"].append({"machine_id": "big1", "disks": [{"disk_id": "big1-d0", "source": str(big)}]})
    body["bandwidth_limit_mbps"] = 8  # ~12 s for the big disk: time to kill the node
    api.request(
        "PUT", "/plans/shop", {**body, "revision": current["revision"]}
    )  # still paused: no scheduled run
    job = api.plan_action("shop", "replicate-now", idempotency_key="kill-test")
    assert api.plan_action("shop", "replicate-now", idempotency_key="kill-test")["id"] == job["id"]
    wait_for("the job to start", lambda: api.job(job["id"])["progress"]["bytes_done"] > 0, every=0.2)
    node.send_signal(signal.SIGKILL)
    node.wait()
    assert api.job(job["id"])["state"] == "running"  # the API does not know yet

    procs.start("node-restarted", *node_args)
    done = wait_for("the job after the node restart",
                    lambda: (j := api.job(job["id"]))["state"] in ("succeeded", "failed") and j, timeout=180)  # fmt: skip
    assert done["state"] == "succeeded", done["errors"]
    assert done["attempts"] == 2 and any("stopped reporting" in e for e in done["errors"])
    runs = {p["run_id"] for p in api.points(plan_id="shop", machine_id="big1")}
    assert runs == {job["id"]}  # exactly one point for the machine: nothing duplicated
    # the CLI's API commands see the same state
    cli_env = {
        **os.environ,
        "LIFEBOAT_CONFIG_DIR": str(tmp_path / "cli-config"),
        "LIFEBOAT_API_PASSWORD": password,
    }

    def cli(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "cli.main", *args], env=cli_env, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "logged in" in cli("login", "--api", url, "--username", "admin")
    assert oct((tmp_path / "cli-config" / "session.json").stat().st_mode & 0o777) == "0o600"
    assert [p["id"] for p in json.loads(cli("plans", "list", "--json"))] == ["shop"]
    assert job["id"] in {j["id"] for j in json.loads(cli("jobs", "list", "--plan", "shop", "--json"))}
    assert {p["machine_id"] for p in json.loads(cli("recovery-points", "--plan", "shop", "--json"))} == {
        "web1", "db1", "big1"}  # fmt: skip
    assert "local" in cli("sites", "list")
    # audit trail of the mutating calls
    actions = {e["action"] for e in api.pages("/audit")}
    assert {"POST /plans", "POST /plans/<plan_id>/protect", "PUT /plans/<plan_id>"} <= actions
    assert json.loads(json.dumps(api.request("GET", "/reports/rpo")))["plans"][0]["plan_id"] == "shop"
    # the storage report sums what the nodes recorded
    storage = json.loads(cli("report", "storage", "--json"))
    points = api.points(plan_id="shop")
    assert storage["total"]["points"] == len(points) and storage["total"]["unrecorded_points"] == 0
    assert storage["total"]["stored_bytes"] == sum(d["bytes_stored"] for p in points for d in p["disks"]) > 0
    assert {m["machine_id"] for m in storage["machines"]} == {"web1", "db1", "big1"}
