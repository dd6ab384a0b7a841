"""cdk-nag (AwsSolutions) wiring and the one way this app acknowledges a finding.

Every acknowledgment goes through :func:`acknowledge` (a rule on a construct, with the reason)
or :func:`allow_wildcards` (a policy statement whose ``*`` is needed, with the reason), so the
reasons live next to the code that needs them and :data:`LEDGER` lists them all for the tests
and the docs. cdk-nag 3 reports each IAM5 finding separately as
``AwsSolutions-IAM5[Action::x:y*]`` / ``AwsSolutions-IAM5[Resource::<flattened ARN>]``;
:func:`flatten` reproduces cdk-nag's flattening of CloudFormation references so that the ids
match. Wildcard resources are built from pseudo parameters and fixed names, never from
cross-stack references, so they flatten the same before and after synthesis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


@dataclass(frozen=True)
class Acknowledged:
    path: str
    rule: str
    reason: str


#: every acknowledgment made while building apps in this process (path, rule id, reason)
LEDGER: list[Acknowledged] = []


def add_checks(app: cdk.App) -> None:
    """Run the AwsSolutions pack on every stack at synthesis (violations fail the synth)."""
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge ``rule`` (``AwsSolutions-XXX`` or ``AwsSolutions-IAM5[...]``) on ``scope`` and below."""
    if len(reason) < 20:
        raise ValueError(f"acknowledgment of {rule} needs a real reason, not {reason!r}")
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))
    LEDGER.append(Acknowledged(scope.node.path, rule, reason))


def flatten(node: Any) -> str:
    """cdk-nag's ``flattenCfnReference``: a resolved CloudFormation value as a flat string."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return str(delimiter).join(flatten(i) for i in items)
        if "Fn::Sub" in node:
            return flatten(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{flatten(resource)}.{flatten(attribute)}>"
        if "Fn::ImportValue" in node:
            return flatten(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{flatten(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))


def wildcard_findings(scope: IConstruct, statement: iam.PolicyStatement) -> list[str]:
    """The IAM5 finding ids cdk-nag raises for ``statement`` (empty when it has no ``*``)."""
    resolved = cdk.Stack.of(scope).resolve(statement.to_statement_json())
    if resolved.get("Effect") != "Allow":
        return []
    listed = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    findings = [f"Action::{a}" for a in listed(resolved.get("Action", [])) if "*" in a]
    findings += [f"Resource::{r}" for r in map(flatten, listed(resolved.get("Resource", []))) if "*" in r]
    return [f"AwsSolutions-IAM5[{f}]" for f in findings]


def allow_wildcards(role: iam.IRole, statement: iam.PolicyStatement, reason: str) -> None:
    """Add ``statement`` to ``role`` and acknowledge each of its wildcard findings with ``reason``."""
    role.add_to_principal_policy(statement)
    for finding in wildcard_findings(role, statement):
        acknowledge(role, finding, reason)
