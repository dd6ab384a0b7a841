"""Dashboard and alarms; alarms notify an SNS topic encrypted with its own KMS key.

Metrics (namespace ``Lifeboat``, dimension ``service`` as powertools sets it): the scheduler
emits ``JobsCreated`` and ``RpoAlertsOpened`` (functions/scheduler/handler.py). The dashboard
also charts ``ReplicatedBytes`` (service=node), ``RpoLagSeconds`` per ``plan`` and ``JobsFailed``
(service=scheduler) — the names the node agent and scheduler are to emit — together with AWS's
own metrics: the queues, the API, the functions, the state machine, the node group.
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

NAMESPACE = "Lifeboat"
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


def lifeboat_metric(name: str, service: str, statistic: str = "Sum") -> cw.Metric:
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": service},
        statistic=statistic,
        period=FIVE_MINUTES,
    )


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
        rpo_alerts = lifeboat_metric("RpoAlertsOpened", "scheduler")
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

        rpo_lag = cw.MathExpression(
            expression=f"SEARCH('{{{NAMESPACE},plan,service}} MetricName=\"RpoLagSeconds\"', 'Maximum', 300)",
            label="RPO lag (s) per plan",
            period=FIVE_MINUTES,
        )
        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{config.prefix}-overview")
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Replication throughput (bytes / 5 min)",
                left=[lifeboat_metric("ReplicatedBytes", "node")], width=12,
            ),
            cw.GraphWidget(title="RPO lag per plan (s)", left=[rpo_lag], width=12),
        )  # fmt: skip
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Jobs", left=[lifeboat_metric("JobsCreated", "scheduler"), lifeboat_metric("JobsFailed", "scheduler")],
                right=[queue, dead_letters], width=12,
            ),
            cw.GraphWidget(title="Node health (in service)", left=[nodes_in_service], width=12),
        )  # fmt: skip
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Errors", left=[api_errors, scheduler_errors, recoveries_failed], width=12),
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=12),
        )
