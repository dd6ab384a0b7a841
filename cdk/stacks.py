"""The stacks: stateful storage, control plane, nodes, optional console.

``Storage`` holds what must outlive the others (key, repository bucket, metadata table; retained
on delete), so the rest can be destroyed and redeployed freely. ``Control`` holds the API, users,
queue, scheduler, recovery workflow, alerts and dashboard; ``Nodes`` the VPC and the fleet.
"""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from cdk.config import EnvConfig
from cdk.constructs.console_hosting import ConsoleHosting
from cdk.constructs.control_plane import ControlPlane
from cdk.constructs.data_plane import NodeFleet, NodeNetwork
from cdk.constructs.function import FunctionAssets
from cdk.constructs.identity import UserDirectory
from cdk.constructs.job_queue import JobQueue
from cdk.constructs.metadata_table import MetadataTable
from cdk.constructs.observability import AlertTopic, Observability
from cdk.constructs.recovery_workflow import RecoveryWorkflow
from cdk.constructs.repository_bucket import RepositoryBucket, RepositoryKey


def _env(config: EnvConfig) -> cdk.Environment | None:
    if config.account or config.region:
        return cdk.Environment(account=config.account, region=config.region)
    return None


class StorageStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig) -> None:
        super().__init__(
            scope, id, env=_env(config), description=f"Lifeboat {config.name}: repository and metadata"
        )
        self.key = RepositoryKey(self, "RepositoryKey", config=config).key
        self.repository = RepositoryBucket(self, "Repository", config=config, key=self.key)
        self.table = MetadataTable(self, "Metadata", config=config, key=self.key)
        cdk.CfnOutput(self, "RepositoryBucketName", value=self.repository.bucket.bucket_name)
        cdk.CfnOutput(self, "MetadataTableName", value=self.table.table.table_name)


class ControlStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig, storage: StorageStack) -> None:
        super().__init__(scope, id, env=_env(config), description=f"Lifeboat {config.name}: control plane")
        assets = FunctionAssets(self, "Code")
        self.queue = JobQueue(self, "Jobs", config=config, key=storage.key)
        self.users = UserDirectory(self, "Identity", config=config)
        self.recovery = RecoveryWorkflow(
            self, "Recovery", config=config, assets=assets, repository=storage.repository
        )
        self.control = ControlPlane(
            self,
            "ControlPlane",
            config=config,
            assets=assets,
            table=storage.table,
            queue=self.queue,
            users=self.users,
            state_machines=self.recovery.state_machines,
        )
        self.alerts = AlertTopic(self, "Alerts", config=config)
        self.control.allow_notifications(config, self.alerts.topic, self.alerts.key)
        cdk.CfnOutput(self, "AlertTopicArn", value=self.alerts.topic.topic_arn)
        cdk.CfnOutput(self, "ApiUrl", value=self.control.api.url)
        cdk.CfnOutput(self, "UserPoolId", value=self.users.pool.user_pool_id)
        cdk.CfnOutput(self, "UserPoolClientId", value=self.users.client.user_pool_client_id)


class NodesStack(cdk.Stack):
    def __init__(
        self, scope: Construct, id: str, *, config: EnvConfig, storage: StorageStack, control: ControlStack
    ) -> None:
        super().__init__(
            scope, id, env=_env(config), description=f"Lifeboat {config.name}: replication nodes"
        )
        self.network = NodeNetwork(self, "Network", config=config)
        self.fleet = NodeFleet(
            self,
            "Fleet",
            config=config,
            network=self.network,
            repository=storage.repository,
            api_url=control.control.api.url,
            queue=control.queue.queue,
            notifications=control.alerts.topic,
        )
        recovery = control.recovery.state_machines["Recovery"]
        self.observability = Observability(
            self,
            "Observability",
            config=config,
            topic=control.alerts.topic,
            queue=control.queue.queue.metric_approximate_number_of_messages_visible(),
            dead_letters=control.queue.dead_letters.metric_approximate_number_of_messages_visible(),
            api_errors=control.control.api_function.function.metric_errors(),
            scheduler_errors=control.control.scheduler_function.function.metric_errors(),
            recoveries_failed=recovery.metric_failed(),
            nodes_in_service=cdk.aws_cloudwatch.Metric(
                namespace="AWS/AutoScaling",
                metric_name="GroupInServiceInstances",
                dimensions_map={"AutoScalingGroupName": self.fleet.group.auto_scaling_group_name},
                statistic="Minimum",
            ),
        )
        cdk.CfnOutput(self, "NodeTokenSecret", value=self.fleet.token.secret_name)


class ConsoleStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig, control: ControlStack) -> None:
        super().__init__(scope, id, env=_env(config), description=f"Lifeboat {config.name}: console hosting")
        self.hosting = ConsoleHosting(self, "Console", config=config, api_url=control.control.api.url)
        cdk.CfnOutput(
            self, "ConsoleUrl", value=f"https://{self.hosting.distribution.distribution_domain_name}"
        )
        cdk.CfnOutput(self, "ConsoleBucket", value=self.hosting.bucket.bucket_name)
