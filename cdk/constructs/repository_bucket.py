"""The repository bucket: where replication writes packs, indexes and recovery points.

KMS customer-managed key with yearly rotation, public access blocked, TLS enforced by the
bucket policy, incomplete multipart uploads aborted after a day (packs are uploaded in parts;
a killed node leaves parts behind), server access logs to a separate log bucket, optional
versioning and optional S3 Object Lock (COMPLIANCE mode default retention: recovery points
that even an administrator cannot delete early — ransomware protection).

The bucket name is fixed (``<prefix>-repo-<account>-<region>``) so that a user can restore
with only the CLI and the bucket name, without the control plane (docs/FORMAT.md).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import EnvConfig
from cdk.nag import acknowledge


class RepositoryKey(Construct):
    """The customer-managed key of the repository, the table and the queues."""

    def __init__(self, scope: Construct, id: str, *, config: EnvConfig) -> None:
        super().__init__(scope, id)
        self.key = kms.Key(
            self,
            "Key",
            alias=f"alias/{config.prefix}-data",
            description=f"Lifeboat {config.name}: repository bucket, metadata table, job queues",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY,
        )


class RepositoryBucket(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig, key: kms.IKey) -> None:
        super().__init__(scope, id)
        removal = cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY
        self.log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            # S3 server access logging delivers only to SSE-S3 buckets (not SSE-KMS).
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=cdk.Duration.days(365))],
            removal_policy=removal,
        )
        acknowledge(
            self.log_bucket,
            "AwsSolutions-S1",
            "This is the server-access-log bucket itself; logging it into itself would loop.",
        )
        self.bucket_name = f"{config.prefix}-repo-{cdk.Aws.ACCOUNT_ID}-{cdk.Aws.REGION}"
        lock = None
        if config.object_lock:
            lock = s3.ObjectLockRetention.compliance(cdk.Duration.days(config.object_lock_days))
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=self.bucket_name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,  # one KMS call per bucket key, not per object: cost and throttling
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=config.versioning or config.object_lock,  # Object Lock requires versioning
            object_lock_enabled=config.object_lock or None,
            object_lock_default_retention=lock,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="repository/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-multipart-uploads",
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
                *(
                    [
                        s3.LifecycleRule(
                            id="expire-noncurrent-versions",
                            noncurrent_version_expiration=cdk.Duration.days(config.noncurrent_version_days),
                        )
                    ]
                    if config.versioning or config.object_lock
                    else []
                ),
            ],
            removal_policy=removal,
        )
        self.key = key

    def bucket_arn(self) -> str:
        """From the fixed name, not a cross-stack reference: the same string in every stack."""
        return f"arn:{cdk.Aws.PARTITION}:s3:::{self.bucket_name}"

    def objects_arn(self) -> str:
        return f"{self.bucket_arn()}/*"

    def read_statements(self) -> list[iam.PolicyStatement]:
        """Read a repository: list, ranged GETs, decrypt."""
        return [
            iam.PolicyStatement(
                actions=["s3:ListBucket", "s3:GetBucketLocation"], resources=[self.bucket_arn()]
            ),
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[self.objects_arn()]),
            iam.PolicyStatement(actions=["kms:Decrypt", "kms:DescribeKey"], resources=[self.key.key_arn]),
        ]

    def write_statements(self) -> list[iam.PolicyStatement]:
        """Replicate and prune: read + put/delete objects, multipart, encrypt."""
        return [
            *self.read_statements(),
            iam.PolicyStatement(
                actions=[
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                resources=[self.objects_arn()],
            ),
            iam.PolicyStatement(actions=["s3:ListBucketMultipartUploads"], resources=[self.bucket_arn()]),
            iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Encrypt"], resources=[self.key.key_arn]),
        ]
