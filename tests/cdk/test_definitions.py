"""The state-machine definitions as deployed: rendered from the synthesised template."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cdk.constructs.recovery_workflow import CLEANUP_STATE, CREATING_STATES
from functions.recovery import definition
from tests.cdk.synth import Synthesized

ROOT = Path(__file__).resolve().parents[2]
ASL_VALIDATOR = ROOT / "tools/node/node_modules/.bin/asl-validator"


def _render(value: Any) -> str:
    """Fn::Join / Fn::GetAtt / Ref -> text with placeholder Lambda ARNs."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return str(sep).join(_render(p) for p in parts)
    if "Fn::GetAtt" in value:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{value['Fn::GetAtt'][0]}"
    if "Ref" in value:
        return {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}.get(
            value["Ref"], value["Ref"]
        )
    raise AssertionError(f"unexpected intrinsic in a definition: {value}")


def _definitions(s: Synthesized) -> dict[str, dict[str, Any]]:
    out = {}
    for sm in s.resources("AWS::StepFunctions::StateMachine").values():
        props = sm["Properties"]
        text = _render(props["DefinitionString"])
        for name, arn in (props.get("DefinitionSubstitutions") or {}).items():
            text = text.replace("${" + name + "}", _render(arn))
        out[props["StateMachineName"]] = json.loads(text)
    return out


def _tasks(states: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, state in states.items():
        if state["Type"] == "Task":
            found[name] = state
        for inner in (state.get("ItemProcessor") or state.get("Iterator") or {},):
            found.update(_tasks(inner.get("States", {})))
        for branch in state.get("Branches", []):
            found.update(_tasks(branch["States"]))
    return found


@pytest.fixture(scope="module")
def rendered(dev: Synthesized) -> dict[str, dict[str, Any]]:
    return _definitions(dev)


def test_the_deployed_definitions_are_the_local_runners(rendered: dict[str, dict[str, Any]]) -> None:
    """Same JSON as functions/recovery/*.asl.json, every task pointing at its own function."""
    for machine, asl in (
        ("lifeboat-dev-recovery", definition.RECOVERY_FLOW),
        ("lifeboat-dev-testcleanup", definition.TEST_CLEANUP),
    ):
        local = definition.render(asl, lambda task: f"TASK:{task}")
        deployed = rendered[machine]
        tasks = _tasks(deployed["States"])
        assert sorted(tasks) == definition.task_names(asl)
        arns = {t["Resource"] for t in tasks.values()}
        assert len(arns) == len(tasks) and all(a.startswith("arn:aws:lambda:") for a in arns)
        # identical apart from the Resource values
        strip = json.dumps(local).replace('"TASK:', '"X:')
        for name, task in tasks.items():
            deployed_text = json.dumps(deployed).replace(task["Resource"], f"X:{name}")
            deployed = json.loads(deployed_text)
        assert json.dumps(deployed) == strip


def test_every_creating_state_is_caught_into_cleanup(rendered: dict[str, dict[str, Any]]) -> None:
    tasks = _tasks(rendered["lifeboat-dev-recovery"]["States"])
    for state in CREATING_STATES:
        catches = tasks[state].get("Catch", [])
        assert any(c["ErrorEquals"] == ["States.ALL"] and c["Next"] == CLEANUP_STATE for c in catches), state
    # and a state whose comment says it creates something is in the list
    for name, task in tasks.items():
        if "creates" in task.get("Comment", "") or "create " in task.get("Comment", ""):
            assert name in CREATING_STATES, name


def test_asl_validator_accepts_the_rendered_definitions(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    assert ASL_VALIDATOR.exists(), "run `make deps` (tools/node: asl-validator)"
    for name, asl in rendered.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(asl))
        done = subprocess.run(
            [str(ASL_VALIDATOR), "--json-path", str(path)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (name, done.stdout, done.stderr)


def test_cfn_lint_is_clean(synthesized: Synthesized) -> None:
    cfn_lint = shutil.which("cfn-lint")
    assert cfn_lint, "cfn-lint is not installed (pip install cfn-lint)"
    templates = sorted(str(p) for p in synthesized.outdir.glob("*.template.json"))
    # W3005: CDK adds an explicit DependsOn on each function's role policy next to the GetAtt of the
    # role; redundant, harmless, and not ours to change.
    done = subprocess.run(
        [cfn_lint, "--ignore-checks", "W3005", "--", *templates], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
