"""Dashboard and alarms; alarms notify an SNS topic encrypted with its own KMS key.

Lifeboat's own metrics (namespace ``Lifeboat``) are the catalogue's (shared/domain/metrics.py:
names, units, dimensions, and the ``service`` dimension each carries); the control plane's
functions print them as EMF (docs/monitoring.md). No metric name is spelled here: the widgets
take catalogue entries, and metrics with dimensions (per plan, job kind, stage) are graphed
with SEARCH expressions, one line per dimension value. AWS's own metrics sit beside them: the
queues, the API, the functions, the state machine, the node group.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from constructs import Construct

from cdk.config import EnvConfig
from shared.domain import metrics as m
from shared.domain.metrics import NAMESPACE, MetricSpec

FIVE_MINUTES = cdk.Duration.minutes(5)


class AlertTopic(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig) -> None:
        super().__init__(scope, id)
        self.key = kms.Key(
            self, "Key", alias=f"alias/{config.prefix}-alerts", enable_key_rotation=True,
            description="Lifeboat alert topic", removal_policy=cdk.RemovalPolicy.DESTROY,
        )  # fmt: skip
        for service in ("cloudwatch.amazonaws.com", "autoscaling.amazonaws.com"):
            self.key.add_to_resource_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                    principals=[iam.ServicePrincipal(service)],
                    resources=["*"],  # a key policy's Resource is always the key itself
                )
            )
        self.topic = sns.Topic(
            self, "Topic", topic_name=f"{config.prefix}-alerts", master_key=self.key, enforce_ssl=True
        )
        if config.alarm_email:
            self.topic.add_subscription(subs.EmailSubscription(config.alarm_email))


def lifeboat_metric(spec: MetricSpec) -> cw.Metric:
    """A catalogue metric without dimensions of its own (only ``service``)."""
    if spec.dimensions:
        raise ValueError(f"{spec.name} has dimensions {spec.dimensions}: graph it with lifeboat_search")
    return cw.Metric(
        namespace=NAMESPACE, metric_name=spec.name, dimensions_map={"service": spec.service},
        statistic=spec.statistic, period=FIVE_MINUTES, label=spec.name,
    )  # fmt: skip


def lifeboat_search(spec: MetricSpec, label: str) -> cw.MathExpression:
    """Every dimension value of a catalogue metric (per plan, job kind, stage), one line each."""
    schema = ",".join([NAMESPACE, *sorted((*spec.dimensions, "service"))])
    query = f'{{{schema}}} MetricName="{spec.name}" service="{spec.service}"'
    return cw.MathExpression(
        expression=f"SEARCH('{query}', '{spec.statistic}', {int(FIVE_MINUTES.to_seconds())})",
        label=label, period=FIVE_MINUTES,
    )  # fmt: skip


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvConfig,
        topic: sns.ITopic,
        queue: cw.Metric,
        dead_letters: cw.Metric,
        api_errors: cw.Metric,
        scheduler_errors: cw.Metric,
        recoveries_failed: cw.Metric,
        nodes_in_service: cw.Metric,
    ) -> None:
        super().__init__(scope, id)
        action = cw_actions.SnsAction(topic)
        rpo_alerts = lifeboat_metric(m.RPO_ALERTS_OPENED)
        self.alarms: dict[str, cw.Alarm] = {
            "RpoBreach": rpo_alerts.create_alarm(
                self, "RpoBreach", alarm_name=f"{config.prefix}-rpo-breach",
                alarm_description="A protection plan's newest recovery point is older than its RPO.",
                threshold=config.rpo_breach_threshold, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "DeadLetters": dead_letters.create_alarm(
                self, "DeadLetters", alarm_name=f"{config.prefix}-dead-letters",
                alarm_description="Jobs were dead-lettered (no node could run them).",
                threshold=1, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "SchedulerErrors": scheduler_errors.create_alarm(
                self, "SchedulerErrors", alarm_name=f"{config.prefix}-scheduler-errors",
                alarm_description="The scheduler failed: no jobs are being created.",
                threshold=3, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "RecoveriesFailed": recoveries_failed.create_alarm(
                self, "RecoveriesFailed", alarm_name=f"{config.prefix}-recoveries-failed",
                alarm_description="A recovery-flow execution failed.",
                threshold=1, evaluation_periods=1,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
        }  # fmt: skip
        for alarm in self.alarms.values():
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)

        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{config.prefix}-overview")
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Replication (bytes / 5 min)",
                left=[lifeboat_metric(m.REPLICATED_BYTES), lifeboat_metric(m.CHANGED_BYTES),
                      lifeboat_metric(m.REPOSITORY_BYTES_STORED)],
                right=[lifeboat_metric(m.REPLICATION_THROUGHPUT)], right_y_axis=cw.YAxisProps(label="bytes/s"),
                width=12,
            ),
            cw.GraphWidget(title="RPO lag per plan (s)", left=[lifeboat_search(m.RPO_LAG_SECONDS, "RPO lag (s)")],
                           right=[lifeboat_search(m.DEDUP_RATIO, "dedup ratio")], width=12),
        )  # fmt: skip
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Jobs (per kind)",
                left=[lifeboat_metric(m.JOBS_CREATED),
                      *(lifeboat_search(s, s.name) for s in (m.JOBS_STARTED, m.JOBS_SUCCEEDED, m.JOBS_FAILED, m.JOBS_CANCELLED))],
                right=[queue, dead_letters], width=12,
            ),
            cw.GraphWidget(title="Node health (in service)", left=[nodes_in_service], width=12),
        )  # fmt: skip
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Recovery stages (s, average per stage)",
                           left=[lifeboat_search(m.RECOVERY_STAGE_SECONDS, "stage (s)")], width=12),
            cw.GraphWidget(title="Recovery RTO (s, per mode)",
                           left=[lifeboat_search(m.RECOVERY_RTO_SECONDS, "RTO (s)")], width=12),
        )  # fmt: skip
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Errors", left=[api_errors, scheduler_errors, recoveries_failed], width=12),
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=12),
        )
