"""The recovery flow end to end over an in-memory target (tests/support/fake_target.py).

Real parts: the repository (folder store), reconstruction, OS preparation, the point
choice/boot order/network policies, the ASL definition run by the local runner, and the
same definition run by moto's Step Functions interpreter (``execute_state_machine``,
Lambda invocations patched to call the handlers in-process). Only the platform is fake.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from functions.recovery.definition import RECOVERY_FLOW, TEST_CLEANUP, function_name, render, task_names
from functions.recovery.handlers import bind
from functions.recovery.local_runner import run_cleanup, run_recovery
from functions.recovery.models import RunState
from functions.recovery.ports import RecoveryPorts, RunCancelled
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.files import FileSource
from shared.adapters.local.folder_store import FolderStore
from shared.domain.inventory import Site, SiteKind
from shared.domain.plans import BootGroup, NetworkMapping, ProtectedDisk, ProtectedMachine, ProtectionPlan
from shared.domain.points import DiskPoint, RecoveryPoint
from shared.domain.recovery import FlowInput, QemuTargetConfig, RecoveryMode, RecoveryReport
from shared.errors import TargetError
from shared.repo.keys import KdfParams
from shared.repo.repository import Repository
from shared.services.recovery import build_flow_input
from tests.support.disks import create
from tests.support.fake_target import FakeTarget

MiB = 1 << 20
MACHINES = ("db", "app1", "app2")
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A repository with one run of three machines (one disk each), plus the plan and site."""
    root = tmp_path_factory.mktemp("flow")
    repo = Repository.init(
        FolderStore(root / "repo"), "pw", kdf=KdfParams(iterations=1, memory_kib=8192, lanes=1)
    )
    sources, points = {}, []
    when = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    for i, m in enumerate(MACHINES):
        image = create(root / f"{m}.img", 3 * MiB + 4096 * i, seed=40 + i)
        sources[m] = image.read_bytes()
        with FileSource(str(image)) as src:
            p = replicate(repo, f"{m}-disk", src, ReplicationOptions(block_size=256 << 10))
        points.append(RecoveryPoint(
            id=f"run-1-{m}", plan_id="plan-1", machine_id=m, run_id="run-1", time=when, site_id="dr",
            disks=[DiskPoint(disk_id=f"{m}-disk", point_id=p.id, disk_size=p.disk_size)],
        ))  # fmt: skip
    plan = ProtectionPlan(
        id="plan-1", name="three tier", source_site_id="prod", target_site_id="dr",
        machines=[ProtectedMachine(machine_id=m, disks=[ProtectedDisk(disk_id=f"{m}-disk", source=f"/x/{m}")],
                                   networks=["lan"], private_ip=f"10.0.0.{i + 10}", boot_marker=f"up-{m}")
                  for i, m in enumerate(MACHINES)],
        network_mapping=[NetworkMapping(source_network="lan", target_network="dr-lan", test_network="bubble",
                                        security_groups=["sg-app"])],
        boot_groups=[BootGroup(name="database", machines=["db"]),
                     BootGroup(name="application", machines=["app1", "app2"], delay_seconds=2)],
    )  # fmt: skip
    site = Site(
        id="dr", name="dr", site_kind=SiteKind.LOCAL, repository_url=str(root / "repo"),
        credentials_ref="env:UNUSED", recovery_target=QemuTargetConfig(work_dir=str(root / "vms")),
    )  # fmt: skip
    return {"repo": repo, "sources": sources, "points": points, "plan": plan, "site": site}


def flow_input(protected: dict[str, Any], mode: RecoveryMode = RecoveryMode.TEST) -> FlowInput:
    """A fresh flow input (deep-copied: tests edit it, the fixture's points must not change)."""
    return build_flow_input(
        protected["plan"], protected["site"], protected["points"], job_id="job-1", mode=mode, point_time=None,
        now=datetime.now(UTC),
    ).model_copy(deep=True)  # fmt: skip


def ports_for(fake: FakeTarget, repo: Repository, **kw: Any) -> RecoveryPorts:
    return RecoveryPorts(target_for=lambda _config: fake.target(), open_repository=lambda _u, _c: repo, **kw)


def by_id(report: RecoveryReport) -> dict[str, Any]:
    return {m.machine_id: m for m in report.machines()}


def test_two_boot_groups_recover_in_order_with_stage_timings(protected: dict[str, Any]) -> None:
    fake, sleeps = FakeTarget(boot_seconds=0.05), []
    report, execution = run_recovery(
        flow_input(protected), ports_for(fake, protected["repo"]), sleep=sleeps.append
    )

    assert report.state == "succeeded", report.errors
    assert [g.name for g in report.groups] == ["database", "application"]
    assert [[m.machine_id for m in g.machines] for g in report.groups] == [["db"], ["app1", "app2"]]
    assert 2 in sleeps  # the application group's delay went through the Wait state
    powered = dict(fake.power_log)
    assert powered["db"] < powered["app1"] and powered["db"] < powered["app2"]
    assert report.groups[0].finished_at <= report.groups[1].started_at
    for m in report.machines():
        assert m.status == "recovered"
        assert [s.stage for s in m.stages] == [
            "reconstruct",
            "prepare-os",
            "create-instance",
            "attach-networks",
            "power-on",
            "validate-boot",
        ]
        assert all(s.seconds >= 0 and s.ok for s in m.stages)
        assert m.rto_seconds is not None and m.rto_seconds >= m.stages[-1].seconds
        assert m.evidence is not None and m.evidence.ok and m.machine_id in m.evidence.excerpt
        assert {r.type for r in m.resources} == {"disk", "vm", "nic", "process"}
    assert report.rto_seconds == max(m.rto_seconds or 0 for m in report.machines())
    # the disks the target received are the protected bytes
    for r in fake.created:
        if r.type == "disk":
            m = r.detail["machine"]
            assert bytes(fake.disks[r.id]) == protected["sources"][m]
    # test recoveries attach to the isolated network, keeping the fixed address
    assert execution.status == "SUCCEEDED"
    vm_nics = {r.detail["machine"]: r.detail["network"] for r in fake.created if r.type == "nic"}
    assert set(vm_nics.values()) == {"bubble"}
    assert by_id(report)["db"].addresses == ["10.0.0.10"]


def test_a_failed_instance_creation_is_compensated_and_the_others_recover(protected: dict[str, Any]) -> None:
    fake = FakeTarget()
    fake.fail[("create_instance", "app1")] = TargetError("no capacity for app1 in the target zone")
    report, _ = run_recovery(flow_input(protected), ports_for(fake, protected["repo"]), sleep=lambda s: None)

    machines = by_id(report)
    assert report.state == "partial"
    assert machines["app1"].status == "failed"
    assert machines["app1"].failed_stage == "create-instance"
    assert "no capacity for app1" in (machines["app1"].error or "")
    assert machines["app1"].cleanup is not None and len(machines["app1"].cleanup.deleted) == 1
    assert machines["app1"].resources == []
    assert [s.stage for s in machines["app1"].stages][-1] == "cleanup"
    assert not [r for r in fake.live.values() if r.detail["machine"] == "app1"]
    assert machines["db"].status == machines["app2"].status == "recovered"
    assert any("app1" in e for e in report.errors)


def test_a_failed_validation_keeps_the_machine_for_inspection(protected: dict[str, Any]) -> None:
    fake = FakeTarget()
    flow = flow_input(protected)
    flow.groups[0].machines[0].validation.marker = "never"
    report, _ = run_recovery(flow, ports_for(fake, protected["repo"]), sleep=lambda s: None)
    db = by_id(report)["db"]
    assert db.status == "validation-failed" and db.failed_stage == "validate-boot"
    assert "marker never seen" in (db.error or "")
    assert db.resources and all((r.type, r.id) in fake.live for r in db.resources)
    assert report.state == "partial"


def test_cancelling_compensates_every_machine(protected: dict[str, Any]) -> None:
    fake = FakeTarget()
    calls = {"n": 0}

    def checkpoint() -> None:
        calls["n"] += 1
        if calls["n"] > 3:  # ValidateRun, db's reconstruct (2 checkpoints), then cancelled
            raise RunCancelled("the recovery job was cancelled")

    report, _ = run_recovery(flow_input(protected), ports_for(fake, protected["repo"], checkpoint=checkpoint),
                             sleep=lambda s: None)  # fmt: skip
    assert report.state == "failed"
    assert all(m.status == "failed" and "cancelled" in (m.error or "") for m in report.machines())
    assert fake.live == {}


def test_an_unreadable_point_fails_the_run_before_anything_is_created(protected: dict[str, Any]) -> None:
    fake = FakeTarget()
    flow = flow_input(protected)
    flow.groups[1].machines[0].disks[0].point_id = "20260101T000000000Z-deadbeef"
    report, _ = run_recovery(flow, ports_for(fake, protected["repo"]), sleep=lambda s: None)
    assert report.state == "failed" and report.machines() == []
    assert "20260101T000000000Z-deadbeef" in report.errors[0]
    assert fake.created == []


def test_test_cleanup_flow_deletes_what_the_test_left(protected: dict[str, Any]) -> None:
    fake = FakeTarget()
    report, _ = run_recovery(flow_input(protected), ports_for(fake, protected["repo"]), sleep=lambda s: None)
    params = {
        "report_id": report.id, "target": {"platform": "qemu", "work_dir": "/tmp/x"},
        "machines": [{"machine_id": m.machine_id, "resources": [r.model_dump() for r in m.resources]}
                     for m in report.machines()],
    }  # fmt: skip
    outcome = run_cleanup(params, ports_for(fake, protected["repo"]), sleep=lambda s: None)
    assert fake.live == {}
    assert len(outcome.deleted) == len(fake.created) and not outcome.failed
    again = run_cleanup(params, ports_for(fake, protected["repo"]), sleep=lambda s: None)
    assert again.deleted == [] and len(again.already_gone) == len(fake.created)


def test_failover_maps_to_production_networks_and_test_refuses_unisolated_platforms(
    protected: dict[str, Any],
) -> None:
    flow = flow_input(protected, RecoveryMode.FAILOVER)
    nics = [n for g in flow.groups for m in g.machines for n in m.nics]
    assert {n.network for n in nics} == {"dr-lan"} and not any(n.isolated for n in nics)
    assert "covers all 3 machines" in flow.notes[0]


# --- the same definition under moto's Step Functions ----------------------------------------------
class _Invoker:
    def __init__(self, handlers: dict[str, Any]) -> None:
        self.handlers = handlers

    def __call__(self, _self: Any, function_name: str, qualifier: Any, body: Any, headers: Any,
                 response_headers: dict[str, str]) -> bytes:  # fmt: skip
        task = function_name.split(":function:")[-1].split(":")[0].removeprefix("lifeboat-")
        try:
            result = self.handlers[task](json.loads(body) if body else {})
        except Exception as exc:  # answered the way the Lambda Python runtime answers
            response_headers["x-amz-function-error"] = "Unhandled"
            return json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}).encode()
        response_headers["x-amz-executed-version"] = "$LATEST"
        return json.dumps(result).encode()


@pytest.fixture
def moto_sfn(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    import boto3
    from moto import mock_aws
    from moto.awslambda_simple.models import LambdaSimpleBackend

    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    holder = SimpleNamespace(invoker=None)
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", lambda *a: holder.invoker(*a))
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        holder.client = boto3.client("stepfunctions", region_name="us-east-1")
        yield holder


def test_step_functions_runs_the_same_definition_to_the_same_report(
    protected: dict[str, Any], moto_sfn: SimpleNamespace
) -> None:
    fake_local, fake_remote = FakeTarget(), FakeTarget()
    for fake in (fake_local, fake_remote):
        fake.fail[("create_instance", "app2")] = TargetError("quota exceeded")
    flow = flow_input(protected)
    for g in flow.groups:
        g.delay_seconds = 0
    local, _ = run_recovery(flow, ports_for(fake_local, protected["repo"]), sleep=lambda s: None)

    moto_sfn.invoker = _Invoker(bind(ports_for(fake_remote, protected["repo"])))
    client = moto_sfn.client
    arn = client.create_state_machine(
        name="lifeboat-recovery", definition=json.dumps(render(RECOVERY_FLOW)),
        roleArn="arn:aws:iam::123456789012:role/lifeboat-recovery",
    )["stateMachineArn"]  # fmt: skip
    run = client.start_execution(stateMachineArn=arn, input=RunState.of(flow).model_dump_json())[
        "executionArn"
    ]
    deadline = time.monotonic() + 120
    while (described := client.describe_execution(executionArn=run))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "moto execution still RUNNING after 120 s"
        time.sleep(0.05)
    assert described["status"] == "SUCCEEDED", described
    remote = RecoveryReport.model_validate(json.loads(described["output"])["report"])

    def shape(report: RecoveryReport) -> list[tuple[str, str, str | None, list[str], str | None]]:
        return [(m.machine_id, m.status, m.failed_stage, [s.stage for s in m.stages], m.error)
                for m in report.machines()]  # fmt: skip

    assert shape(remote) == shape(local)
    assert remote.state == local.state == "partial", (local.errors, shape(local))
    assert by_id(remote)["app2"].error == "TargetError: quota exceeded"  # the JSON Cause is unwrapped
    assert {(r.type, r.detail["machine"]) for r in fake_remote.live.values()} == {
        (r.type, r.detail["machine"]) for r in fake_local.live.values()
    }


# --- asl-validator ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [RECOVERY_FLOW, TEST_CLEANUP])
def test_definitions_pass_asl_validator(name: str, tmp_path: Path) -> None:
    validator = REPO_ROOT / "tools" / "node" / "node_modules" / ".bin" / "asl-validator"
    assert validator.exists(), "npm asl-validator is missing: run `make deps`"
    rendered = tmp_path / name
    rendered.write_text(json.dumps(render(name)))
    done = subprocess.run([str(validator), "--json-path", str(rendered)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_task_of_the_definitions_has_a_handler() -> None:
    handlers = bind(ports_for(FakeTarget(), None))  # type: ignore[arg-type]
    for name in (RECOVERY_FLOW, TEST_CLEANUP):
        assert set(task_names(name)) <= set(handlers)
        assert all(function_name(t).startswith("lifeboat-") for t in task_names(name))


def test_every_state_that_creates_something_is_compensated() -> None:
    machine = render(RECOVERY_FLOW)["States"]["BootGroups"]["ItemProcessor"]["States"]["Machines"][
        "ItemProcessor"
    ]
    creating = ["ReconstructDisks", "PrepareOS", "CreateInstance", "AttachNetworks", "PowerOn"]
    for name in creating:
        catch = machine["States"][name]["Catch"]
        assert catch[0]["ErrorEquals"] == ["States.ALL"] and catch[0]["Next"] == "CleanupMachine", name
    assert machine["States"]["CleanupMachine"]["Next"] == "RecordMachine"


def test_prepare_os_repairs_a_missing_active_flag_through_the_target(tmp_path: Path) -> None:
    """A real syslinux boot disk whose MBR lost its active flag: PrepareOS finds it and the
    patch reaches the target's disk (checked against the bytes read at inspection)."""
    from tests.support.bootdisk import build_boot_disk

    image = build_boot_disk(tmp_path / "boot.img", marker="fix-me", size_mib=16)
    data = bytearray(image.read_bytes())
    assert data[446] == 0x80
    data[446] = 0x00
    image.write_bytes(data)
    repo = Repository.init(FolderStore(tmp_path / "repo"), None)
    with FileSource(str(image)) as src:
        p = replicate(repo, "boot-d0", src)
    point = RecoveryPoint(id="r-m", plan_id="p", machine_id="m", run_id="r", time=datetime.now(UTC), site_id="s",
                          disks=[DiskPoint(disk_id="boot-d0", point_id=p.id, disk_size=p.disk_size)])  # fmt: skip
    plan = ProtectionPlan(id="p", name="p", source_site_id="s", target_site_id="s",
                          machines=[ProtectedMachine(machine_id="m", disks=[ProtectedDisk(disk_id="boot-d0", source="/x")])])  # fmt: skip
    site = Site(id="s", name="s", site_kind=SiteKind.LOCAL, repository_url="unused",
                recovery_target=QemuTargetConfig(work_dir=str(tmp_path / "vms")))  # fmt: skip
    flow = build_flow_input(plan, site, [point], job_id="j", mode=RecoveryMode.TEST, point_time=None,
                            now=datetime.now(UTC))  # fmt: skip
    fake = FakeTarget()
    report, _ = run_recovery(flow, ports_for(fake, repo), sleep=lambda s: None)

    m = report.machines()[0]
    assert m.status == "recovered", m.error
    assert m.os["os_family"] == "linux" and m.os["bootable"] and m.os["patches_applied"] == 1
    assert any(f["code"] == "patch_applied" and "active" in f["message"] for f in m.os["findings"])
    disk = next(r.id for r in fake.created if r.type == "disk")
    assert fake.disks[disk][446] == 0x80
    data[446] = 0x80
    assert bytes(fake.disks[disk]) == bytes(data)  # nothing else changed


def test_every_task_has_a_lambda_entry_point() -> None:
    from functions.recovery import lambda_handlers

    for name in (RECOVERY_FLOW, TEST_CLEANUP):
        for task in task_names(name):
            assert callable(getattr(lambda_handlers, lambda_handlers.entry_name(task))), task
    assert lambda_handlers.entry_name("PrepareOS") == "prepare_os"
