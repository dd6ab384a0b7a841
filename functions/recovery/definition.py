"""The recovery-flow definitions (Amazon States Language) and how they are rendered.

``recovery_flow.asl.json`` and ``test_cleanup.asl.json`` are the single source: CDK
deploys them to Step Functions with each ``${TaskName}`` substituted by the ARN of that
task's Lambda function (``DefinitionSubstitutions``); the local runner renders them with
placeholder ARNs and maps each function name to the in-process handler.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

RECOVERY_FLOW = "recovery_flow.asl.json"
TEST_CLEANUP = "test_cleanup.asl.json"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")


def template(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text()


def task_names(name: str) -> list[str]:
    """The ``${...}`` placeholders of a definition: one Lambda function each."""
    return sorted(set(_PLACEHOLDER.findall(template(name))))


def local_arn(task: str) -> str:
    return f"arn:aws:lambda:us-east-1:000000000000:function:{function_name(task)}"


def function_name(task: str) -> str:
    return f"lifeboat-{task}"


def render(name: str, arn: Callable[[str], str] = local_arn) -> dict[str, Any]:
    """The definition with every ``${Task}`` replaced by ``arn(Task)``."""
    text = _PLACEHOLDER.sub(lambda m: arn(m.group(1)), template(name))
    definition: dict[str, Any] = json.loads(text)
    return definition
