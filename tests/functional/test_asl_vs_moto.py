"""The local ASL interpreter against moto's Step Functions interpreter.

Each definition runs twice with the same Python handlers: once with
:func:`shared.workflow.asl.run_state_machine`, once in moto with
``execute_state_machine`` on, where Lambda calls reach ``LambdaSimpleBackend.invoke``,
patched here to call the handler in-process. Outputs (or error names) must be equal.

What moto's interpreter does that the test relies on (moto 5.x, read from its source):

* ``LambdaSimpleBackend.invoke(self, function_name, qualifier, body, headers,
  response_headers)`` gets the name or ARN as written in the definition and the payload
  as a JSON string; it returns the response payload as bytes. Setting
  ``x-amz-function-error`` in ``response_headers`` makes it a function error, whose
  ``errorType`` becomes the ASL Error and whose *whole payload* (compact JSON) the Cause.
  ``x-amz-executed-version`` fills ``ExecutedVersion`` of the ``lambda:invoke`` result.
* Retry delays go through ``time.sleep`` in ``retrier_decl``; it is patched so the
  two interpreters' delay sequences can be compared without waiting.
* A path that steps through an array index and goes on (``$[0].eni``) yields a
  one-element list in moto, the value in Step Functions; the definitions avoid it.
* ``States.TaskFailed`` in moto matches only non-``States.*`` errors (AWS: every error
  but ``States.Timeout``); the flows here only raise handler errors, where both agree.

Known difference, asserted below rather than hidden: a Lambda error's Cause is
``str(exc)`` locally but the JSON error payload in Step Functions.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from shared.workflow.asl import Execution, ExecutionStatus, TaskFailed, run_state_machine

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lifeboat-recovery"


def fn(name: str) -> str:
    """A plain Lambda function ARN, as CDK puts in a Task's Resource."""
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


# --- handlers (the same Python functions for both interpreters) -------------------------
class InstanceCreationError(Exception):
    pass


class TransientError(Exception):
    pass


ATTEMPTS: Counter[str] = Counter()


def reconstruct_disk(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "volume_id": f"vol-{event['plan']}-{event['index']}",
        "disk": event["disk"],
        "gib": 8 * (event["index"] + 1),
    }


def boot_instance(event: dict[str, Any]) -> dict[str, Any]:
    return {"instance_id": f"i-{event['plan']}", "volumes": event["volumes"]}


def attach_network(event: dict[str, Any]) -> dict[str, Any]:
    return {"eni": f"eni-{event['plan']}"}


def create_instance(event: dict[str, Any]) -> dict[str, Any]:
    if event.get("fail"):
        raise InstanceCreationError(f"no capacity for plan {event['plan']}")
    return {"instance_id": f"i-{event['plan']}"}


def flaky(event: dict[str, Any]) -> dict[str, Any]:
    ATTEMPTS[event["id"]] += 1
    if ATTEMPTS[event["id"]] <= event["failures"]:
        raise TransientError(f"attempt {ATTEMPTS[event['id']]} failed")
    return {"attempts": ATTEMPTS[event["id"]]}


def validate_boot(event: dict[str, Any]) -> dict[str, Any]:
    if event["status"] != "ok":
        raise TaskFailed("BootValidationFailed", f"instance {event['instance']} did not boot")
    return {"validated": True}


HANDLERS = {
    "reconstruct_disk": reconstruct_disk,
    "boot_instance": boot_instance,
    "attach_network": attach_network,
    "create_instance": create_instance,
    "flaky": flaky,
    "validate_boot": validate_boot,
}


def fake_lambda_invoke(
    self: Any,
    function_name: str,
    qualifier: str | None,
    body: Any,
    headers: Any,
    response_headers: dict[str, str],
) -> bytes:
    """Stands in for ``LambdaSimpleBackend.invoke``: run the Python handler in-process.

    Errors are answered the way the Lambda Python runtime answers them.
    """
    handler = HANDLERS[function_name.split(":function:")[-1].split(":")[0]]
    event = json.loads(body) if body else {}
    try:
        result = handler(event)
    except TaskFailed as exc:
        error, message = exc.error, exc.cause
    except Exception as exc:
        error, message = type(exc).__name__, str(exc)
    else:
        response_headers["x-amz-executed-version"] = "$LATEST"
        return json.dumps(result).encode()
    response_headers["x-amz-function-error"] = "Unhandled"
    payload = {"errorMessage": message, "errorType": error, "requestId": "local", "stackTrace": []}
    return json.dumps(payload).encode()


# --- definitions ---------------------------------------------------------------------------
RECOVERY = {
    "Comment": "Map over disks, decide with Choice, boot through the lambda:invoke integration",
    "StartAt": "Prepare",
    "States": {
        "Prepare": {
            "Type": "Pass",
            "Parameters": {
                "plan.$": "$.plan",
                "disks.$": "$.disks",
                "summary.$": "States.Format('plan {} has {} disks', $.plan, States.ArrayLength($.disks))",
            },
            "Next": "Reconstruct",
        },
        "Reconstruct": {
            "Type": "Map",
            "ItemsPath": "$.disks",
            "MaxConcurrency": 2,
            "ItemSelector": {
                "disk.$": "$$.Map.Item.Value",
                "index.$": "$$.Map.Item.Index",
                "plan.$": "$.plan",
            },
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "INLINE"},
                "StartAt": "ReconstructDisk",
                "States": {
                    "ReconstructDisk": {"Type": "Task", "Resource": fn("reconstruct_disk"), "End": True}
                },
            },
            "ResultSelector": {"volumes.$": "$[*].volume_id", "count.$": "States.ArrayLength($)"},
            "ResultPath": "$.reconstructed",
            "Next": "Enough?",
        },
        "Enough?": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.plan", "StringMatches": "test-*", "Next": "DryRun"},
                {"Variable": "$.reconstructed.count", "NumericGreaterThanEquals": 2, "Next": "Boot"},
            ],
            "Default": "TooFew",
        },
        "Boot": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {
                "FunctionName": "boot_instance",
                "Payload": {"volumes.$": "$.reconstructed.volumes", "plan.$": "$.plan"},
            },
            "ResultSelector": {"instance.$": "$.Payload.instance_id", "status.$": "$.StatusCode"},
            "ResultPath": "$.boot",
            "OutputPath": "$.boot",
            "End": True,
        },
        "DryRun": {"Type": "Succeed", "OutputPath": "$.reconstructed"},
        "TooFew": {"Type": "Fail", "Error": "NotEnoughDisks", "Cause": "fewer than two disks to recover"},
    },
}

LAUNCH = {
    "Comment": "Parallel branches; one fails; Catch routes to a compensating state",
    "StartAt": "Launch",
    "States": {
        "Launch": {
            "Type": "Parallel",
            "Branches": [
                {
                    "StartAt": "Network",
                    "States": {
                        "Network": {
                            "Type": "Task",
                            "Resource": "arn:aws:states:::lambda:invoke",
                            "Parameters": {"FunctionName": fn("attach_network"), "Payload.$": "$"},
                            "OutputPath": "$.Payload",
                            "End": True,
                        }
                    },
                },
                {
                    "StartAt": "Instance",
                    "States": {"Instance": {"Type": "Task", "Resource": fn("create_instance"), "End": True}},
                },
            ],
            # moto (5.x) returns a list for a path that steps through an index and goes on
            # ("$[0].eni" -> ["eni-p1"]); Step Functions returns the value. A path that
            # *ends* at the index agrees in both, so this selects whole branch outputs.
            "ResultSelector": {"network.$": "$[0]", "instance.$": "$[1]"},
            "ResultPath": "$.launched",
            "Catch": [
                {"ErrorEquals": ["InstanceCreationError"], "ResultPath": "$.error", "Next": "Compensate"}
            ],
            "Next": "Done",
        },
        "Compensate": {
            "Type": "Pass",
            "Parameters": {
                "failed_with.$": "$.error.Error",
                "note.$": "States.Format('rolled back {}', $.plan)",
                "steps.$": "States.Array('detach', 'delete')",
            },
            "End": True,
        },
        "Done": {"Type": "Succeed"},
    },
}

RETRY = {
    "Comment": "Retry with backoff and a cap, then Catch on States.TaskFailed",
    "StartAt": "Flaky",
    "States": {
        "Flaky": {
            "Type": "Task",
            "Resource": fn("flaky"),
            "Parameters": {"id.$": "$.id", "failures.$": "$.failures"},
            "Retry": [
                {"ErrorEquals": ["ValueError"], "MaxAttempts": 0},
                {
                    "ErrorEquals": ["TransientError"],
                    "IntervalSeconds": 2,
                    "BackoffRate": 3,
                    "MaxAttempts": 3,
                    "MaxDelaySeconds": 10,
                },
            ],
            "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.error", "Next": "GaveUp"}],
            "ResultPath": "$.result",
            "Next": "Done",
        },
        "GaveUp": {"Type": "Pass", "Parameters": {"id.$": "$.id", "error.$": "$.error.Error"}, "End": True},
        "Done": {"Type": "Pass", "End": True},
    },
}

ROUTE = {
    "Comment": "Choice operators: IsPresent, And/Or/Not, Numeric, String, Timestamp, Boolean, *Path",
    "StartAt": "Route",
    "States": {
        "Route": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.forced", "IsPresent": True, "Next": "Forced"},
                {
                    "And": [
                        {"Variable": "$.rpo_minutes", "NumericLessThanEquals": 15},
                        {"Variable": "$.tier", "StringEquals": "gold"},
                    ],
                    "Next": "Gold",
                },
                {
                    "Or": [
                        {"Variable": "$.window_end", "TimestampLessThan": "2026-01-01T00:00:00Z"},
                        {"Variable": "$.approved", "BooleanEquals": False},
                    ],
                    "Next": "Deferred",
                },
                {"Variable": "$.target", "StringEqualsPath": "$.source", "Next": "InPlace"},
                {"Not": {"Variable": "$.tier", "StringMatches": "*silver*"}, "Next": "Other"},
            ],
            "Default": "Silver",
        },
        **{
            route: {"Type": "Pass", "Result": route.lower(), "ResultPath": "$.route", "Next": "Validate"}
            for route in ("Forced", "Gold", "Deferred", "InPlace", "Other", "Silver")
        },
        "Validate": {
            "Type": "Task",
            "Resource": fn("validate_boot"),
            "Parameters": {"status.$": "$.status", "instance.$": "$.route"},
            "ResultPath": "$.validation",
            "End": True,
        },
    },
}

ROUTE_BASE = {
    "rpo_minutes": 60,
    "tier": "silver-2",
    "window_end": "2026-06-01T00:00:00Z",
    "approved": True,
    "target": "aws",
    "source": "vmware",
    "status": "ok",
}

CASES = [
    ("recovery-boot", RECOVERY, {"plan": "prod-1", "disks": ["sda", "sdb", "sdc"]}),
    ("recovery-dry-run", RECOVERY, {"plan": "test-7", "disks": ["sda", "sdb"]}),
    ("recovery-too-few", RECOVERY, {"plan": "prod-2", "disks": ["sda"]}),
    ("launch-ok", LAUNCH, {"plan": "p1", "fail": False}),
    ("launch-compensated", LAUNCH, {"plan": "p2", "fail": True}),
    ("retry-recovers", RETRY, {"id": "a", "failures": 2}),
    ("retry-gives-up", RETRY, {"id": "b", "failures": 9}),
    ("route-forced", ROUTE, {**ROUTE_BASE, "forced": None}),
    ("route-gold", ROUTE, {**ROUTE_BASE, "tier": "gold", "rpo_minutes": 15}),
    ("route-deferred-window", ROUTE, {**ROUTE_BASE, "window_end": "2025-12-31T23:59:59Z"}),
    ("route-deferred-approval", ROUTE, {**ROUTE_BASE, "approved": False}),
    ("route-in-place", ROUTE, {**ROUTE_BASE, "target": "vmware"}),
    ("route-other", ROUTE, {**ROUTE_BASE, "tier": "bronze"}),
    ("route-silver", ROUTE, ROUTE_BASE),
    ("route-boot-fails", ROUTE, {**ROUTE_BASE, "status": "timeout"}),
]


# --- running both --------------------------------------------------------------------------
class MotoStepFunctions:
    """moto's Step Functions with real execution; Lambda calls go to :data:`HANDLERS`."""

    def __init__(self, client: Any, sleeps: list[float]) -> None:
        self.client = client
        self.sleeps = sleeps

    def run(self, name: str, definition: dict[str, Any], data: Any) -> dict[str, Any]:
        arn = self.client.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE)[
            "stateMachineArn"
        ]
        execution = self.client.start_execution(stateMachineArn=arn, input=json.dumps(data))["executionArn"]
        deadline = time.monotonic() + 60
        while True:
            described = self.client.describe_execution(executionArn=execution)
            if described["status"] != "RUNNING":
                return described
            assert time.monotonic() < deadline, f"moto execution {name} still RUNNING after 60 s"
            time.sleep(0.02)


@pytest.fixture
def moto_sfn(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoStepFunctions]:
    import boto3
    from moto import mock_aws
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setattr(LambdaSimpleBackend, "invoke", fake_lambda_invoke)
    sleeps: list[float] = []
    monkeypatch.setattr(retrier_decl, "time", SimpleNamespace(sleep=sleeps.append))
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        yield MotoStepFunctions(boto3.client("stepfunctions", region_name=REGION), sleeps)


def run_locally(definition: dict[str, Any], data: Any) -> tuple[Execution, list[float]]:
    sleeps: list[float] = []
    return run_state_machine(definition, data, resources=HANDLERS, sleep=sleeps.append), sleeps


@pytest.mark.parametrize(("case", "definition", "data"), CASES, ids=[case[0] for case in CASES])
def test_local_runner_matches_moto(
    moto_sfn: MotoStepFunctions, case: str, definition: dict[str, Any], data: Any
) -> None:
    ATTEMPTS.clear()
    local, local_sleeps = run_locally(definition, data)
    ATTEMPTS.clear()
    remote = moto_sfn.run(case, definition, data)

    assert remote["status"] == local.status
    if local.status is ExecutionStatus.SUCCEEDED:
        assert json.loads(remote["output"]) == local.output
    else:
        assert remote.get("error") == local.error
    assert moto_sfn.sleeps == local_sleeps


EXPECTED_OUTPUTS = {
    "recovery-boot": {"instance": "i-prod-1", "status": 200},
    "recovery-dry-run": {"volumes": ["vol-test-7-0", "vol-test-7-1"], "count": 2},
    "launch-compensated": {
        "failed_with": "InstanceCreationError",
        "note": "rolled back p2",
        "steps": ["detach", "delete"],
    },
    "retry-recovers": {"id": "a", "failures": 2, "result": {"attempts": 3}},
    "retry-gives-up": {"id": "b", "error": "TransientError"},
}


@pytest.mark.parametrize("case", sorted(EXPECTED_OUTPUTS))
def test_the_flows_compute_what_a_reader_expects(case: str) -> None:
    """Guards against both interpreters agreeing on something wrong."""
    _, definition, data = next(c for c in CASES if c[0] == case)
    ATTEMPTS.clear()
    local, sleeps = run_locally(definition, data)
    assert local.output == EXPECTED_OUTPUTS[case]
    assert sleeps == {"retry-recovers": [2, 6], "retry-gives-up": [2, 6, 10]}.get(case, [])


def test_uncaught_lambda_error_cause_is_str_locally_and_the_error_payload_in_step_functions(
    moto_sfn: MotoStepFunctions,
) -> None:
    definition = {
        "StartAt": "Instance",
        "States": {"Instance": {"Type": "Task", "Resource": fn("create_instance"), "End": True}},
    }
    data = {"plan": "p9", "fail": True}
    local, _ = run_locally(definition, data)
    remote = moto_sfn.run("uncaught", definition, data)

    assert (local.status, local.error, local.cause) == (
        "FAILED",
        "InstanceCreationError",
        "no capacity for plan p9",
    )
    assert (remote["status"], remote["error"]) == ("FAILED", "InstanceCreationError")
    payload = json.loads(remote["cause"])
    assert payload["errorType"] == local.error
    assert payload["errorMessage"] == local.cause
