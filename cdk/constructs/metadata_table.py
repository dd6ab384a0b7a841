"""The metadata table, matching ``shared/adapters/aws/dynamo_metadata.py`` exactly.

Key schema ``pk`` (S, hash) + ``sk`` (S, range); GSIs ``by_kind`` (kind, created) and
``by_a1``..``by_a3`` (aN, created), all projecting ALL attributes. On-demand billing,
point-in-time recovery, encryption with the customer-managed key, deletion protection.
TTL on ``expires`` (epoch seconds), which the adapter writes only for kinds that expire (the
login throttle's counters), so DynamoDB deletes old counters by itself.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.config import EnvConfig

HASH_KEY, RANGE_KEY = "pk", "sk"
INDEXES = {"by_kind": "kind", "by_a1": "a1", "by_a2": "a2", "by_a3": "a3"}
INDEX_RANGE_KEY = "created"
TTL_ATTRIBUTE = "expires"  # shared/adapters/aws/dynamo_metadata.py TTL_ATTRIBUTE


class MetadataTable(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig, key: kms.IKey) -> None:
        super().__init__(scope, id)
        string = dynamodb.AttributeType.STRING
        self.table_name = f"{config.prefix}-metadata"
        self.table = dynamodb.Table(
            self,
            "Table",
            table_name=self.table_name,
            partition_key=dynamodb.Attribute(name=HASH_KEY, type=string),
            sort_key=dynamodb.Attribute(name=RANGE_KEY, type=string),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            deletion_protection=config.retain_data,
            time_to_live_attribute=TTL_ATTRIBUTE,
            removal_policy=cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY,
        )
        for name, attribute in INDEXES.items():
            self.table.add_global_secondary_index(
                index_name=name,
                partition_key=dynamodb.Attribute(name=attribute, type=string),
                sort_key=dynamodb.Attribute(name=INDEX_RANGE_KEY, type=string),
                projection_type=dynamodb.ProjectionType.ALL,
            )
        self.key = key

    def table_arn(self) -> str:
        return cdk.Stack.of(self).format_arn(
            service="dynamodb", resource="table", resource_name=self.table_name
        )

    def read_item_statements(self) -> list[iam.PolicyStatement]:
        """Reading single records by id (DynamoMetadataStore.get): the node authorizer's only call."""
        return [
            iam.PolicyStatement(actions=["dynamodb:GetItem"], resources=[self.table_arn()]),
            iam.PolicyStatement(actions=["kms:Decrypt", "kms:DescribeKey"], resources=[self.key.key_arn]),
        ]

    def read_write_statements(self) -> list[iam.PolicyStatement]:
        """What DynamoMetadataStore calls: item CRUD with conditions, queries on the GSIs."""
        return [
            iam.PolicyStatement(
                actions=[
                    "dynamodb:GetItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:Query",
                    "dynamodb:DescribeTable",
                    "dynamodb:ConditionCheckItem",
                    "dynamodb:BatchGetItem",
                    "dynamodb:BatchWriteItem",
                ],
                resources=[self.table_arn()],
            ),
            iam.PolicyStatement(
                actions=["dynamodb:Query"],
                resources=[f"{self.table_arn()}/index/{name}" for name in INDEXES],
            ),
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[self.key.key_arn],
            ),
        ]
