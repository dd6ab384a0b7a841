"""Deployment configuration: one :class:`EnvConfig` per environment, read from the CDK context.

``cdk.json`` holds ``context.environments``, a mapping of environment name -> settings (the
fields below); ``-c env=NAME`` picks one (default ``dev``). Unknown keys are refused, so a typo
in cdk.json fails the synth instead of silently deploying a default.

Nothing here looks anything up: account and region are optional (an environment-agnostic
template when absent), AMIs come from SSM parameters resolved by CloudFormation at deploy time.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class NodeFleet(BaseModel):
    """The replication nodes' autoscaling group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_type: str = "m6i.large"
    min_capacity: int = Field(default=0, ge=0, le=100)
    max_capacity: int = Field(default=4, ge=1, le=100)
    #: queued jobs per node before the fleet grows (step scaling on the queue's visible messages)
    jobs_per_node: int = Field(default=10, ge=1, le=1000)
    volume_gib: int = Field(default=50, ge=20, le=16384)
    site_id: str = Field(
        default="aws", description="The Lifeboat site the nodes serve (lifeboat node run --site)"
    )
    ssm_access: bool = Field(
        default=True, description="Session Manager access instead of SSH (no inbound port)"
    )

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z0-9]+", value):
            raise ValueError(f"not an EC2 instance type: {value!r}")
        return value


class EnvConfig(BaseModel):
    """One environment (dev, prod, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,15}$")
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")

    # repository bucket
    object_lock: bool = False
    object_lock_days: int = Field(default=30, ge=1, le=36500, description="COMPLIANCE-mode default retention")
    versioning: bool = False
    noncurrent_version_days: int = Field(default=30, ge=1)

    # control plane
    api_throttle_rate: float = Field(default=50, gt=0)
    api_throttle_burst: int = Field(default=100, ge=1)
    #: stage throttling of POST /auth/login alone (all callers together; the application throttles
    #: per user and per address on top, docs/login-throttling.md)
    login_throttle_rate: float = Field(default=5, gt=0)
    login_throttle_burst: int = Field(default=10, ge=1)
    cors_origins: tuple[str, ...] = ()
    #: the regional WAF (AWS managed rule groups + a per-IP rate rule on /auth/login). Off by
    #: default (it costs a web ACL and rules a month); cdk.json turns it on for prod
    waf: bool = False
    #: requests to /auth/login one IP may make in 5 minutes before the WAF blocks it
    waf_login_rate_limit: int = Field(default=100, ge=10, le=2_000_000_000)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_retention_days: int = 90
    job_lease_seconds: int = Field(default=300, ge=30, le=43200)
    max_receives: int = Field(default=5, ge=1, le=1000)
    state_machine_log_level: str = Field(default="ALL", pattern=r"^(ALL|ERROR|FATAL)$")

    # data plane
    vpc_cidr: str = "10.42.0.0/16"
    nat_gateways: int = Field(default=1, ge=0, le=2)
    interface_endpoints: bool = True
    nodes: NodeFleet = Field(default_factory=NodeFleet)

    # observability
    alarm_email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    rpo_breach_threshold: int = Field(
        default=1, ge=1, description="RPO alerts opened in 5 minutes that raise the alarm"
    )
    #: SNS topics notification channels may publish to besides the stack's alert topic (their
    #: KMS key policies, if encrypted, must let the scheduler and API roles use the key)
    notification_topic_arns: tuple[
        Annotated[
            str, Field(pattern=r"^arn:aws[a-z-]*:sns:[a-z]{2}(-[a-z]+)+-\d:\d{12}:[A-Za-z0-9_.-]{1,256}$")
        ],
        ...,
    ] = ()

    # console
    console_hosting: bool = False

    #: keep the bucket, table and key when the stacks are deleted (always on for prod)
    retain_data: bool = True

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        allowed = (
            1,
            3,
            5,
            7,
            14,
            30,
            60,
            90,
            120,
            150,
            180,
            365,
            400,
            545,
            731,
            1096,
            1827,
            2192,
            2557,
            2922,
            3288,
            3653,
        )
        if value not in allowed:
            raise ValueError(f"CloudWatch Logs retention must be one of {allowed}")
        return value

    @property
    def prefix(self) -> str:
        """Resource-name prefix (``lifeboat-dev``)."""
        return f"lifeboat-{self.name}"

    @property
    def stack_prefix(self) -> str:
        return f"Lifeboat-{self.name.capitalize()}"


def from_context(context: dict[str, Any], env: str | None = None) -> EnvConfig:
    """The environment ``env`` (else ``context['env']``, else ``dev``) of the cdk.json context."""
    environments: dict[str, Any] = context.get("environments") or {}
    name = env or context.get("env") or "dev"
    if name not in environments:
        raise ValueError(
            f"environment {name!r} is not in cdk.json context.environments ({sorted(environments)})"
        )
    return EnvConfig(name=name, **environments[name])
