"""A control plane, a node agent and a fake recovery target, driven through one scenario
that makes every catalogue metric happen at least once (tests/functional/test_metrics.py,
tests/cdk/test_metrics_dashboard.py).

The scenario, over real HTTP on loopback: a plan of two disk images (tests/support/disks.py)
replicated by the node; a scheduler tick 300 s after the older machine's point (RPO lag, a stale
plan's alert and due job, which fails on the node: its disk does not exist); a queued job
cancelled; a test recovery into the fake target; and a retried completion of that
recovery, which the control plane refuses (and must not count again).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from functions.api import app as api
from functions.embedded.http_server import make_server, serve_in_thread
from functions.recovery.node_jobs import job_runners
from node_runtime.agent import NodeAgent
from node_runtime.sources.resolve import SourcePolicy
from shared.adapters.metrics.emf import EmfMetrics
from shared.api_client import ApiClient
from shared.domain.identity import Role
from shared.errors import LifeboatError
from shared.services import auth
from shared.services.context import Control
from shared.services.scheduler import tick
from tests.support.control import Clock, InProcessApi
from tests.support.disks import MiB, create
from tests.support.emf import emf_documents
from tests.support.fake_target import FakeTarget

#: the scheduler tick runs this long after the plan's older point: the plan's RPO lag
LAG_SECONDS = 300


def written_bytes(image: Path, unit: int = MiB) -> int:
    """Bytes make_disk wrote: its 1 MiB units that are not all zero (zero units are holes)."""
    total = 0
    with open(image, "rb") as f:
        while chunk := f.read(unit):
            if chunk.count(0) != len(chunk):
                total += len(chunk)
    return total


@dataclass
class Lab:
    ctl: Control
    url: str
    tmp: Path
    clock: Clock
    fake: FakeTarget = field(default_factory=FakeTarget)

    def __post_init__(self) -> None:
        self.ctl.now = self.clock
        self.operator = ApiClient(self.url, self.token("ops", Role.OPERATOR))
        _, node_token = auth.create_api_token(self.ctl.store, name="lab-node", owner="tests", roles=[Role.NODE],
                                              node_id="node-lab")  # fmt: skip
        self.agent = NodeAgent(ApiClient(self.url, node_token), name="lab-node", site_id="lab",
                               runners=job_runners(lambda _cfg: self.fake.target()), progress_seconds=0.2,
                               source_policy=SourcePolicy(allowed_roots=[self.tmp]))  # fmt: skip
        self.images = {
            m: create(self.tmp / f"{m}.img", 3 * MiB, seed=90 + i) for i, m in enumerate(("db", "web"))
        }

    def token(self, name: str, role: Role) -> str:
        """An API token (no expiry: the scenario moves the control plane's clock)."""
        return auth.create_api_token(self.ctl.store, name=name, owner="tests", roles=[role])[1]

    def run_next_job(self) -> dict[str, Any]:
        job = None
        for _ in range(5):  # a claim that meets a cancelled job's message acks it and answers nothing
            job = self.agent.client.claim(self.agent.node_id)
            if job is not None:
                break
        assert job is not None, "no job to claim"
        self.agent.run_job(job)
        return self.operator.job(job["id"])


@dataclass
class Outcome:
    replication: dict[str, Any]
    stale: dict[str, Any]
    cancelled: dict[str, Any]
    recovery: dict[str, Any]
    report: dict[str, Any]
    tick_created: list[str]
    tick_alerts: list[str]
    retried_completion_refused: bool


def run(lab: Lab) -> Outcome:
    op = lab.operator
    op.create_site(id="lab", name="lab", site_kind="local", repository_url=str(lab.tmp / "repo"),
                   recovery_target={"platform": "qemu", "work_dir": str(lab.tmp / "vms")})  # fmt: skip
    op.create_plan(
        id="shop", name="Shop", source_site_id="lab", target_site_id="lab", rpo_minutes=600,
        machines=[{"machine_id": m, "disks": [{"disk_id": f"{m}-d0", "source": str(p)}]} for m, p in lab.images.items()],
        boot_groups=[{"name": "all", "machines": list(lab.images)}],
    )  # fmt: skip
    op.create_plan(id="stale", name="Stale", source_site_id="lab", target_site_id="lab", rpo_minutes=1,
                   machines=[{"machine_id": "gone", "disks": [{"disk_id": "gone-d0",
                                                              "source": str(lab.tmp / "missing.img")}]}])  # fmt: skip
    lab.agent.register()
    op.plan_action("shop", "protect")
    op.plan_action("shop", "replicate-now")
    replication = lab.run_next_job()

    oldest = min(
        datetime.fromisoformat(p["time"]) for p in op.points(plan_id="shop")
    )  # one point per machine
    lab.clock.now = oldest.astimezone(UTC) + timedelta(seconds=LAG_SECONDS)
    op.plan_action("stale", "protect")  # created at the start: long past its 1-minute RPO now
    report = tick(lab.ctl)
    stale = lab.run_next_job()

    queued = op.plan_action("shop", "replicate-now")
    cancelled = op.request("POST", f"/jobs/{queued['id']}/cancel")

    job = op.request("POST", "/plans/shop/recover", {"mode": "test"})
    recovery = lab.run_next_job()
    assert recovery["id"] == job["id"]
    try:
        lab.agent.client.complete(recovery["id"], "succeeded", result=recovery["result"])
        refused = False
    except LifeboatError:
        refused = True
    return Outcome(replication, stale, cancelled, recovery, op.request("GET", f"/recoveries/{job['id']}"),
                   report.created, report.alerts_opened, refused)  # fmt: skip


def run_with_emf(tmp: Path) -> tuple[Lab, Outcome, list[dict[str, Any]]]:
    """The scenario on the in-process control plane with the EMF adapter (as the Lambda
    functions have it); returns the EMF metrics its flush printed."""
    control = InProcessApi(tmp)
    control.ctl.metrics = EmfMetrics()
    server = make_server(api, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        lab = Lab(control.ctl, f"http://127.0.0.1:{server.server_address[1]}", tmp, Clock(datetime.now(UTC)))
        outcome = run(lab)
    finally:
        server.shutdown()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        control.ctl.metrics.flush()  # what a Lambda handler does at the end of each invocation
    return lab, outcome, emf_documents(printed.getvalue())
