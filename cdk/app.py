"""The CDK app: ``python3 -m cdk.app`` (cdk.json), or :func:`build` in-process (tests).

``-c env=NAME`` picks the environment from ``context.environments`` in cdk.json. The Lambda and
node artefacts are (re)built first when stale (cdk/package_lambda.py), so ``cdk synth`` works
on a fresh clone. Synthesis makes no AWS call and no lookup; cdk-nag (AwsSolutions) runs on
every stack and fails the synth on any unacknowledged finding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk

from cdk import package_lambda
from cdk.config import EnvConfig, from_context
from cdk.nag import add_checks
from cdk.stacks import ConsoleStack, ControlStack, NodesStack, StorageStack

#: also in cdk.json (the CLI reads them from there)
FEATURE_FLAGS: dict[str, Any] = {
    "@aws-cdk/core:validationReportJson": True,
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
    "@aws-cdk/aws-iam:minimizePolicies": True,
    "@aws-cdk/core:defaultCrossStackReferences": "strong",
}


@dataclass
class LifeboatApp:
    app: cdk.App
    config: EnvConfig
    storage: StorageStack
    control: ControlStack
    nodes: NodesStack
    console: ConsoleStack | None

    @property
    def stacks(self) -> list[cdk.Stack]:
        return [s for s in (self.storage, self.control, self.nodes, self.console) if s is not None]


def compose(app: cdk.App, config: EnvConfig) -> LifeboatApp:
    p = config.stack_prefix
    storage = StorageStack(app, f"{p}-Storage", config=config)
    control = ControlStack(app, f"{p}-Control", config=config, storage=storage)
    nodes = NodesStack(app, f"{p}-Nodes", config=config, storage=storage, control=control)
    console = (
        ConsoleStack(app, f"{p}-Console", config=config, control=control) if config.console_hosting else None
    )
    for stack in (storage, control, nodes, console):
        if stack is not None:
            untaggable = ["AWS::CloudWatch::Dashboard"]  # CloudFormation's schema has no Tags there
            for key, value in (
                ("lifeboat:environment", config.name),
                ("lifeboat:component", stack.stack_name.rsplit("-", 1)[-1].lower()),
            ):
                cdk.Tags.of(stack).add(key, value, exclude_resource_types=untaggable)
    return LifeboatApp(app, config, storage, control, nodes, console)


def build(
    config: EnvConfig | None = None, *, outdir: str | None = None, context: dict[str, Any] | None = None
) -> LifeboatApp:
    """A fresh app with the checks plugged in (``config`` overrides the cdk.json context)."""
    package_lambda.ensure()
    app = cdk.App(outdir=outdir, context={**FEATURE_FLAGS, **(context or {})})
    if config is None:
        config = from_context(_context(app))
    add_checks(app)
    return compose(app, config)


def _context(app: cdk.App) -> dict[str, Any]:
    """The CLI passes cdk.json's context; in-process (tests, scripts) it is read from the file."""
    environments = app.node.try_get_context("environments")
    if environments is None:
        file_context = json.loads((package_lambda.ROOT / "cdk.json").read_text()).get("context", {})
        environments = file_context.get("environments", {})
    return {"environments": environments, "env": app.node.try_get_context("env")}


def main() -> None:
    build().app.synth()


if __name__ == "__main__":
    main()
