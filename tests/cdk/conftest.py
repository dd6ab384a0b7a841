"""Synthesise the CDK app once per session, in-process, for two configurations.

``dev`` is cdk.json's dev environment; ``full`` turns every optional feature on (object lock,
WAF, console hosting, interface endpoints, SSM) so every construct is synthesised and checked.
The Lambda/node artefacts are built once (cached in build/, rebuilt when stale). cdk-nag runs
during synthesis: a synth that returns at all had zero unacknowledged findings.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cdk.synth import Synthesized, synth

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")


FULL = {
    "object_lock": True,
    "versioning": True,
    "waf": True,
    "console_hosting": True,
    "interface_endpoints": True,
    "nat_gateways": 2,
    "alarm_email": "oncall@example.com",
    "retain_data": True,
    "nodes": {"min_capacity": 1, "max_capacity": 6, "ssm_access": True},
}


@pytest.fixture(scope="session")
def artefacts() -> dict[str, Path]:
    from cdk import package_lambda

    return package_lambda.ensure()


@pytest.fixture(scope="session")
def dev(artefacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth("dev", tmp_path_factory.mktemp("cdk"), None)


@pytest.fixture(scope="session")
def full(artefacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth("full", tmp_path_factory.mktemp("cdk"), FULL)


@pytest.fixture(scope="session", params=["dev", "full"])
def synthesized(request: pytest.FixtureRequest) -> Synthesized:
    return request.getfixturevalue(request.param)
