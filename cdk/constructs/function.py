"""A Lambda function the way every Lifeboat function is deployed.

Each function gets its own role (no managed policies: log writing is granted on its own log
group only), its own log group with retention, X-Ray active tracing, the powertools
environment, the shared code asset and the dependency layer. Callers add the permissions the
function's handler needs, scoped to their resources.
"""

from __future__ import annotations

from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk import package_lambda
from cdk.config import EnvConfig
from cdk.nag import acknowledge

#: the layer is built for it (cdk/package_lambda.LAMBDA_PYTHON) and the handlers are tested on it
#: (tests/cdk/test_lambda_runtime.py): the newest Lambda Python that CI has an interpreter of
RUNTIME = lambda_.Runtime.PYTHON_3_13


class FunctionAssets(Construct):
    """The code asset (build/lambda) and the dependency layer (build/layer), shared by every function."""

    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        for path in (package_lambda.LAMBDA_DIR, package_lambda.LAYER_DIR / "python"):
            if not path.is_dir():
                raise FileNotFoundError(f"{path} is missing: run `python -m cdk.package_lambda` first")
        self.code = lambda_.Code.from_asset(str(package_lambda.LAMBDA_DIR), exclude=[".stamp"])
        self.layer = lambda_.LayerVersion(
            self,
            "Dependencies",
            code=lambda_.Code.from_asset(str(package_lambda.LAYER_DIR), exclude=[".stamp"]),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[lambda_.Architecture.X86_64],
            description="Lifeboat runtime dependencies (pydantic, pynamodb, powertools, blake3, zstandard, ...)",
        )


@dataclass(frozen=True)
class FunctionSpec:
    handler: str
    service: str
    description: str
    memory_mib: int = 512
    timeout_seconds: int = 30


class LifeboatFunction(Construct):
    """One function with its own least-privilege role and log group."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvConfig,
        assets: FunctionAssets,
        spec: FunctionSpec,
        environment: dict[str, str] | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=retention(config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Lifeboat {spec.service}: only what this function's handler calls",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            code=assets.code,
            layers=[assets.layer],
            handler=spec.handler,
            role=self.role,
            log_group=self.log_group,
            memory_size=spec.memory_mib,
            timeout=cdk.Duration.seconds(spec.timeout_seconds),
            tracing=lambda_.Tracing.ACTIVE,
            description=spec.description,
            logging_format=lambda_.LoggingFormat.JSON,
            environment={
                "POWERTOOLS_SERVICE_NAME": spec.service,
                "POWERTOOLS_METRICS_NAMESPACE": "Lifeboat",
                "LOG_LEVEL": config.log_level,
                "LIFEBOAT_ENV": config.name,
                **(environment or {}),
            },
        )
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            f"{RUNTIME.name} is the newest Lambda Python the handlers are tested on "
            "(tests/cdk/test_lambda_runtime.py runs them on that interpreter with the built layer).",
        )
        # Logs: only this function's own log group (CreateLogGroup is not needed: CDK creates it).
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "Active X-Ray tracing: xray:PutTraceSegments/PutTelemetryRecords support no resource-level "
            "permissions (CDK adds exactly those).",
        )

    def add(self, *statements: iam.PolicyStatement) -> None:
        for statement in statements:
            self.role.add_to_policy(statement)


_RETENTION = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
    60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS",
    365: "ONE_YEAR", 400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS",
    1827: "FIVE_YEARS", 2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}  # fmt: skip


def retention(days: int) -> logs.RetentionDays:
    """CloudWatch Logs retention from a number of days (validated by :class:`EnvConfig`)."""
    return logs.RetentionDays[_RETENTION[days]]
