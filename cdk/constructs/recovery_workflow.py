"""The recovery flow in Step Functions: the SAME Amazon States Language files the local runner runs.

``functions/recovery/recovery_flow.asl.json`` and ``test_cleanup.asl.json`` are deployed with
``DefinitionBody.from_string`` and one ``DefinitionSubstitutions`` entry per ``${Task}``
placeholder, mapped to that task's own Lambda function
(``functions.recovery.lambda_handlers.<snake_case>``). Each task function has its own role with
only the calls its handler makes (:data:`TASK_PERMISSIONS`): EC2 resources a recovery creates
carry the ``lifeboat:run`` tag, so creation is allowed only with that tag in the request and
changes/deletions only on resources that carry it. Execution logging (level from config,
execution data included) and X-Ray tracing are on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.config import EnvConfig
from cdk.constructs.function import FunctionAssets, FunctionSpec, LifeboatFunction, retention
from cdk.constructs.repository_bucket import RepositoryBucket
from cdk.nag import acknowledge, allow_wildcards
from functions.recovery import definition
from functions.recovery.lambda_handlers import entry_name

RUN_TAG = "lifeboat:run"
REQUEST_TAGGED = {"Null": {f"aws:RequestTag/{RUN_TAG}": "false"}}
RESOURCE_TAGGED = {"Null": {f"aws:ResourceTag/{RUN_TAG}": "false"}}
DESCRIBE = [
    "ec2:DescribeSnapshots", "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus",
    "ec2:DescribeVolumes", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
]  # fmt: skip
DESCRIBE_REASON = (
    "EC2 Describe* calls support no resource-level permissions; they are read-only and the handler "
    "filters on the lifeboat:run tag itself."
)
TAG_REASON = (
    "Identifiers of resources a recovery creates are unknown in advance: creation is allowed only "
    "with the lifeboat:run tag in the request, changes and deletion only on resources carrying it."
)
#: States that create something and so MUST be caught into CleanupMachine (tests check the ASL)
CREATING_STATES = ("ReconstructDisks", "PrepareOS", "CreateInstance", "AttachNetworks", "PowerOn")
CLEANUP_STATE = "CleanupMachine"


def ec2_arn(resource: str, *, account: bool = True) -> str:
    """``arn:<partition>:ec2:<region>:<account>:<resource>/*`` (snapshots and AMIs have no account)."""
    owner = cdk.Aws.ACCOUNT_ID if account else ""
    return f"arn:{cdk.Aws.PARTITION}:ec2:{cdk.Aws.REGION}:{owner}:{resource}/*"


@dataclass(frozen=True)
class Grant:
    """One statement of a task role; ``reason`` explains its wildcard (required when it has one)."""

    actions: tuple[str, ...]
    resources: tuple[str, ...] | Callable[[], tuple[str, ...]]
    conditions: dict[str, dict[str, str]] | None = None
    reason: str = TAG_REASON

    def statement(self) -> iam.PolicyStatement:
        resources = self.resources() if callable(self.resources) else self.resources
        return iam.PolicyStatement(
            actions=list(self.actions), resources=list(resources), conditions=self.conditions or None
        )


def _describe() -> Grant:
    return Grant(tuple(DESCRIBE), ("*",), reason=DESCRIBE_REASON)


def _snapshots_tagged(*actions: str) -> Grant:
    return Grant(actions, lambda: (ec2_arn("snapshot", account=False),), RESOURCE_TAGGED)


def _snapshot_writes() -> list[Grant]:
    return [
        Grant(("ebs:StartSnapshot",), lambda: (ec2_arn("snapshot", account=False),), REQUEST_TAGGED),
        _snapshots_tagged("ebs:PutSnapshotBlock", "ebs:CompleteSnapshot", "ec2:DeleteSnapshot"),
    ]


def _delete_everything_tagged() -> list[Grant]:
    return [
        Grant(
            ("ec2:TerminateInstances", "ec2:DeleteVolume", "ec2:DeleteNetworkInterface"),
            lambda: (ec2_arn("instance"), ec2_arn("volume"), ec2_arn("network-interface")),
            RESOURCE_TAGGED,
        ),
        Grant(
            ("ec2:DeleteSnapshot", "ec2:DeregisterImage"),
            lambda: (ec2_arn("snapshot", account=False), ec2_arn("image", account=False)),
            RESOURCE_TAGGED,
        ),
        _describe(),
    ]


@dataclass(frozen=True)
class TaskSpec:
    memory_mib: int = 512
    timeout_minutes: int = 5
    reads_repository: bool = False
    grants: list[Grant] = field(default_factory=list)


#: What each task's handler calls (node_runtime/recovery/targets/aws/), nothing more.
TASK_PERMISSIONS: dict[str, TaskSpec] = {
    "ValidateRun": TaskSpec(reads_repository=True, grants=[_describe()]),
    "ReconstructDisks": TaskSpec(
        memory_mib=3008, timeout_minutes=15, reads_repository=True, grants=[*_snapshot_writes(), _describe()]
    ),
    "PrepareOS": TaskSpec(
        memory_mib=1024,
        timeout_minutes=15,
        grants=[
            _snapshots_tagged("ebs:ListSnapshotBlocks", "ebs:GetSnapshotBlock"),
            *_snapshot_writes(),
            _describe(),
        ],
    ),
    "CreateInstance": TaskSpec(
        timeout_minutes=15,
        grants=[
            Grant(
                ("ec2:RegisterImage", "ec2:CreateTags"),
                lambda: (ec2_arn("image", account=False),),
                REQUEST_TAGGED,
            ),
            Grant(
                ("ec2:RegisterImage", "ec2:CreateTags", "ec2:DeregisterImage"),
                lambda: (ec2_arn("image", account=False), ec2_arn("snapshot", account=False)),
                RESOURCE_TAGGED,
            ),
            _describe(),
        ],
    ),
    "AttachNetworks": TaskSpec(
        grants=[
            Grant(
                ("ec2:CreateNetworkInterface", "ec2:CreateTags"),
                lambda: (ec2_arn("network-interface"),),
                REQUEST_TAGGED,
            ),
            Grant(
                ("ec2:CreateNetworkInterface",),
                lambda: (ec2_arn("subnet"), ec2_arn("security-group")),
                reason="NICs go into the subnets and security groups of the plan's network mapping, "
                "which are the customer's and chosen per run.",
            ),
            Grant(("ec2:DeleteNetworkInterface",), lambda: (ec2_arn("network-interface"),), RESOURCE_TAGGED),
            _describe(),
        ],
    ),
    "PowerOn": TaskSpec(
        timeout_minutes=15,
        grants=[
            Grant(
                ("ec2:RunInstances", "ec2:CreateTags"),
                lambda: (ec2_arn("instance"), ec2_arn("volume")),
                REQUEST_TAGGED,
            ),
            Grant(
                ("ec2:RunInstances",),
                lambda: (ec2_arn("image", account=False), ec2_arn("network-interface")),
                RESOURCE_TAGGED,
            ),
            Grant(
                ("ec2:RunInstances",),
                lambda: (ec2_arn("subnet"), ec2_arn("security-group")),
                reason="The launched instance uses the run's tagged NICs, which sit in the customer's mapped "
                "subnets and security groups; RunInstances authorises those too.",
            ),
            Grant(("ec2:TerminateInstances",), lambda: (ec2_arn("instance"),), RESOURCE_TAGGED),
            _describe(),
        ],
    ),
    "ValidateBoot": TaskSpec(
        timeout_minutes=15,
        grants=[
            Grant(("ec2:GetConsoleOutput",), lambda: (ec2_arn("instance"),), RESOURCE_TAGGED),
            _describe(),
        ],
    ),
    "CleanupMachine": TaskSpec(timeout_minutes=15, grants=_delete_everything_tagged()),
    "RecordMachine": TaskSpec(memory_mib=256, timeout_minutes=1),
    "WriteReport": TaskSpec(memory_mib=512, timeout_minutes=2),
    "DeleteResources": TaskSpec(timeout_minutes=15, grants=_delete_everything_tagged()),
    "SummariseCleanup": TaskSpec(memory_mib=256, timeout_minutes=1),
}


class RecoveryWorkflow(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvConfig,
        assets: FunctionAssets,
        repository: RepositoryBucket,
    ) -> None:
        super().__init__(scope, id)
        self.functions: dict[str, LifeboatFunction] = {}
        self.state_machines: dict[str, sfn.StateMachine] = {}
        for name, asl in (("Recovery", definition.RECOVERY_FLOW), ("TestCleanup", definition.TEST_CLEANUP)):
            tasks = definition.task_names(asl)
            for task in tasks:
                if task not in self.functions:
                    self.functions[task] = self._task_function(task, config, assets, repository)
            self.state_machines[name] = self._state_machine(name, asl, tasks, config)

    def _task_function(
        self, task: str, config: EnvConfig, assets: FunctionAssets, repository: RepositoryBucket
    ) -> LifeboatFunction:
        spec = TASK_PERMISSIONS[task]  # KeyError: a new Task in the ASL needs its permissions declared here
        fn = LifeboatFunction(
            self,
            task,
            config=config,
            assets=assets,
            spec=FunctionSpec(
                handler=f"functions.recovery.lambda_handlers.{entry_name(task)}",
                service=f"recovery-{entry_name(task).replace('_', '-')}",
                description=f"Lifeboat recovery flow task {task}",
                memory_mib=spec.memory_mib,
                timeout_seconds=spec.timeout_minutes * 60,
            ),
        )
        if spec.reads_repository:
            for statement in repository.read_statements():
                allow_wildcards(
                    fn.role,
                    statement,
                    "Object keys of the repository bucket (content-addressed packs, indexes, block maps) "
                    "are not known in advance; the role reads only this bucket.",
                )
        for grant in spec.grants:
            allow_wildcards(fn.role, grant.statement(), grant.reason)
        return fn

    def _state_machine(self, name: str, asl: str, tasks: list[str], config: EnvConfig) -> sfn.StateMachine:
        log_group = logs.LogGroup(
            self,
            f"{name}Logs",
            log_group_name=f"/aws/vendedlogs/states/{config.prefix}-{name.lower()}",
            retention=retention(config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        machine = sfn.StateMachine(
            self,
            name,
            state_machine_name=f"{config.prefix}-{name.lower()}",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(definition.template(asl)),
            definition_substitutions={task: self.functions[task].function.function_arn for task in tasks},
            logs=sfn.LogOptions(
                destination=log_group,
                level=sfn.LogLevel[config.state_machine_log_level],
                include_execution_data=True,
            ),
            tracing_enabled=True,
            timeout=cdk.Duration.hours(24),
        )
        machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[self.functions[task].function.function_arn for task in tasks],
            )
        )
        acknowledge(
            machine,
            "AwsSolutions-IAM5[Resource::*]",
            "Step Functions log delivery (logs:CreateLogDelivery, ...) and X-Ray tracing support no "
            "resource-level permissions; CDK adds exactly those actions.",
        )
        return machine
