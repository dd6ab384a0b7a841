"""The job queue (SQS standard queue + dead-letter queue), as ``shared/adapters/aws/sqs_queue.py`` expects.

The queue carries job ids only; the job record is the truth. ``maxReceiveCount`` is the port's
``max_receives``; the scheduler fails jobs whose message was dead-lettered. Both queues are
encrypted with the customer-managed key and refuse plain-HTTP requests. The visibility timeout
is the job lease (nodes extend it with progress reports).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.config import EnvConfig

DLQ_RETENTION = cdk.Duration.days(14)


class JobQueue(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig, key: kms.IKey) -> None:
        super().__init__(scope, id)
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            queue_name=f"{config.prefix}-jobs-dlq",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            data_key_reuse=cdk.Duration.hours(1),
            enforce_ssl=True,
            retention_period=DLQ_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=f"{config.prefix}-jobs",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            data_key_reuse=cdk.Duration.hours(1),
            enforce_ssl=True,
            visibility_timeout=cdk.Duration.seconds(config.job_lease_seconds),
            retention_period=cdk.Duration.days(4),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=config.max_receives, queue=self.dead_letters
            ),
        )
        self.key = key

    def statements(self) -> list[iam.PolicyStatement]:
        """What SqsJobQueue calls: send/receive/ack/extend/release, DLQ peeks, redrive lookup."""
        return [
            iam.PolicyStatement(
                actions=[
                    "sqs:SendMessage",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                ],
                resources=[self.queue.queue_arn, self.dead_letters.queue_arn],
            ),
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                resources=[self.key.key_arn],
            ),
        ]
