"""Composition root of the Lambda functions: DynamoDB metadata, SQS queue, env configuration.

Environment: LIFEBOAT_TABLE (DynamoDB table), LIFEBOAT_QUEUE_URL (SQS), LIFEBOAT_JOB_LEASE_SECONDS
(optional), LIFEBOAT_SECRET_PREFIX (the Secrets Manager names vCenter passwords are kept
under), LIFEBOAT_CHANNEL_SECRET_PREFIX (the same for webhook signing secrets, apart so that the
scheduler, which signs, reads no vCenter password), LIFEBOAT_RECOVERY_STATE_MACHINE and LIFEBOAT_TEST_CLEANUP_STATE_MACHINE (ARNs; when
set, test and failover recoveries and test cleanups run in Step Functions, migrations on a
node), LIFEBOAT_CONSOLE_URL (optional: links in notifications). In AWS users authenticate with Cognito (the API Gateway authorizer passes claims),
so no signing secret is needed; node tokens are verified against their stored hashes.
Metrics are printed as CloudWatch EMF (each handler flushes them per invocation).
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta

from shared.services.context import Control


@functools.cache
def control() -> Control:
    from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore
    from shared.adapters.aws.secrets_manager_vault import SecretsManagerVault
    from shared.adapters.aws.sqs_queue import SqsJobQueue
    from shared.adapters.metrics.emf import EmfMetrics
    from shared.adapters.notifiers import ChannelRouter

    workflows = None
    if os.environ.get("LIFEBOAT_RECOVERY_STATE_MACHINE"):
        from shared.adapters.aws.step_functions import StepFunctionsStarter

        workflows = StepFunctionsStarter({
            "recovery": os.environ["LIFEBOAT_RECOVERY_STATE_MACHINE"],
            "test-cleanup": os.environ.get("LIFEBOAT_TEST_CLEANUP_STATE_MACHINE", ""),
        })  # fmt: skip
    return Control(
        metrics=EmfMetrics(),  # printed to stdout, extracted by CloudWatch Logs; flushed per invocation
        workflows=workflows,
        store=DynamoMetadataStore(os.environ["LIFEBOAT_TABLE"]),
        queue=SqsJobQueue(os.environ["LIFEBOAT_QUEUE_URL"]),
        jwt_secret=os.environ.get("LIFEBOAT_JWT_SECRET", ""),  # unused behind Cognito
        lease=timedelta(seconds=float(os.environ.get("LIFEBOAT_JOB_LEASE_SECONDS", "300"))),
        secrets=SecretsManagerVault(os.environ.get("LIFEBOAT_SECRET_PREFIX", "lifeboat/vcenter/")),
        channel_secrets=SecretsManagerVault(
            os.environ.get("LIFEBOAT_CHANNEL_SECRET_PREFIX", "lifeboat/notifications/")
        ),
        notifier=ChannelRouter(),
        console_url=os.environ.get("LIFEBOAT_CONSOLE_URL", ""),
    )
