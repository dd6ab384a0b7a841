"""Issue 5's walk-through: the path a deployed AWS system takes, executed under moto with
nothing deployed (moto in-process: DynamoDB, SQS, S3, EBS, EC2, Step Functions with real
execution).

1. Users call the API Lambda handler (``functions/api/handler.py``) with real API Gateway
   REST events carrying the Cognito authorizer's claims; metadata lands in DynamoDB.
2. The scheduler-made or manual replication job goes on SQS; a node agent (the real
   NodeAgent) reaches the same Lambda handler over HTTP through a stand-in for API
   Gateway (the embedded server forwarding each request as an event), claims the job and
   replicates into the site's S3 repository; the points are recorded in DynamoDB.
3. A test recovery started through the API starts the recovery state machine in Step
   Functions (moto's interpreter); each Task's Lambda invocation runs the real entry
   point in ``functions/recovery/lambda_handlers.py`` (moto's Lambda ``invoke`` is
   patched to call it in-process), recovering into AWS (EBS direct, AMI, ENI, EC2) on moto.
4. moto emits no EventBridge events, so the test hands the execution's end to the
   events Lambda (``functions/recovery/execution_events.py``) the way the rule would.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from functions.embedded.http_server import _LambdaContext, make_server, serve_in_thread, to_event
from functions.recovery.definition import RECOVERY_FLOW, TEST_CLEANUP, render
from shared.api_client import ApiClient
from shared.domain.recovery import AwsTargetConfig
from tests.support.disks import MiB, create
from tests.support.emf import emf_documents

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lifeboat-recovery"


def lambda_arn(task: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:lifeboat-{task}"


def invoke_entry_point(_self: Any, function_name: str, qualifier: Any, body: Any, headers: Any,
                       response_headers: dict[str, str]) -> bytes:  # fmt: skip
    """moto's Lambda invoke -> the real entry point, answering like the Python runtime."""
    from functions.recovery import lambda_handlers

    task = function_name.split(":function:")[-1].split(":")[0].removeprefix("lifeboat-")
    entry = getattr(lambda_handlers, lambda_handlers.entry_name(task))
    try:
        result = entry(json.loads(body) if body else {}, _LambdaContext())
    except Exception as exc:
        response_headers["x-amz-function-error"] = "Unhandled"
        return json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}).encode()
    response_headers["x-amz-executed-version"] = "$LATEST"
    return json.dumps(result).encode()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    import boto3
    from moto import mock_aws
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.stepfunctions.parser import models as sfn_models

    from functions import aws_composition
    from functions.recovery import lambda_handlers
    from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore
    from shared.adapters.aws.sqs_queue import create_queues

    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE", "LIFEBOAT_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    for var, value in {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "LB_REPO_PASSPHRASE": "walkthrough"}.items():  # fmt: skip
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke_entry_point)
    # moto 5.2 deep-copies a state machine on every StartExecution, and after one execution
    # has run that copy hits a lock it cannot copy; a shallow copy is enough for the clone
    monkeypatch.setattr(sfn_models, "copy", SimpleNamespace(deepcopy=copy.copy))
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        sqs, sfn = boto3.client("sqs"), boto3.client("stepfunctions")
        DynamoMetadataStore.create_table("lifeboat")
        queue_url, _ = create_queues("lifeboat-jobs", 3, sqs)
        boto3.client("s3").create_bucket(Bucket="lifeboat-repo")
        machines = {}
        for name, flow in (("recovery", RECOVERY_FLOW), ("cleanup", TEST_CLEANUP)):
            definition = json.dumps(render(flow, lambda_arn))
            created = sfn.create_state_machine(name=f"lifeboat-{name}", definition=definition, roleArn=ROLE)
            machines[name] = created["stateMachineArn"]
        monkeypatch.setenv("LIFEBOAT_TABLE", "lifeboat")
        monkeypatch.setenv("LIFEBOAT_QUEUE_URL", queue_url)
        monkeypatch.setenv("LIFEBOAT_RECOVERY_STATE_MACHINE", machines["recovery"])
        monkeypatch.setenv("LIFEBOAT_TEST_CLEANUP_STATE_MACHINE", machines["cleanup"])
        aws_composition.control.cache_clear()
        lambda_handlers._ports = None
        yield SimpleNamespace(
            sfn=sfn, ec2=boto3.client("ec2"), ebs=boto3.client("ebs"), s3=boto3.client("s3")
        )
        aws_composition.control.cache_clear()


def api_lambda(method: str, path: str, body: Any = None, *, groups: str = "operator") -> tuple[int, Any]:
    """One call as API Gateway makes it after the Cognito authorizer accepted the user."""
    from functions.api.handler import handler

    event = to_event(method, path, {"Content-Type": "application/json"},
                     json.dumps(body).encode() if body is not None else b"", "198.51.100.7")  # fmt: skip
    event["requestContext"]["authorizer"] = {"claims": {"cognito:username": "ops@example.com",
                                                        "cognito:groups": groups}}  # fmt: skip
    answer = handler(event, _LambdaContext())
    return int(answer["statusCode"]), json.loads(answer["body"]) if answer.get("body") else None


def ok(status_body: tuple[int, Any]) -> Any:
    status, body = status_body
    assert status < 300, (status, body)
    return body


class ApiGatewayStandIn:
    """Forwards HTTP requests to the API Lambda handler as REST proxy events (for the node)."""

    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        from functions.api.handler import handler

        return handler(event, context)


def finish_execution(aws: SimpleNamespace, execution_arn: str, job_id: str) -> dict[str, Any]:
    """Wait for moto's execution, then deliver its end as the EventBridge rule would."""
    from functions.recovery.execution_events import handle

    deadline = time.monotonic() + 180
    while (described := aws.sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "execution still RUNNING after 180 s"
        time.sleep(0.1)
    event = {"source": "aws.states", "detail-type": "Step Functions Execution Status Change",
             "detail": {"executionArn": execution_arn, "name": described["name"], "status": described["status"],
                        "output": described.get("output"), "error": described.get("error"),
                        "cause": described.get("cause")}}  # fmt: skip
    assert described["name"] == job_id
    return handle(event)


def test_walkthrough_api_dynamodb_sqs_node_s3_step_functions(
    aws: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from functions.recovery.node_jobs import job_runners
    from functions.recovery.targets import build_target
    from node_runtime.agent import NodeAgent
    from node_runtime.sources.resolve import SourcePolicy

    vpc = aws.ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    prod = aws.ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24")["Subnet"]["SubnetId"]
    bubble = aws.ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.2.0/24")["Subnet"]["SubnetId"]
    sg = aws.ec2.create_security_group(GroupName="app", Description="app", VpcId=vpc)["GroupId"]
    image = create(tmp_path / "app.img", 3 * MiB, seed=11)

    # 1. the operator configures the site and plan through API Gateway -> Lambda -> DynamoDB
    ok(api_lambda("POST", "/sites", {"id": "aws-dr", "name": "AWS DR", "site_kind": "aws", "region": REGION,
                                     "repository_url": "s3://lifeboat-repo/points", "credentials_ref": "env:LB_REPO_PASSPHRASE",
                                     "recovery_target": {"platform": "aws", "region": REGION}}))  # fmt: skip
    ok(api_lambda("POST", "/plans", {
        "id": "app", "name": "App", "source_site_id": "aws-dr", "target_site_id": "aws-dr", "rpo_minutes": 60,
        "machines": [{"machine_id": "app1", "disks": [{"disk_id": "app1-d0", "source": str(image)}],
                      "networks": ["lan"], "private_ip": "10.40.2.10", "instance_type": "t3.medium"}],
        "network_mapping": [{"source_network": "lan", "target_network": prod, "test_network": bubble,
                             "security_groups": [sg]}],
    }))  # fmt: skip
    ok(api_lambda("POST", "/plans/app/protect"))
    token = ok(api_lambda("POST", "/tokens", {"name": "node-a", "roles": ["node"]},
                          groups="admin"))["secret"]  # fmt: skip

    # 2. a replication job on SQS; the node claims it through "API Gateway" and writes to S3
    job = ok(api_lambda("POST", "/plans/app/replicate-now"))
    server = make_server(ApiGatewayStandIn(), "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        agent = NodeAgent(ApiClient(f"http://127.0.0.1:{server.server_address[1]}", token), name="node-a",
                          site_id="aws-dr", runners=job_runners(build_target),
                          source_policy=SourcePolicy(allowed_roots=[tmp_path]))  # fmt: skip
        agent.register()
        claimed = agent.client.claim(agent.node_id)
        assert claimed is not None and claimed["id"] == job["id"]
        agent.run_job(claimed)
    finally:
        server.shutdown()
    assert ok(api_lambda("GET", f"/jobs/{job['id']}"))["state"] == "succeeded"
    points = ok(api_lambda("GET", "/points?plan_id=app"))["items"]
    assert [p["machine_id"] for p in points] == ["app1"]
    packs = aws.s3.list_objects_v2(Bucket="lifeboat-repo", Prefix="points/")["KeyCount"]
    assert packs > 0  # the repository is in S3

    # 3. a test recovery runs in Step Functions with the real task handlers
    recovery = ok(api_lambda("POST", "/plans/app/recover", {"mode": "test"}))
    assert recovery["state"] == "running" and recovery["params"]["runner"] == "workflow"
    ended = finish_execution(aws, recovery["result"]["execution"], recovery["id"])
    assert ended["state"] == "succeeded", ok(api_lambda("GET", f"/jobs/{recovery['id']}"))
    report = ok(api_lambda("GET", f"/recoveries/{recovery['id']}"))
    machine = report["groups"][0]["machines"][0]
    assert report["state"] == "succeeded" and machine["status"] == "recovered"
    assert [s["stage"] for s in machine["stages"]][-1] == "validate-boot"
    # the Lambda functions printed what they measured as EMF, invocation by invocation
    printed = emf_documents(capsys.readouterr().out)
    emf = {(d["name"], d["dimensions"].get("kind")): d for d in printed}
    assert ("JobsStarted", "replication") in emf  # the node's claim, through the API Lambda
    assert ("JobsStarted", "test-recovery") in emf  # the workflow's start
    replicated = emf[("ReplicatedBytes", None)]
    assert replicated["values"] == [points[0]["disks"][0]["bytes_read"]] and replicated["values"][0] > 0
    stages = {d["dimensions"]["stage"] for d in printed if d["name"] == "RecoveryStageSeconds"}
    assert stages == {s["stage"] for s in machine["stages"]}  # printed by the execution-status event's Lambda
    instance = aws.ec2.describe_instances(InstanceIds=[machine["instance_id"]])["Reservations"][0][
        "Instances"
    ][0]
    assert instance["SubnetId"] == bubble and instance["PrivateIpAddress"] == "10.40.2.10"
    assert [g["GroupId"] for g in instance["NetworkInterfaces"][0]["Groups"]] == [sg]  # on the mapped ENI

    # 4. the test cleanup, also in Step Functions, leaves nothing tagged with the run
    cleanup = ok(api_lambda("POST", "/plans/app/cleanup-test"))
    assert finish_execution(aws, cleanup["result"]["execution"], cleanup["id"])["state"] == "succeeded"
    assert ok(api_lambda("GET", f"/recoveries/{recovery['id']}"))["cleanup_state"] == "cleaned"
    target = build_target(AwsTargetConfig(region=REGION))
    assert target.cleaner.find_tagged(recovery["id"]) == []  # type: ignore[attr-defined]
    state = aws.ec2.describe_instances(InstanceIds=[machine["instance_id"]])["Reservations"][0]["Instances"][
        0
    ]
    assert state["State"]["Name"] == "terminated"
