"""The local Amazon States Language interpreter (shared/workflow/asl.py).

Time is faked: :class:`FakeTime` supplies ``sleep``/``clock``/``now`` so Wait states,
retry backoff and per-state timings are exact. Examples marked "AWS doc" reproduce the
input/output processing examples of the Step Functions developer guide.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.workflow import (
    SUPPORTED_INTRINSICS,
    EventType,
    Execution,
    ExecutionStatus,
    InvalidDefinitionError,
    MissingTransitionError,
    TaskFailed,
    UnknownFieldError,
    UnknownResourceError,
    UnknownStateError,
    UnknownStateTypeError,
    UnreachableStateError,
    UnsupportedFeatureError,
    run_state_machine,
    validate_definition,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeTime:
    """sleep() advances clock() and now(); every sleep is recorded."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += seconds

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds

    def clock(self) -> float:
        return self.elapsed

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.elapsed)


def run(
    definition: dict[str, Any] | str,
    data: Any = None,
    resources: dict[str, Any] | None = None,
    time: FakeTime | None = None,
    **options: Any,
) -> Execution:
    time = time or FakeTime()
    return run_state_machine(
        definition,
        {} if data is None else data,
        resources=resources or {},
        sleep=time.sleep,
        clock=time.clock,
        now=time.now,
        **options,
    )


def single(state: dict[str, Any]) -> dict[str, Any]:
    """A machine of one state ``S`` that ends (terminal types get no ``End``)."""
    terminal = state["Type"] in ("Choice", "Succeed", "Fail")
    return {"StartAt": "S", "States": {"S": state if terminal else {**state, "End": True}}}


def output_of(definition: dict[str, Any], data: Any = None, resources: dict[str, Any] | None = None) -> Any:
    execution = run(definition, data, resources)
    assert execution.status is ExecutionStatus.SUCCEEDED, (execution.error, execution.cause)
    return execution.output


def failure_of(
    definition: dict[str, Any], data: Any = None, resources: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    execution = run(definition, data, resources)
    assert execution.status is ExecutionStatus.FAILED, execution.output
    return execution.error, execution.cause


def echo(event: Any) -> Any:
    return event


def recorder(seen: list[Any], result: Any) -> Any:
    """A handler that appends its input to ``seen`` and returns ``result``."""

    def handler(event: Any) -> Any:
        seen.append(event)
        return result

    return handler


# --- validation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("definition", "error", "where"),
    [
        (single({"Type": "Task2"}), UnknownStateTypeError, "$.States.S.Type"),
        ({"StartAt": "S", "States": {"S": {"Type": "Pass"}}}, MissingTransitionError, "$.States.S"),
        (
            {"StartAt": "S", "States": {"S": {"Type": "Pass", "Next": "S", "End": True}}},
            MissingTransitionError,
            "$.States.S",
        ),
        (
            {"StartAt": "S", "States": {"S": {"Type": "Pass", "Next": "T"}}},
            UnknownStateError,
            "$.States.S.Next",
        ),
        ({"StartAt": "X", "States": {"S": {"Type": "Succeed"}}}, UnknownStateError, "$.StartAt"),
        (
            single(
                {
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.a", "IsNull": True, "Next": "S"}],
                    "Default": "Z",
                }
            ),
            UnknownStateError,
            "$.States.S.Default",
        ),
        (
            single(
                {
                    "Type": "Task",
                    "Resource": "echo",
                    "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Nope"}],
                }
            ),
            UnknownStateError,
            "$.States.S.Catch[0].Next",
        ),
        (
            {"StartAt": "S", "States": {"S": {"Type": "Succeed"}, "Orphan": {"Type": "Succeed"}}},
            UnreachableStateError,
            "$.States.Orphan",
        ),
        (single({"Type": "Pass", "Resultpath": "$.x"}), UnknownFieldError, "$.States.S.Resultpath"),
        (single({"Type": "Task", "Resource": "missing"}), UnknownResourceError, "$.States.S.Resource"),
        (
            single(
                {
                    "Type": "Task",
                    "Resource": "arn:aws:states:::lambda:invoke",
                    "Parameters": {"FunctionName": "x"},
                }
            ),
            UnknownResourceError,
            "$.States.S.Resource",
        ),
        (
            {
                "StartAt": "P",
                "States": {
                    "P": {
                        "Type": "Parallel",
                        "End": True,
                        "Branches": [{"StartAt": "X", "States": {"X": {"Type": "Pass", "Next": "Y"}}}],
                    }
                },
            },
            UnknownStateError,
            "$.States.P.Branches[0].States.X.Next",
        ),
        ({**single({"Type": "Succeed"}), "QueryLanguage": "JSONata"}, UnsupportedFeatureError, "$"),
        (single({"Type": "Pass", "Assign": {"x": 1}}), UnsupportedFeatureError, "$.States.S.Assign"),
        (
            single(
                {
                    "Type": "Map",
                    "ItemReader": {},
                    "ItemProcessor": {"StartAt": "X", "States": {"X": {"Type": "Succeed"}}},
                }
            ),
            UnsupportedFeatureError,
            "$.States.S.ItemReader",
        ),
        (
            single(
                {
                    "Type": "Map",
                    "ItemProcessor": {
                        "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                        "StartAt": "X",
                        "States": {"X": {"Type": "Succeed"}},
                    },
                }
            ),
            UnsupportedFeatureError,
            "$.States.S.ItemProcessor.ProcessorConfig",
        ),
        (single({"Type": "Pass", "InputPath": "a.b"}), InvalidDefinitionError, "$.States.S.InputPath"),
        (single({"Type": "Pass", "ResultPath": "$.a[*]"}), InvalidDefinitionError, "$.States.S.ResultPath"),
        (single({"Type": "Pass", "ResultPath": "$$.a"}), InvalidDefinitionError, "$.States.S.ResultPath"),
        (single({"Type": "Pass", "InputPath": "$..a"}), InvalidDefinitionError, "$.States.S.InputPath"),
        (
            single({"Type": "Pass", "Parameters": {"a.$": "nope"}}),
            InvalidDefinitionError,
            "$.States.S.Parameters.a.$",
        ),
        (
            single({"Type": "Pass", "Parameters": {"a.$": "States.Nope(1)"}}),
            InvalidDefinitionError,
            "$.States.S.Parameters.a.$",
        ),
        (
            single({"Type": "Pass", "Parameters": {"a.$": "States.ArrayLength($.a, $.b)"}}),
            InvalidDefinitionError,
            "$.States.S.Parameters.a.$",
        ),
        (
            single({"Type": "Pass", "Parameters": {"a.$": "States.Format('x'"}}),
            InvalidDefinitionError,
            "$.States.S.Parameters.a.$",
        ),
        (
            single({"Type": "Choice", "Choices": [{"Variable": "$.a", "Next": "S"}]}),
            InvalidDefinitionError,
            "$.States.S.Choices[0]",
        ),
        (
            single({"Type": "Choice", "Choices": [{"Variable": "$.a", "NumericEquals": "1", "Next": "S"}]}),
            InvalidDefinitionError,
            "$.States.S.Choices[0].NumericEquals",
        ),
        (
            single(
                {
                    "Type": "Choice",
                    "Choices": [{"Variable": "$.a", "TimestampEquals": "yesterday", "Next": "S"}],
                }
            ),
            InvalidDefinitionError,
            "$.States.S.Choices[0].TimestampEquals",
        ),
        (
            single({"Type": "Choice", "Choices": [{"Variable": "$.a", "IsNull": True}]}),
            MissingTransitionError,
            "$.States.S.Choices[0]",
        ),
        (
            single(
                {
                    "Type": "Choice",
                    "Choices": [{"Not": {"Variable": "$.a", "IsNull": True, "Next": "S"}, "Next": "S"}],
                }
            ),
            UnknownFieldError,
            "$.States.S.Choices[0].Not.Next",
        ),
        (
            single(
                {
                    "Type": "Task",
                    "Resource": "echo",
                    "Retry": [{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["X"]}],
                }
            ),
            InvalidDefinitionError,
            "$.States.S.Retry[0].ErrorEquals",
        ),
        (
            single(
                {"Type": "Task", "Resource": "echo", "Retry": [{"ErrorEquals": ["X"], "IntervalSeconds": 0}]}
            ),
            InvalidDefinitionError,
            "$.States.S.Retry[0].IntervalSeconds",
        ),
        (
            single({"Type": "Task", "Resource": "echo", "TimeoutSeconds": 0}),
            InvalidDefinitionError,
            "$.States.S.TimeoutSeconds",
        ),
        (single({"Type": "Wait", "Seconds": 1, "SecondsPath": "$.s"}), InvalidDefinitionError, "$.States.S"),
        (single({"Type": "Wait", "Timestamp": "2026-01-01"}), InvalidDefinitionError, "$.States.S.Timestamp"),
        (
            single(
                {
                    "Type": "Map",
                    "Iterator": {"StartAt": "X", "States": {"X": {"Type": "Succeed"}}},
                    "ItemProcessor": {},
                }
            ),
            InvalidDefinitionError,
            "$.States.S",
        ),
        (single({"Type": "Parallel", "Branches": []}), InvalidDefinitionError, "$.States.S.Branches"),
        ({"StartAt": "S"}, InvalidDefinitionError, "$.States"),
    ],
)
def test_invalid_definitions_are_rejected_before_running(
    definition: dict[str, Any], error: type[Exception], where: str
) -> None:
    called: list[Any] = []
    with pytest.raises(error) as raised:
        run(definition, resources={"echo": called.append})
    assert isinstance(raised.value, ValueError)
    assert raised.value.where == where  # type: ignore[attr-defined]
    assert str(raised.value).startswith(f"{where}: ")
    assert called == []


def test_a_definition_may_be_json_text_and_bad_json_is_an_invalid_definition() -> None:
    assert output_of(json.dumps(single({"Type": "Pass", "Result": 1}))) == 1  # type: ignore[arg-type]
    with pytest.raises(InvalidDefinitionError, match="not JSON"):
        validate_definition("{nope")


def test_a_dynamic_function_name_is_checked_at_run_time() -> None:
    definition = single(
        {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName.$": "$.fn", "Payload": {}},
        }
    )
    assert failure_of(definition, {"fn": "ghost"}) == (
        "Lambda.ResourceNotFoundException",
        "Function not found: ghost",
    )


def test_input_must_be_json() -> None:
    with pytest.raises(TypeError):
        run(single({"Type": "Succeed"}), {"when": datetime.now(UTC)})


# --- input and output processing (AWS doc examples) -------------------------------------
def test_input_path_aws_doc_example() -> None:
    data = {
        "comment": "Example for InputPath.",
        "dataset1": {"val1": 1, "val2": 2, "val3": 3},
        "dataset2": {"val1": "a", "val2": "b", "val3": "c"},
    }
    seen: list[Any] = []
    output_of(
        single({"Type": "Task", "Resource": "record", "InputPath": "$.dataset2"}),
        data,
        {"record": seen.append},
    )
    assert seen == [{"val1": "a", "val2": "b", "val3": "c"}]


def test_parameters_aws_doc_example() -> None:
    data = {
        "comment": "Example for Parameters.",
        "product": {
            "details": {"color": "blue", "size": "small", "material": "cotton"},
            "availability": "in stock",
            "sku": "2317",
            "cost": "$23",
        },
    }
    parameters = {
        "comment": "Selecting what I care about.",
        "MyDetails": {
            "size.$": "$.product.details.size",
            "exists.$": "$.product.availability",
            "StaticValue": "foo",
        },
    }
    assert output_of(
        single({"Type": "Task", "Resource": "echo", "Parameters": parameters}), data, {"echo": echo}
    ) == {
        "comment": "Selecting what I care about.",
        "MyDetails": {"size": "small", "exists": "in stock", "StaticValue": "foo"},
    }


def test_result_selector_aws_doc_example() -> None:
    emr_result = {
        "resourceType": "elasticmapreduce",
        "resource": "createCluster.sync",
        "output": {
            "SdkHttpMetadata": {"HttpHeaders": {"Content-Length": "1112"}, "HttpStatusCode": 200},
            "SdkResponseMetadata": {"RequestId": "1234-5678-9012"},
            "ClusterId": "AKIAIOSFODNN7EXAMPLE",
        },
    }
    state = {
        "Type": "Task",
        "Resource": "emr",
        "ResultSelector": {"ClusterId.$": "$.output.ClusterId", "ResourceType.$": "$.resourceType"},
        "ResultPath": "$.EMROutput",
    }
    assert output_of(single(state), {"Name": "MyCluster"}, {"emr": lambda _: emr_result}) == {
        "Name": "MyCluster",
        "EMROutput": {"ClusterId": "AKIAIOSFODNN7EXAMPLE", "ResourceType": "elasticmapreduce"},
    }


HELLO_INPUT = {
    "comment": "This is a test of the input and output of a Task state.",
    "details": "Default example",
    "who": "AWS Step Functions",
}


def hello(event: Any) -> str:
    return f"Hello, {event['who']}!"


@pytest.mark.parametrize(
    ("result_path", "expected"),
    [
        ("$", "Hello, AWS Step Functions!"),
        (None, HELLO_INPUT),
        ("$.taskresult", {**HELLO_INPUT, "taskresult": "Hello, AWS Step Functions!"}),
        ("$.deep.er.result", {**HELLO_INPUT, "deep": {"er": {"result": "Hello, AWS Step Functions!"}}}),
    ],
)
def test_result_path_aws_doc_examples(result_path: str | None, expected: Any) -> None:
    state = {"Type": "Task", "Resource": "hello", "ResultPath": result_path}
    assert output_of(single(state), HELLO_INPUT, {"hello": hello}) == expected


def test_input_result_and_output_path_together_aws_doc_example() -> None:
    data = {
        "comment": "An input comment.",
        "data": {"val1": 23, "val2": 17},
        "extra": "foo",
        "lambda": {"who": "AWS Step Functions"},
    }
    state = {
        "Type": "Task",
        "Resource": "hello",
        "InputPath": "$.lambda",
        "ResultPath": "$.data.lambdaresult",
        "OutputPath": "$.data",
    }
    assert output_of(single(state), data, {"hello": hello}) == {
        "val1": 23,
        "val2": 17,
        "lambdaresult": "Hello, AWS Step Functions!",
    }


def test_null_input_and_output_paths_mean_empty_objects() -> None:
    seen: list[Any] = []
    state = {"Type": "Task", "Resource": "record", "InputPath": None, "OutputPath": None}
    assert output_of(single(state), {"a": 1}, {"record": recorder(seen, 5)}) == {}
    assert seen == [{}]


def test_result_path_does_not_mutate_the_input_history_keeps() -> None:
    execution = run(single({"Type": "Pass", "Result": 1, "ResultPath": "$.a.b"}), {"a": {"c": 2}})
    assert execution.output == {"a": {"c": 2, "b": 1}}
    entered = next(e for e in execution.history if e.type is EventType.STATE_ENTERED)
    assert entered.data["input"] == {"a": {"c": 2}}


def test_result_path_into_a_non_object_is_a_catchable_match_failure() -> None:
    definition = {
        "StartAt": "S",
        "States": {
            "S": {
                "Type": "Pass",
                "Result": 1,
                "ResultPath": "$.a.b",
                "Catch": [{"ErrorEquals": ["States.ResultPathMatchFailure"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    with pytest.raises(UnknownFieldError):  # Pass has no Catch in ASL
        run(definition)
    error, _ = failure_of(single({"Type": "Pass", "Result": 1, "ResultPath": "$.a.b"}), {"a": "text"})
    assert error == "States.ResultPathMatchFailure"
    task = {
        "StartAt": "S",
        "States": {
            "S": {
                "Type": "Task",
                "Resource": "echo",
                "ResultPath": "$.x",
                "Catch": [{"ErrorEquals": ["States.ResultPathMatchFailure"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Pass", "End": True},
        },
    }
    assert output_of(task, [1, 2], {"echo": echo})["Error"] == "States.ResultPathMatchFailure"


def test_a_missing_input_path_is_a_runtime_error_that_states_all_does_not_catch() -> None:
    definition = {
        "StartAt": "S",
        "States": {
            "S": {
                "Type": "Task",
                "Resource": "echo",
                "InputPath": "$.missing",
                "Retry": [{"ErrorEquals": ["States.ALL"]}],
                "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}],
                "End": True,
            },
            "Caught": {"Type": "Succeed"},
        },
    }
    execution = run(definition, {"a": 1}, {"echo": echo})
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")
    assert "$.missing" in (execution.cause or "")
    assert not [e for e in execution.history if e.type is EventType.RETRY_SCHEDULED]


def test_a_missing_parameter_path_is_a_parameter_path_failure() -> None:
    assert (
        failure_of(single({"Type": "Pass", "Parameters": {"a.$": "$.nope"}}))[0]
        == "States.ParameterPathFailure"
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", {"a": {"b-c": [10, 20, 30]}, "list": [{"id": 1}, {"id": 2}], "odd key": True}),
        ("$.a.b-c", [10, 20, 30]),
        ("$.a.b-c[0]", 10),
        ("$.a.b-c[-1]", 30),
        ("$.a['b-c'][1]", 20),
        ('$["odd key"]', True),
        ("$.list[*].id", [1, 2]),
        ("$.list[1:].id", [2]),
        ("$.a.*", [[10, 20, 30]]),
        ("$.list[0]", {"id": 1}),
    ],
)
def test_json_path_subset(path: str, expected: Any) -> None:
    data = {"a": {"b-c": [10, 20, 30]}, "list": [{"id": 1}, {"id": 2}], "odd key": True}
    assert output_of(single({"Type": "Pass", "Parameters": {"v.$": path}}), data) == {"v": expected}


def test_payload_templates_reach_into_lists_and_nested_objects() -> None:
    parameters = {"list": [{"x.$": "$.x"}, "plain", ["deep", {"y.$": "$.y"}]], "keep": {"z": "$.not-a-path"}}
    assert output_of(single({"Type": "Pass", "Parameters": parameters}), {"x": 1, "y": 2}) == {
        "list": [{"x": 1}, "plain", ["deep", {"y": 2}]],
        "keep": {"z": "$.not-a-path"},
    }


def test_context_object() -> None:
    parameters = {
        "input.$": "$$.Execution.Input",
        "name.$": "$$.Execution.Name",
        "machine.$": "$$.StateMachine.Name",
        "state.$": "$$.State.Name",
        "entered.$": "$$.State.EnteredTime",
        "started.$": "$$.Execution.StartTime",
        "retries.$": "$$.State.RetryCount",
    }
    definition = {
        "StartAt": "Wait",
        "States": {
            "Wait": {"Type": "Wait", "Seconds": 90, "Next": "S"},
            **single({"Type": "Pass", "Parameters": parameters})["States"],
        },
    }
    execution = run(definition, {"plan": "p"}, execution_name="run-1", state_machine_name="recovery")
    assert execution.output == {
        "input": {"plan": "p"},
        "name": "run-1",
        "machine": "recovery",
        "state": "S",
        "entered": "2026-01-01T00:01:30.000Z",
        "started": "2026-01-01T00:00:00.000Z",
        "retries": 0,
    }


# --- intrinsic functions ----------------------------------------------------------------
INTRINSIC_INPUT = {
    "name": "web",
    "n": 3,
    "list": [1, 2, 2, "a", {"k": 1}, {"k": 1}, True],
    "obj": {"a": 1, "b": [1, 2]},
    "json": '{"x": [1, 2]}',
    "csv": "a,b;;c",
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("States.Format('hello {}, you have {} disks', $.name, $.n)", "hello web, you have 3 disks"),
        ("States.Format('{} {} {}', true, null, 1.5)", "true null 1.5"),
        ("States.Format('literal \\{\\} and \\'quote\\' {}', $.name)", "literal {} and 'quote' web"),
        ("States.Format($.name)", "web"),
        ("States.StringToJson($.json)", {"x": [1, 2]}),
        ("States.JsonToString($.obj)", '{"a":1,"b":[1,2]}'),
        ("States.Array('a', 1, $.n, States.Array())", ["a", 1, 3, []]),
        ("States.ArrayPartition(States.ArrayRange(1, 5, 1), 2)", [[1, 2], [3, 4], [5]]),
        ("States.ArrayContains($.list, $.obj.a)", True),
        ("States.ArrayContains(States.Array(1), true)", False),
        ("States.ArrayRange(10, 1, -3)", [10, 7, 4, 1]),
        ("States.ArrayGetItem($.list, 3)", "a"),
        ("States.ArrayLength($.list)", 7),
        ("States.ArrayUnique($.list)", [1, 2, "a", {"k": 1}, True]),
        ("States.Base64Encode('lifeboat')", "bGlmZWJvYXQ="),
        ("States.Base64Decode('bGlmZWJvYXQ=')", "lifeboat"),
        ("States.Hash('abc', 'SHA-256')", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("States.Hash('abc', 'MD5')", "900150983cd24fb0d6963f7d28e17f72"),
        ("States.JsonMerge($.obj, States.StringToJson('{\"b\": 2}'), false)", {"a": 1, "b": 2}),
        ("States.MathAdd($.n, -5)", -2),
        ("States.StringSplit($.csv, ',;')", ["a", "b", "c"]),
        ("States.ArrayLength( States.Array( 1 , 2 ) )", 2),
    ],
)
def test_intrinsic_functions(expression: str, expected: Any) -> None:
    definition = single({"Type": "Pass", "Parameters": {"v.$": expression}})
    assert output_of(definition, INTRINSIC_INPUT) == {"v": expected}


def test_random_and_uuid_intrinsics() -> None:
    parameters = {
        "r.$": "States.MathRandom(1, 3)",
        "s.$": "States.MathRandom(1, 1000, 7)",
        "u.$": "States.UUID()",
    }
    first = output_of(single({"Type": "Pass", "Parameters": parameters}))
    second = output_of(single({"Type": "Pass", "Parameters": parameters}))
    assert 1 <= first["r"] <= 3
    assert first["s"] == second["s"]
    assert len(first["u"]) == 36 and first["u"] != second["u"]


def test_all_eighteen_aws_intrinsics_are_supported() -> None:
    assert len(SUPPORTED_INTRINSICS) == 18


@pytest.mark.parametrize(
    "expression",
    [
        "States.ArrayGetItem($.list, 99)",
        "States.Format('{} {}', $.name)",
        "States.Format('{}', $.obj)",
        "States.StringToJson($.n)",
        "States.JsonMerge($.obj, $.obj, true)",
        "States.ArrayLength($.missing)",
        "States.Base64Decode('***')",
    ],
)
def test_intrinsic_failures(expression: str) -> None:
    error, cause = failure_of(single({"Type": "Pass", "Parameters": {"v.$": expression}}), INTRINSIC_INPUT)
    assert error == "States.IntrinsicFailure", cause


# --- Choice -------------------------------------------------------------------------------
def choice(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [{**rule, "Next": "Yes"}], "Default": "No"},
            "Yes": {"Type": "Pass", "Result": True, "End": True},
            "No": {"Type": "Pass", "Result": False, "End": True},
        },
    }


CHOICE_INPUT = {
    "s": "recovery-plan",
    "t": "2026-03-01T10:00:00Z",
    "t2": "2026-03-01T11:00:00+01:00",
    "n": 5,
    "f": 2.5,
    "b": True,
    "z": None,
    "star": "a*b",
    "other": "recovery-plan",
    "five": 5,
}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"Variable": "$.s", "StringEquals": "recovery-plan"}, True),
        ({"Variable": "$.s", "StringEquals": "other"}, False),
        ({"Variable": "$.n", "StringEquals": "5"}, False),
        ({"Variable": "$.s", "StringLessThan": "s"}, True),
        ({"Variable": "$.s", "StringGreaterThan": "s"}, False),
        ({"Variable": "$.s", "StringLessThanEquals": "recovery-plan"}, True),
        ({"Variable": "$.s", "StringGreaterThanEquals": "recovery-plan"}, True),
        ({"Variable": "$.s", "StringEqualsPath": "$.other"}, True),
        ({"Variable": "$.s", "StringLessThanPath": "$.other"}, False),
        ({"Variable": "$.s", "StringMatches": "recovery-*"}, True),
        ({"Variable": "$.s", "StringMatches": "*plan"}, True),
        ({"Variable": "$.s", "StringMatches": "*x*"}, False),
        ({"Variable": "$.star", "StringMatches": "a\\*b"}, True),
        ({"Variable": "$.s", "StringMatches": "recovery\\*"}, False),
        ({"Variable": "$.n", "NumericEquals": 5}, True),
        ({"Variable": "$.n", "NumericEquals": 5.0}, True),
        ({"Variable": "$.b", "NumericEquals": 1}, False),
        ({"Variable": "$.s", "NumericEquals": 5}, False),
        ({"Variable": "$.f", "NumericLessThan": 3}, True),
        ({"Variable": "$.f", "NumericGreaterThan": 2.5}, False),
        ({"Variable": "$.f", "NumericGreaterThanEquals": 2.5}, True),
        ({"Variable": "$.n", "NumericLessThanEquals": 4}, False),
        ({"Variable": "$.n", "NumericEqualsPath": "$.five"}, True),
        ({"Variable": "$.f", "NumericLessThanPath": "$.five"}, True),
        ({"Variable": "$.n", "NumericGreaterThanEqualsPath": "$.s"}, False),
        ({"Variable": "$.b", "BooleanEquals": True}, True),
        ({"Variable": "$.n", "BooleanEquals": True}, False),
        ({"Variable": "$.b", "BooleanEqualsPath": "$.b"}, True),
        ({"Variable": "$.t", "TimestampEquals": "2026-03-01T10:00:00Z"}, True),
        ({"Variable": "$.t", "TimestampEquals": "2026-03-01T11:00:00+01:00"}, True),
        ({"Variable": "$.t", "TimestampLessThan": "2026-03-01T10:00:00.001Z"}, True),
        ({"Variable": "$.t", "TimestampGreaterThan": "2026-03-01T10:00:00Z"}, False),
        ({"Variable": "$.t", "TimestampLessThanEquals": "2026-03-01T10:00:00Z"}, True),
        ({"Variable": "$.t", "TimestampGreaterThanEquals": "2026-02-28T10:00:00Z"}, True),
        ({"Variable": "$.t", "TimestampEqualsPath": "$.t2"}, True),
        ({"Variable": "$.s", "TimestampEquals": "2026-03-01T10:00:00Z"}, False),
        ({"Variable": "$.z", "IsNull": True}, True),
        ({"Variable": "$.n", "IsNull": True}, False),
        ({"Variable": "$.z", "IsPresent": True}, True),
        ({"Variable": "$.missing", "IsPresent": True}, False),
        ({"Variable": "$.missing", "IsPresent": False}, True),
        ({"Variable": "$.f", "IsNumeric": True}, True),
        ({"Variable": "$.b", "IsNumeric": True}, False),
        ({"Variable": "$.s", "IsString": True}, True),
        ({"Variable": "$.b", "IsBoolean": True}, True),
        ({"Variable": "$.t", "IsTimestamp": True}, True),
        ({"Variable": "$.s", "IsTimestamp": False}, True),
        (
            {"And": [{"Variable": "$.n", "NumericEquals": 5}, {"Variable": "$.b", "BooleanEquals": True}]},
            True,
        ),
        (
            {"And": [{"Variable": "$.n", "NumericEquals": 5}, {"Variable": "$.b", "BooleanEquals": False}]},
            False,
        ),
        ({"Or": [{"Variable": "$.n", "NumericEquals": 6}, {"Variable": "$.b", "BooleanEquals": True}]}, True),
        (
            {"Or": [{"Variable": "$.n", "NumericEquals": 6}, {"Variable": "$.b", "BooleanEquals": False}]},
            False,
        ),
        ({"Not": {"Variable": "$.n", "NumericEquals": 6}}, True),
        (
            {
                "Or": [
                    {"Not": {"Variable": "$.missing", "IsPresent": False}},
                    {
                        "And": [
                            {"Variable": "$.s", "StringMatches": "*plan"},
                            {"Not": {"Variable": "$.z", "IsNull": False}},
                        ]
                    },
                ]
            },
            True,
        ),
        ({"Variable": "$$.State.Name", "StringEquals": "C"}, True),
    ],
)
def test_choice_operators(rule: dict[str, Any], expected: bool) -> None:
    assert output_of(choice(rule), CHOICE_INPUT) is expected


def test_choice_takes_the_first_matching_rule_and_applies_input_and_output_paths() -> None:
    definition = {
        "StartAt": "C",
        "States": {
            "C": {
                "Type": "Choice",
                "InputPath": "$.plan",
                "OutputPath": "$.vms",
                "Choices": [
                    {"Variable": "$.size", "NumericGreaterThan": 10, "Next": "Big"},
                    {"Variable": "$.size", "NumericGreaterThan": 1, "Next": "Medium"},
                    {"Variable": "$.size", "NumericGreaterThan": 0, "Next": "Small"},
                ],
            },
            "Big": {"Type": "Fail"},
            "Medium": {"Type": "Pass", "Parameters": {"vms.$": "$"}, "End": True},
            "Small": {"Type": "Fail"},
        },
    }
    assert output_of(definition, {"plan": {"size": 5, "vms": ["a", "b"]}}) == {"vms": ["a", "b"]}


def test_choice_without_a_match_or_default_fails_and_a_missing_variable_is_a_runtime_error() -> None:
    definition = single({"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "S"}]})
    assert failure_of(definition, {"n": 2})[0] == "States.NoChoiceMatched"
    assert failure_of(definition, {})[0] == "States.Runtime"


# --- Pass, Succeed, Fail --------------------------------------------------------------------
def test_pass_result_parameters_and_result_path() -> None:
    assert output_of(single({"Type": "Pass"}), {"a": 1}) == {"a": 1}
    assert output_of(single({"Type": "Pass", "Result": {"x": [1]}, "ResultPath": "$.r"}), {"a": 1}) == {
        "a": 1,
        "r": {"x": [1]},
    }
    assert output_of(single({"Type": "Pass", "Parameters": {"b.$": "$.a"}}), {"a": 1}) == {"b": 1}


def test_succeed_applies_paths_and_ends_only_its_branch() -> None:
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "Done", "States": {"Done": {"Type": "Succeed", "InputPath": "$.a"}}}
                ],
                "Next": "After",
            },
            "After": {"Type": "Pass", "Parameters": {"got.$": "$[0]"}, "End": True},
        },
    }
    assert output_of(definition, {"a": 7}) == {"got": 7}


def test_fail_reports_error_and_cause() -> None:
    execution = run(
        single({"Type": "Fail", "Error": "RecoveryAborted", "Cause": "operator said stop"}), {"a": 1}
    )
    assert (execution.status, execution.output, execution.error, execution.cause) == (
        ExecutionStatus.FAILED,
        None,
        "RecoveryAborted",
        "operator said stop",
    )
    assert execution.history[-1].type is EventType.EXECUTION_FAILED


def test_fail_error_path_and_cause_path() -> None:
    state = {"Type": "Fail", "ErrorPath": "$.code", "CausePath": "States.Format('plan {} failed', $.plan)"}
    assert failure_of(single(state), {"code": "E42", "plan": "p1"}) == ("E42", "plan p1 failed")


# --- Wait ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "data", "slept"),
    [
        ({"Seconds": 5}, {}, [5]),
        ({"SecondsPath": "$.delay"}, {"delay": 42}, [42]),
        ({"Timestamp": "2026-01-01T00:10:00Z"}, {}, [600]),
        ({"TimestampPath": "$.at"}, {"at": "2026-01-01T01:00:00+01:00"}, [0]),
        ({"TimestampPath": "$.at"}, {"at": "2026-01-01T00:00:01.5Z"}, [1.5]),
        ({"Timestamp": "2025-01-01T00:00:00Z"}, {}, [0]),
    ],
)
def test_wait_uses_the_injected_sleep(state: dict[str, Any], data: Any, slept: list[float]) -> None:
    time = FakeTime()
    execution = run(single({"Type": "Wait", **state}), data, time=time)
    assert execution.output == data
    assert time.sleeps == slept


@pytest.mark.parametrize(
    ("state", "data"), [({"SecondsPath": "$.d"}, {"d": -1}), ({"TimestampPath": "$.d"}, {"d": "soon"})]
)
def test_wait_with_a_bad_path_value_is_a_runtime_error(state: dict[str, Any], data: Any) -> None:
    assert failure_of(single({"Type": "Wait", **state}), data)[0] == "States.Runtime"


# --- Task ---------------------------------------------------------------------------------
class InstanceCreationError(Exception):
    pass


def test_task_resources_by_name_and_by_lambda_arn() -> None:
    resources = {"double": lambda e: e * 2}
    for resource in (
        "double",
        "arn:aws:lambda:eu-west-1:123456789012:function:double",
        "arn:aws:lambda:eu-west-1:123456789012:function:double:live",
    ):
        assert output_of(single({"Type": "Task", "Resource": resource}), 21, resources) == 42


def test_lambda_invoke_integration_passes_payload_and_wraps_the_result() -> None:
    resources = {"double": lambda e: e["n"] * 2}
    for function in ("double", "arn:aws:lambda:us-east-1:123456789012:function:double", "double:prod"):
        state = {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": function, "Payload": {"n.$": "$.x"}},
        }
        assert output_of(single(state), {"x": 4}, resources) == {
            "ExecutedVersion": "$LATEST",
            "Payload": 8,
            "StatusCode": 200,
        }
    seen: list[Any] = []
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": "r"},
        "OutputPath": "$.Payload",
    }
    assert output_of(single(state), {"x": 4}, {"r": recorder(seen, "ok")}) == "ok"
    assert seen == [{}]


def test_an_exactly_registered_resource_wins_over_the_lambda_invoke_integration() -> None:
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": "f"},
    }
    assert output_of(single(state), {}, {"arn:aws:states:::lambda:invoke": lambda e: e}) == {
        "FunctionName": "f"
    }


def test_handlers_get_a_copy_of_their_input() -> None:
    def mutate(event: dict[str, Any]) -> str:
        event["a"].append(99)
        return "done"

    execution = run(
        single({"Type": "Task", "Resource": "mutate", "ResultPath": "$.r"}), {"a": [1]}, {"mutate": mutate}
    )
    assert execution.output == {"a": [1], "r": "done"}


def test_handler_errors_map_to_asl_errors() -> None:
    def create(_: Any) -> Any:
        raise InstanceCreationError("no capacity in eu-west-1a")

    def explicit(_: Any) -> Any:
        raise TaskFailed("Lifeboat.QuotaExceeded", "vCPU quota is 32")

    assert failure_of(single({"Type": "Task", "Resource": "create"}), {}, {"create": create}) == (
        "InstanceCreationError",
        "no capacity in eu-west-1a",
    )
    assert failure_of(single({"Type": "Task", "Resource": "x"}), {}, {"x": explicit}) == (
        "Lifeboat.QuotaExceeded",
        "vCPU quota is 32",
    )
    assert (
        failure_of(single({"Type": "Task", "Resource": "x"}), {}, {"x": lambda _: {1, 2}})[0]
        == "Runtime.MarshalError"
    )


def test_task_timeout_fails_with_states_timeout() -> None:
    release = threading.Event()

    def slow(_: Any) -> str:
        release.wait(10)
        return "late"

    try:
        execution = run(
            single({"Type": "Task", "Resource": "slow", "TimeoutSecondsPath": "$.t"}),
            {"t": 1},
            {"slow": slow},
        )
    finally:
        release.set()
    assert (execution.error, execution.cause) == ("States.Timeout", "Task timed out after 1 seconds")
    fast = run(
        single({"Type": "Task", "Resource": "fast", "TimeoutSeconds": 5}), 1, {"fast": lambda e: e + 1}
    )
    assert fast.output == 2


# --- Retry and Catch -----------------------------------------------------------------------
class Flaky:
    """Fails ``failures`` times with ``error``, then returns the attempt number."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or InstanceCreationError("transient")
        self.attempts = 0

    def __call__(self, _: Any) -> dict[str, int]:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error
        return {"attempt": self.attempts}


def retrying(retry: list[dict[str, Any]], catch: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {"Type": "Task", "Resource": "flaky", "Retry": retry, "Next": "Done"}
    states: dict[str, Any] = {"Flaky": task, "Done": {"Type": "Succeed"}}
    if catch:
        task["Catch"] = catch
        states["Recover"] = {"Type": "Pass", "End": True}
    return {"StartAt": "Flaky", "States": states}


@pytest.mark.parametrize(
    ("retrier", "failures", "sleeps", "succeeds"),
    [
        ({"IntervalSeconds": 3, "MaxAttempts": 2, "BackoffRate": 1.5}, 2, [3, 4.5], True),
        ({"IntervalSeconds": 3, "MaxAttempts": 2, "BackoffRate": 1.5}, 3, [3, 4.5], False),
        ({}, 9, [1, 2, 4], False),
        (
            {"IntervalSeconds": 2, "BackoffRate": 3, "MaxAttempts": 5, "MaxDelaySeconds": 10},
            9,
            [2, 6, 10, 10, 10],
            False,
        ),
        ({"MaxAttempts": 0}, 1, [], False),
        ({"IntervalSeconds": 1, "BackoffRate": 1, "MaxAttempts": 4}, 3, [1, 1, 1], True),
    ],
)
def test_retry_backoff_sleeps_exactly(
    retrier: dict[str, Any], failures: int, sleeps: list[float], succeeds: bool
) -> None:
    time = FakeTime()
    flaky = Flaky(failures)
    execution = run(
        retrying([{"ErrorEquals": ["InstanceCreationError"], **retrier}]),
        resources={"flaky": flaky},
        time=time,
    )
    assert time.sleeps == sleeps
    assert execution.succeeded is succeeds
    assert flaky.attempts == len(sleeps) + 1
    retries = [e.data for e in execution.history if e.type is EventType.RETRY_SCHEDULED]
    assert [(r["attempt"], r["delay"]) for r in retries] == list(enumerate(sleeps, start=1))


def test_full_jitter_stays_below_the_backoff() -> None:
    time = FakeTime()
    retry = [
        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 4, "MaxAttempts": 3, "JitterStrategy": "FULL"}
    ]
    run(retrying(retry), resources={"flaky": Flaky(9)}, time=time)
    assert len(time.sleeps) == 3
    assert all(0 <= slept <= limit for slept, limit in zip(time.sleeps, [4, 8, 16], strict=True))


def test_the_first_matching_retrier_decides_and_each_counts_its_own_attempts() -> None:
    errors = iter([KeyError("a"), ValueError("b"), KeyError("c"), ValueError("d"), KeyError("e")])

    def handler(_: Any) -> str:
        error = next(errors, None)
        if error:
            raise error
        return "ok"

    retry = [
        {"ErrorEquals": ["KeyError"], "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 10},
        {"ErrorEquals": ["ValueError", "States.ALL"][:1], "IntervalSeconds": 7, "MaxAttempts": 2},
    ]
    time = FakeTime()
    execution = run(
        {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "h", "Retry": retry, "End": True}}},
        resources={"h": handler},
        time=time,
    )
    assert execution.output == "ok"
    assert time.sleeps == [1, 7, 10, 14, 100]


def test_retry_count_is_in_the_context_object() -> None:
    seen: list[int] = []

    def handler(event: dict[str, int]) -> None:
        seen.append(event["retry"])
        if len(seen) < 3:
            raise InstanceCreationError("again")

    state = {
        "Type": "Task",
        "Resource": "h",
        "Parameters": {"retry.$": "$$.State.RetryCount"},
        "Retry": [{"ErrorEquals": ["States.ALL"]}],
    }
    assert run(single(state), resources={"h": handler}).succeeded
    assert seen == [0, 1, 2]


def test_states_task_failed_matches_handler_errors_but_not_timeouts() -> None:
    release = threading.Event()
    retry = [{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 1}]
    time = FakeTime()
    assert run(retrying(retry), resources={"flaky": Flaky(1)}, time=time).succeeded
    assert time.sleeps == [1]
    state = {"Type": "Task", "Resource": "slow", "TimeoutSeconds": 1, "Retry": retry}
    time = FakeTime()
    try:
        execution = run(single(state), resources={"slow": lambda _: release.wait(10)}, time=time)
    finally:
        release.set()
    assert (execution.error, time.sleeps) == ("States.Timeout", [])


def test_catch_routes_by_error_with_result_path() -> None:
    catch = [
        {"ErrorEquals": ["KeyError"], "Next": "Done"},
        {"ErrorEquals": ["InstanceCreationError"], "ResultPath": "$.error", "Next": "Recover"},
        {"ErrorEquals": ["States.ALL"], "Next": "Done"},
    ]
    execution = run(retrying([], catch), {"plan": "p"}, {"flaky": Flaky(1, InstanceCreationError("boom"))})
    assert execution.output == {"plan": "p", "error": {"Error": "InstanceCreationError", "Cause": "boom"}}
    assert [t.name for t in execution.timings()] == ["Flaky", "Recover"]
    caught = next(e for e in execution.history if e.type is EventType.ERROR_CAUGHT)
    assert caught.data == {"error": "InstanceCreationError", "cause": "boom", "next": "Recover"}


@pytest.mark.parametrize(
    ("result_path", "expected"),
    [
        ("$", {"Error": "InstanceCreationError", "Cause": "boom"}),
        (None, {"plan": "p"}),
        ("$.a.b", {"plan": "p", "a": {"b": {"Error": "InstanceCreationError", "Cause": "boom"}}}),
    ],
)
def test_catch_result_path_is_applied_to_the_raw_input(result_path: str | None, expected: Any) -> None:
    catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": result_path, "Next": "Recover"}]
    definition = retrying([], catch)
    definition["States"]["Flaky"].update(InputPath="$.plan", OutputPath="$.never")
    assert (
        output_of(definition, {"plan": "p"}, {"flaky": Flaky(1, InstanceCreationError("boom"))}) == expected
    )


def test_catch_applies_after_retries_are_exhausted() -> None:
    time = FakeTime()
    retry = [{"ErrorEquals": ["InstanceCreationError"], "MaxAttempts": 2}]
    catch = [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.e", "Next": "Recover"}]
    execution = run(retrying(retry, catch), {}, {"flaky": Flaky(9)}, time=time)
    assert execution.output == {"e": {"Error": "InstanceCreationError", "Cause": "transient"}}
    assert time.sleeps == [1, 2]
    kinds = [e.type for e in execution.history if e.state == "Flaky"]
    assert kinds == [
        EventType.STATE_ENTERED,
        EventType.STATE_FAILED,
        EventType.RETRY_SCHEDULED,
        EventType.STATE_FAILED,
        EventType.RETRY_SCHEDULED,
        EventType.STATE_FAILED,
        EventType.ERROR_CAUGHT,
        EventType.STATE_EXITED,
    ]


def test_an_unmatched_error_fails_the_execution() -> None:
    catch = [{"ErrorEquals": ["KeyError"], "Next": "Recover"}]
    assert failure_of(retrying([], catch), {}, {"flaky": Flaky(1)}) == ("InstanceCreationError", "transient")


# --- Parallel -----------------------------------------------------------------------------
def branch(state: dict[str, Any], name: str = "B") -> dict[str, Any]:
    terminal = state["Type"] in ("Choice", "Succeed", "Fail")
    return {"StartAt": name, "States": {name: state if terminal else {**state, "End": True}}}


def test_parallel_runs_branches_concurrently_and_returns_outputs_in_order() -> None:
    barrier = threading.Barrier(3, timeout=5)

    def meet(event: Any) -> Any:
        barrier.wait()
        return event

    definition = single(
        {
            "Type": "Parallel",
            "Parameters": {"v.$": "$.v"},
            "Branches": [
                branch({"Type": "Task", "Resource": "meet", "ResultSelector": {"first.$": "$.v"}}),
                branch({"Type": "Task", "Resource": "meet", "OutputPath": "$.v"}),
                branch({"Type": "Task", "Resource": "meet", "ResultPath": "$.again"}),
            ],
            "ResultSelector": {"all.$": "$"},
            "ResultPath": "$.out",
        }
    )
    assert output_of(definition, {"v": 1, "x": 2}, {"meet": meet}) == {
        "v": 1,
        "x": 2,
        "out": {"all": [{"first": 1}, 1, {"v": 1, "again": {"v": 1}}]},
    }


def loop_branch() -> dict[str, Any]:
    """A branch that would wait forever: Wait 1 s, then back again."""
    return {
        "StartAt": "Tick",
        "States": {
            "Tick": {"Type": "Wait", "Seconds": 1, "Next": "Again"},
            "Again": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.stop", "IsPresent": True, "Next": "End"}],
                "Default": "Tick",
            },
            "End": {"Type": "Succeed"},
        },
    }


def test_a_failing_branch_fails_the_parallel_state_and_stops_its_siblings() -> None:
    started = threading.Event()

    def fail_once_the_loop_runs(_: Any) -> Any:
        started.wait(5)
        raise InstanceCreationError("branch 0 failed")

    def tick(_: float) -> None:
        started.set()
        threading.Event().wait(0.001)

    definition = single(
        {"Type": "Parallel", "Branches": [branch({"Type": "Task", "Resource": "fail"}), loop_branch()]}
    )
    execution = run_state_machine(definition, {}, resources={"fail": fail_once_the_loop_runs}, sleep=tick)
    assert (execution.error, execution.cause) == ("InstanceCreationError", "branch 0 failed")
    loop_visits = [t for t in execution.timings() if t.scope == ("S", 1)]
    assert 0 < len(loop_visits) < 1000
    assert {t.status for t in loop_visits} <= {"succeeded", "aborted"}
    assert [t.status for t in execution.timings() if t.name == "S"] == ["failed"]


def test_a_fail_state_in_a_branch_is_catchable_on_the_parallel_state() -> None:
    definition = {
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Parallel",
                "Branches": [
                    branch({"Type": "Pass"}),
                    branch({"Type": "Fail", "Error": "Boom", "Cause": "why"}),
                ],
                "Catch": [{"ErrorEquals": ["Boom"], "ResultPath": "$.failure", "Next": "Cleanup"}],
                "End": True,
            },
            "Cleanup": {"Type": "Pass", "End": True},
        },
    }
    assert output_of(definition, {"a": 1}) == {"a": 1, "failure": {"Error": "Boom", "Cause": "why"}}


def test_parallel_retry_reruns_every_branch() -> None:
    flaky = Flaky(1)
    counted: list[Any] = []
    definition = single(
        {
            "Type": "Parallel",
            "Branches": [
                branch({"Type": "Task", "Resource": "flaky"}),
                branch({"Type": "Task", "Resource": "count"}),
            ],
            "Retry": [{"ErrorEquals": ["InstanceCreationError"], "IntervalSeconds": 5}],
        }
    )
    time = FakeTime()
    execution = run(definition, {}, {"flaky": flaky, "count": recorder(counted, 0)}, time=time)
    assert execution.output == [{"attempt": 2}, 0]
    assert time.sleeps == [5]
    assert len(counted) in (1, 2)  # the sibling may or may not have started before the abort


# --- Map ----------------------------------------------------------------------------------
def test_map_item_selector_aws_doc_example() -> None:
    data = {
        "delivery-partner": "example.com",
        "shipped": [
            {"prod": "R31", "dest-code": 9511, "quantity": 1344},
            {"prod": "S39", "dest-code": 9511, "quantity": 40},
            {"prod": "R31", "dest-code": 9833, "quantity": 12},
        ],
    }
    definition = single(
        {
            "Type": "Map",
            "ItemsPath": "$.shipped",
            "ItemSelector": {"parcel.$": "$$.Map.Item.Value", "courier.$": "$.delivery-partner"},
            "ItemProcessor": branch({"Type": "Pass"}),
        }
    )
    assert output_of(definition, data) == [
        {"parcel": item, "courier": "example.com"} for item in data["shipped"]
    ]


def test_map_legacy_iterator_and_parameters_with_index() -> None:
    definition = single(
        {
            "Type": "Map",
            "InputPath": "$.plan",
            "ItemsPath": "$.vms",
            "Parameters": {"vm.$": "$$.Map.Item.Value", "order.$": "$$.Map.Item.Index", "plan.$": "$.id"},
            "Iterator": branch({"Type": "Task", "Resource": "boot"}),
            "ResultSelector": {"booted.$": "$[*].booted"},
            "ResultPath": "$.result",
        }
    )
    output = output_of(
        definition,
        {"plan": {"id": "p1", "vms": ["db", "app"]}},
        {"boot": lambda e: {"booted": f"{e['plan']}/{e['order']}/{e['vm']}"}},
    )
    assert output == {
        "plan": {"id": "p1", "vms": ["db", "app"]},
        "result": {"booted": ["p1/0/db", "p1/1/app"]},
    }


@pytest.mark.parametrize(
    ("state", "width"), [({"MaxConcurrency": 2}, 2), ({"MaxConcurrencyPath": "$.width"}, 3), ({}, 6)]
)
def test_map_max_concurrency(state: dict[str, Any], width: int) -> None:
    barrier = threading.Barrier(width, timeout=5)
    lock = threading.Lock()
    active = [0]
    peak = [0]

    def work(item: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        barrier.wait()
        with lock:
            active[0] -= 1
        return item * 10

    definition = single(
        {
            "Type": "Map",
            "ItemsPath": "$.items",
            "ItemProcessor": branch({"Type": "Task", "Resource": "work"}),
            **state,
        }
    )
    assert output_of(definition, {"items": [0, 1, 2, 3, 4, 5], "width": width}, {"work": work}) == [
        0,
        10,
        20,
        30,
        40,
        50,
    ]
    assert peak[0] == width


def test_map_over_nothing_and_over_a_non_array() -> None:
    definition = single({"Type": "Map", "ItemProcessor": branch({"Type": "Pass"})})
    assert output_of(definition, []) == []
    assert failure_of(definition, {"not": "a list"})[0] == "States.Runtime"


def test_a_failing_iteration_fails_the_map_and_can_be_caught() -> None:
    def check(item: int) -> int:
        if item == 3:
            raise TaskFailed("BadDisk", f"disk {item} is corrupt")
        return item

    definition = {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "MaxConcurrency": 1,
                "ItemsPath": "$.disks",
                "ItemProcessor": branch({"Type": "Task", "Resource": "check"}),
                "Catch": [{"ErrorEquals": ["BadDisk"], "ResultPath": "$.error", "Next": "Cleanup"}],
                "End": True,
            },
            "Cleanup": {"Type": "Pass", "End": True},
        },
    }
    execution = run(definition, {"disks": [1, 2, 3, 4, 5, 6]}, {"check": check})
    assert execution.output == {
        "disks": [1, 2, 3, 4, 5, 6],
        "error": {"Error": "BadDisk", "Cause": "disk 3 is corrupt"},
    }
    visits = {t.scope[1]: t.status for t in execution.timings() if t.scope[:1] == ("M",)}
    assert visits == {0: "succeeded", 1: "succeeded", 2: "failed"}  # 3..5 never started


# --- history and execution limits ---------------------------------------------------------
def test_history_gives_per_state_timings() -> None:
    time = FakeTime()

    def restore(event: Any) -> Any:
        time.advance(2)
        return event

    definition = {
        "StartAt": "Restore",
        "States": {
            "Restore": {"Type": "Task", "Resource": "restore", "Next": "Settle"},
            "Settle": {"Type": "Wait", "Seconds": 5, "Next": "Boot"},
            "Boot": {
                "Type": "Map",
                "ItemsPath": "$.vms",
                "MaxConcurrency": 1,
                "ItemProcessor": branch({"Type": "Task", "Resource": "restore"}, "BootVm"),
                "ResultPath": None,
                "End": True,
            },
        },
    }
    execution = run(definition, {"vms": ["a", "b"]}, {"restore": restore}, time=time)
    assert execution.succeeded
    report = [(t.name, t.scope, t.entered, t.duration, t.status) for t in execution.timings()]
    assert report == [
        ("Restore", (), 0, 2, "succeeded"),
        ("Settle", (), 2, 5, "succeeded"),
        ("Boot", (), 7, 4, "succeeded"),
        ("BootVm", ("Boot", 0), 7, 2, "succeeded"),
        ("BootVm", ("Boot", 1), 9, 2, "succeeded"),
    ]
    assert execution.history[0].type is EventType.EXECUTION_STARTED
    assert execution.history[-1].type is EventType.EXECUTION_SUCCEEDED
    assert execution.history[-1].data["output"] == {"vms": ["a", "b"]}
    exited = [e for e in execution.history if e.type is EventType.STATE_EXITED and e.state == "Settle"]
    assert exited[0].data["output"] == {"vms": ["a", "b"]}
    assert exited[0].data["next"] == "Boot"


def test_max_steps_stops_a_runaway_loop() -> None:
    definition = {
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "Next": "A"}},
    }
    execution = run(definition, max_steps=50)
    assert execution.error == "States.Runtime"
    assert "max_steps=50" in (execution.cause or "")
    assert len(execution.timings()) == 50


def test_state_machine_timeout_seconds() -> None:
    definition = {
        "TimeoutSeconds": 5,
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "Seconds": 10, "Next": "After"}, "After": {"Type": "Succeed"}},
    }
    execution = run(definition)
    assert (execution.status, execution.error) == (ExecutionStatus.TIMED_OUT, "States.Timeout")
    assert execution.history[-1].type is EventType.EXECUTION_TIMED_OUT
