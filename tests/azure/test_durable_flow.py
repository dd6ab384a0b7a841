"""The recovery flow on Azure Durable Functions, in process, against the local runner.

The orchestrators and activities are the ones the function app registers
(functions/azure/function_app.py), run by tests/support/durable_replay.py, which replays
their history through azure-functions-durable's own context and executor the way the
Durable extension does. The handlers are real, the repository is real (folder store), the
platform is the in-memory fake (tests/support/fake_target.py); the job ends in a real
SQLite control plane through the same completion code as Step Functions' events. The
starter's queue is Azurite's; the Durable extension's HTTP API is a small stand-in.
Fixtures ``protected`` and ``azurite_services`` come through tests/azure/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import functions.azure.function_app as fa
from functions.azure import composition, durable_flow
from functions.recovery.definition import RECOVERY_FLOW, TEST_CLEANUP
from functions.recovery.local_runner import run_cleanup, run_recovery
from functions.recovery.models import RunState
from shared.adapters.azure.durable_starter import DurableQueueStarter, decode_start
from shared.adapters.local.sqlite_metadata import SqliteMetadataStore
from shared.adapters.local.sqlite_queue import SqliteJobQueue
from shared.domain.jobs import Job, JobKind, JobState
from shared.domain.recovery import CleanupOutcome, FlowInput, RecoveryReport
from shared.errors import InvalidInputError, ServiceUnavailableError, TargetError
from shared.services import jobs
from shared.services.context import Control
from shared.workflow.asl import EventType
from tests.functional.test_recovery_flow import by_id, flow_input, ports_for
from tests.servers import AzuriteServices
from tests.support.durable_replay import DurableReplay, Instance
from tests.support.fake_target import FakeTarget

pytestmark = pytest.mark.azure_recovery
START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
JOB = "job-1"  # flow_input()'s run id: the report, the job and the instance share it


# --- harness -------------------------------------------------------------------------------------
def orchestrator(function: Any) -> Any:
    """The user's generator behind a registered orchestrator (what the worker replays)."""
    return function.build().get_user_function().orchestrator_function


def control(tmp_path: Path) -> Control:
    return Control(store=SqliteMetadataStore(tmp_path / "metadata.db"), queue=SqliteJobQueue(tmp_path / "queue.db"),
                   jwt_secret="durable-test-secret-" + "x" * 32)  # fmt: skip


def start_job(ctl: Control, kind: JobKind, params: dict[str, Any]) -> Job:
    """A job recorded as running in a workflow engine, as shared.services.recovery starts one."""
    job = jobs.new_job(kind, plan_id="plan-1", reason="durable test", created_by="tests", params=params)
    return jobs.start_in_workflow(ctl, job.model_copy(update={"id": JOB}), lambda j: j.id)


@pytest.fixture
def durable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """``durable(fake, repo) -> DurableReplay`` over the function app's registered functions."""
    ctl = control(tmp_path)
    monkeypatch.setattr(composition, "control", lambda: ctl)

    def make(fake: FakeTarget, repo: Any) -> DurableReplay:
        ports = ports_for(fake, repo)
        monkeypatch.setattr(composition, "recovery_ports", lambda: ports)
        replay = DurableReplay(
            orchestrators={"recovery_flow": orchestrator(fa.recovery_flow), "test_cleanup": orchestrator(fa.test_cleanup),
                           "flow_branch": orchestrator(fa.flow_branch)},
            activities={durable_flow.TASK: fa.flow_task.build().get_user_function(),
                        durable_flow.FINISHED: fa.flow_finished.build().get_user_function()},
            clock=START,
        )  # fmt: skip
        replay.ctl = ctl  # type: ignore[attr-defined]
        return replay

    yield make


def recover(replay: DurableReplay, flow: FlowInput) -> tuple[RecoveryReport, Instance]:
    ctl: Control = replay.ctl  # type: ignore[attr-defined]
    start_job(
        ctl,
        JobKind.TEST_RECOVERY,
        {"mode": "test", "plan_id": "plan-1", "flow": flow.model_dump(mode="json")},
    )
    instance = replay.run("recovery_flow", flow.model_dump(mode="json"), JOB)
    assert instance.status == "Completed", instance.error
    return RecoveryReport.model_validate(instance.output["report"]), instance


def shape(report: RecoveryReport) -> dict[str, Any]:
    """Everything in a report but clocks and the fake's resource ids."""
    return {
        "state": report.state, "errors": report.errors, "notes": report.notes,
        "groups": [(g.name, g.order, g.delay_seconds, [m.machine_id for m in g.machines]) for g in report.groups],
        "machines": {m.machine_id: {
            "status": m.status, "failed_stage": m.failed_stage, "error": m.error, "group": m.group,
            "stages": [(s.stage, s.ok) for s in m.stages], "addresses": m.addresses, "os": m.os,
            "evidence": m.evidence.model_dump(exclude={"seconds"}) if m.evidence else None,
            "resources": sorted((r.type, json.dumps(r.detail, sort_keys=True)) for r in m.resources),
            "cleanup": (len(m.cleanup.deleted), len(m.cleanup.already_gone), m.cleanup.failed) if m.cleanup else None,
        } for m in report.machines()},
    }  # fmt: skip


def live(fake: FakeTarget) -> list[tuple[str, str]]:
    return sorted((r.type, r.detail["machine"]) for r in fake.live.values())


def local_task_order(execution: Any) -> dict[str, list[str]]:
    """Per machine, the Task states the local runner entered (from its ASL history)."""
    order: dict[str, list[str]] = {}
    for e in execution.history:
        if (
            e.type is EventType.STATE_ENTERED
            and e.data.get("type") == "Task"
            and "machine" in e.data["input"]
        ):
            order.setdefault(e.data["input"]["machine"]["machine_id"], []).append(e.state)
    return order


def durable_task_order(replay: DurableReplay) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for _, name, request in replay.calls:
        if name == durable_flow.TASK and "machine" in request["event"]:
            order.setdefault(request["event"]["machine"]["machine_id"], []).append(request["task"])
    return order


# --- (a) the same report ---------------------------------------------------------------------------
def test_two_groups_three_machines_give_the_local_runners_report(
    protected: dict[str, Any],
    durable: Any,
) -> None:
    flow = flow_input(protected)
    fake_local, fake_durable = FakeTarget(), FakeTarget()
    local, execution = run_recovery(flow, ports_for(fake_local, protected["repo"]), sleep=lambda s: None)
    replay = durable(fake_durable, protected["repo"])
    remote, instance = recover(replay, flow)

    assert remote.state == "succeeded", remote.errors
    assert shape(remote) == shape(local)
    assert [[m.machine_id for m in g.machines] for g in remote.groups] == [["db"], ["app1", "app2"]]
    assert live(fake_durable) == live(fake_local)
    # the same Task states, in the same order, for every machine: the orchestrator follows the ASL
    assert durable_task_order(replay) == local_task_order(execution)
    assert durable_task_order(replay)["db"] == ["ReconstructDisks", "PrepareOS", "CreateInstance", "AttachNetworks",
                                                "PowerOn", "ValidateBoot", "RecordMachine"]  # fmt: skip
    # the machines ran as sub-orchestrations of the boot group's Map; the job ended with the report
    assert {i for i in replay.instances if i != JOB} == {f"{JOB}:BootGroups.0.Machines.0",
                                                          f"{JOB}:BootGroups.1.Machines.0", f"{JOB}:BootGroups.1.Machines.1"}  # fmt: skip
    ctl: Control = replay.ctl
    job = ctl.store.get(Job, JOB)
    assert job.state is JobState.SUCCEEDED and job.result["report"] == instance.output["report"]
    assert ctl.store.get(RecoveryReport, JOB).machines()[0].status == "recovered"


# --- (b) compensation --------------------------------------------------------------------------------
def test_a_failed_stage_is_compensated_and_the_others_recover(
    protected: dict[str, Any],
    durable: Any,
) -> None:
    flow = flow_input(protected)
    fakes = FakeTarget(), FakeTarget()
    for fake in fakes:
        fake.fail[("create_instance", "app1")] = TargetError("no capacity for app1 in the target zone")
    local, _ = run_recovery(flow, ports_for(fakes[0], protected["repo"]), sleep=lambda s: None)
    replay = durable(fakes[1], protected["repo"])
    remote, _ = recover(replay, flow)

    assert shape(remote) == shape(local)
    app1 = by_id(remote)["app1"]
    assert remote.state == "partial" and app1.status == "failed" and app1.failed_stage == "create-instance"
    assert app1.error == "TargetError: no capacity for app1 in the target zone"
    assert app1.resources == [] and app1.cleanup is not None and len(app1.cleanup.deleted) == 1
    assert not [r for r in fakes[1].live.values() if r.detail["machine"] == "app1"]
    assert by_id(remote)["app2"].status == by_id(remote)["db"].status == "recovered"
    assert durable_task_order(replay)["app1"] == ["ReconstructDisks", "PrepareOS", "CreateInstance", "CleanupMachine",
                                                  "RecordMachine"]  # fmt: skip
    assert replay.retries == []  # a TargetError is no Retry rule's: not retried
    assert replay.ctl.store.get(Job, JOB).state is JobState.FAILED  # partial: as job_outcome decides


# --- (c) retries --------------------------------------------------------------------------------------
def flaky(fake: FakeTarget, machine: str, failures: int) -> None:
    """``create_instance`` of ``machine`` raises ServiceUnavailableError ``failures`` times first."""
    real, left = fake.create_instance, {"n": failures}

    def create_instance(spec: Any, disks: Any) -> Any:
        if spec.machine_id == machine and left["n"] > 0:
            left["n"] -= 1
            raise ServiceUnavailableError("the compute API is throttling")
        return real(spec, disks)

    fake.create_instance = create_instance  # type: ignore[method-assign]


def test_a_transient_error_is_retried_as_the_asl_retry_says(protected: dict[str, Any], durable: Any) -> None:
    rule = durable_flow.definition(RECOVERY_FLOW)["States"]["BootGroups"]["ItemProcessor"]["States"]["Machines"][
        "ItemProcessor"]["States"]["CreateInstance"]["Retry"][0]  # fmt: skip
    assert "ServiceUnavailableError" in rule["ErrorEquals"] and rule["MaxAttempts"] == 3
    fake = FakeTarget()
    flaky(fake, "app2", 2)
    replay = durable(fake, protected["repo"])
    report, _ = recover(replay, flow_input(protected))

    assert report.state == "succeeded"
    app2 = f"{JOB}:BootGroups.1.Machines.1"
    assert replay.retries == [
        (app2, durable_flow.TASK, 2.0),
        (app2, durable_flow.TASK, 4.0),
    ]  # IntervalSeconds, x BackoffRate
    attempts = [r for i, _, r in replay.calls if i == app2 and r["task"] == "CreateInstance"]
    assert len(attempts) == 3


def test_retries_exhausted_end_in_the_catch_like_the_local_runner(
    protected: dict[str, Any],
    durable: Any,
) -> None:
    flow = flow_input(protected)
    fakes = FakeTarget(), FakeTarget()
    for fake in fakes:
        flaky(fake, "app2", 100)
    local, _ = run_recovery(flow, ports_for(fakes[0], protected["repo"]), sleep=lambda s: None)
    replay = durable(fakes[1], protected["repo"])
    remote, _ = recover(replay, flow)

    assert shape(remote) == shape(local)
    assert by_id(remote)["app2"].error == "ServiceUnavailableError: the compute API is throttling"
    app2 = f"{JOB}:BootGroups.1.Machines.1"
    assert [d for i, _, d in replay.retries if i == app2] == [2.0, 4.0, 8.0]  # MaxAttempts 3: four attempts
    assert live(fakes[1]) == live(fakes[0]) and ("vm", "app2") not in live(fakes[1])


# --- (d) the group delay -------------------------------------------------------------------------------
def test_the_group_delay_is_a_durable_timer(protected: dict[str, Any], durable: Any) -> None:
    flow = flow_input(protected)
    assert [g.delay_seconds for g in flow.groups] == [0, 2]
    replay = durable(FakeTarget(), protected["repo"])
    recover(replay, flow)

    assert [i for i, _ in replay.timers] == [JOB]  # one timer, in the top-level orchestration
    history = replay.instances[JOB].history
    kinds = [(e["EventType"], e.get("InstanceId")) for e in history]
    created = next(i for i, e in enumerate(history) if e["EventType"] == 10)  # TimerCreated
    group0_done = max(
        i for i, e in enumerate(history) if e["EventType"] == 8
    )  # SubOrchestrationInstanceCompleted
    group1 = kinds.index((7, f"{JOB}:BootGroups.1.Machines.0"))  # SubOrchestrationInstanceCreated
    assert kinds.index((7, f"{JOB}:BootGroups.0.Machines.0")) < created < group1 < group0_done
    decided = max(e["Timestamp"] for e in history[:created] if e["EventType"] == 12)  # OrchestratorStarted
    fire_at = datetime.fromisoformat(history[created]["FireAt"].replace("Z", "+00:00"))
    assert fire_at - datetime.fromisoformat(decided.replace("Z", "+00:00")) == timedelta(seconds=2)


# --- (e) test cleanup -----------------------------------------------------------------------------------
def test_test_cleanup_through_durable_equals_run_cleanup(protected: dict[str, Any], durable: Any) -> None:
    fake = FakeTarget()
    report, _ = run_recovery(flow_input(protected), ports_for(fake, protected["repo"]), sleep=lambda s: None)
    machines = [{"machine_id": m.machine_id, "resources": [r.model_dump(mode="json") for r in m.resources]}
                for m in report.machines()]  # fmt: skip
    payload = {"target": {"platform": "qemu", "work_dir": "/tmp/x"}, "machines": machines}
    twin = FakeTarget()
    twin.live, twin.created = dict(fake.live), list(fake.created)
    expected = run_cleanup(
        {**payload, "report_id": report.id}, ports_for(fake, protected["repo"]), sleep=lambda s: None
    )

    replay = durable(twin, protected["repo"])
    start_job(replay.ctl, JobKind.CLEANUP, {"plan_id": "plan-1"})  # type: ignore[attr-defined]
    instance = replay.run("test_cleanup", payload, JOB)
    assert instance.status == "Completed", instance.error
    assert CleanupOutcome.model_validate(instance.output["cleanup"]) == expected
    assert twin.live == {} and len(expected.deleted) == len(fake.created)
    assert (
        len([i for i in replay.instances if i.startswith(f"{JOB}:Machines.")]) == 3
    )  # MaxConcurrency 4: one batch
    job = replay.ctl.store.get(Job, JOB)  # type: ignore[attr-defined]
    assert job.state is JobState.SUCCEEDED and job.result["cleanup"] == instance.output["cleanup"]


# --- failures of the flow itself ------------------------------------------------------------------------
def test_an_unreadable_point_is_caught_to_the_report_and_a_lost_job_fails_the_orchestration(
    protected: dict[str, Any],
    durable: Any,
) -> None:
    flow = flow_input(protected)
    flow.groups[1].machines[0].disks[0].point_id = "20260101T000000000Z-deadbeef"
    local, _ = run_recovery(flow, ports_for(FakeTarget(), protected["repo"]), sleep=lambda s: None)
    replay = durable(FakeTarget(), protected["repo"])
    remote, _ = recover(replay, flow)
    assert shape(remote) == shape(local) and remote.state == "failed" and remote.machines() == []

    # a flow whose job does not exist: the ending activity fails (after its retries), so does the instance
    other = durable(FakeTarget(), protected["repo"])
    lost = other.run(
        "recovery_flow", RunState.of(flow_input(protected)).model_dump(mode="json"), "job-unknown"
    )
    assert lost.status == "Failed" and "job-unknown" in (lost.error or "")


def test_the_walker_refuses_asl_it_does_not_implement(monkeypatch: pytest.MonkeyPatch) -> None:
    definition = durable_flow.definition(RECOVERY_FLOW)
    changed = json.loads(json.dumps(definition))
    changed["States"]["WriteReport"] = {"Type": "Choice", "Choices": [], "Default": "ValidateRun"}
    with pytest.raises(ValueError, match=r"\$\.States\.WriteReport: state type 'Choice'"):
        durable_flow._check(changed, "$")
    changed = json.loads(json.dumps(definition))
    changed["States"]["ValidateRun"]["Parameters"] = {"x.$": "$.run"}
    with pytest.raises(ValueError, match="Parameters"):
        durable_flow._check(changed, "$")
    assert durable_flow.definition(TEST_CLEANUP)["States"]["Machines"]["MaxConcurrency"] == 4


def test_errors_survive_the_extensions_wrapping() -> None:
    failure = durable_flow.RetryableTaskError("ServiceUnavailableError", 'quota "x"\nexceeded')
    wrapped = "Activity function 'flow_task' failed:  \n " + json.dumps({"Message": f"Exception: {failure}"})
    decoded = durable_flow.flow_error(Exception(wrapped))
    assert (decoded.error, decoded.cause) == ("ServiceUnavailableError", 'quota "x"\nexceeded')
    assert durable_flow.flow_error(Exception("host restarted")).as_json() == {
        "Error": "States.TaskFailed", "Cause": "host restarted"}  # fmt: skip


# --- (f) the starter and the queue trigger ---------------------------------------------------------------
class _Extension(BaseHTTPRequestHandler):
    """The two calls of the Durable extension's HTTP API that the starter makes."""

    instances: dict[str, dict[str, Any]]

    def do_GET(self) -> None:
        instance_id = self.path.split("/instances/")[1].split("?")[0]
        found = self.instances.get(instance_id)
        self._answer(200 if found else 404, {"instanceId": instance_id, "runtimeStatus": "Running",
                                             "name": found["name"]} if found else "")  # fmt: skip

    def do_POST(self) -> None:
        name, instance_id = self.path.split("/orchestrators/")[1].split("?")[0].split("/")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        # the client posts the input already serialised (a JSON string); the extension keeps that text
        self.instances[instance_id] = {
            "name": name,
            "input": json.loads(body) if isinstance(body, str) else body,
        }
        self._answer(202, {"id": instance_id})

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def extension() -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    instances: dict[str, dict[str, Any]] = {}
    handler = type("Extension", (_Extension,), {"instances": instances})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    binding = {"taskHubName": "lifeboat", "creationUrls": {}, "managementUrls": {},
               "rpcBaseUrl": f"http://127.0.0.1:{server.server_port}/runtime/webhooks/durabletask/"}  # fmt: skip
    yield json.dumps(binding), instances
    server.shutdown()


def test_the_starter_enqueues_and_the_trigger_starts_one_instance(
    azurite_services: AzuriteServices,
    extension: tuple[str, dict[str, Any]],
    protected: dict[str, Any],
) -> None:
    binding, instances = extension
    conn = azurite_services.connection_string()
    queue = f"flows-{datetime.now().strftime('%H%M%S%f')}"
    starter = DurableQueueStarter(conn, queue).create_queue()
    payload = RunState.of(flow_input(protected)).model_dump(mode="json")
    assert starter.start("recovery", JOB, payload) == JOB
    starter.start("recovery", JOB, payload)  # the same job twice: still one instance
    with pytest.raises(InvalidInputError):
        starter.start("failback", JOB, payload)

    messages = list(starter._queue.receive_messages(max_messages=10, visibility_timeout=30))
    assert len(messages) == 2 and decode_start(messages[0].content) == ("recovery", JOB, payload)
    trigger = fa.flow_starter.build().get_user_function()

    async def deliver() -> None:
        from azure.durable_functions.models.utils import http_utils

        try:
            for m in messages:
                await trigger(message=func.QueueMessage(id=m.id, body=m.content.encode()), client=binding)
        finally:
            await http_utils._close_session()

    asyncio.run(deliver())
    assert instances == {JOB: {"name": "recovery_flow", "input": payload}}


def test_composition_wires_the_starter_when_the_flow_queue_is_set() -> None:
    env = {"LIFEBOAT_STORAGE": "UseDevelopmentStorage=true", "LIFEBOAT_JWT_SECRET": "s" * 40}
    assert composition.build_control(env).workflows is None  # recoveries go to nodes
    ctl = composition.build_control({**env, "LIFEBOAT_FLOW_QUEUE": "fq"})
    assert isinstance(ctl.workflows, DurableQueueStarter) and ctl.workflows.queue_name == "fq"
    assert set(durable_flow.FLOWS) == {"recovery", "test-cleanup"}
