"""Replication nodes: a VPC and an autoscaling group of EC2 instances running ``lifeboat node run``.

VPC over two AZs: public subnets only for the NAT gateway(s), nodes in private subnets; gateway
endpoints for S3 (the repository traffic, free of NAT charges) and DynamoDB; interface endpoints
for Secrets Manager, CloudWatch Logs and (with Session Manager access) SSM; flow logs to
CloudWatch. Nodes accept no inbound traffic.

Launch template: Amazon Linux 2023 (SSM parameter resolved by CloudFormation, no lookup at
synth), IMDSv2 required (hop limit 1), encrypted gp3 root volume, detailed monitoring. The user
data installs CPython 3.11, downloads the node asset (``build/node``: this repository's wheel and
a wheelhouse of its dependencies, built by ``cdk/package_lambda.py``) and installs it offline,
writes the group's enrollment token from Secrets Manager to a root-only file, and starts
``lifeboat node run`` as a systemd service. Each instance enrolls with that token and gets its
own node credential, kept in a root-only state file and rotated by the node
(docs/node-authentication.md); the shared token can do nothing but register new nodes.

The group scales on the job queue's visible messages (step scaling: jobs_per_node per node).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk import package_lambda
from cdk.config import EnvConfig
from cdk.constructs.function import retention
from cdk.constructs.repository_bucket import RepositoryBucket
from cdk.nag import acknowledge, allow_wildcards

SERVICE_UNIT = """[Unit]
Description=Lifeboat replication node
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/opt/lifeboat/venv/bin/lifeboat node run --api {api} --site {site} --token-file /etc/lifeboat/node-token \
  --state-file /var/lib/lifeboat/node-state.json
Restart=always
RestartSec=10
User=root
Environment=AWS_DEFAULT_REGION={region}

[Install]
WantedBy=multi-user.target
"""


class NodeNetwork(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig) -> None:
        super().__init__(scope, id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.vpc_cidr),
            max_azs=2,
            nat_gateways=config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name="nodes",
                    subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
                    if config.nat_gateways
                    else ec2.SubnetType.PRIVATE_ISOLATED,
                    cidr_mask=20,
                ),
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
            restrict_default_security_group=False,
        )
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            retention=retention(config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))
        if config.interface_endpoints:
            services = [
                ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
                ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
            ]
            if config.nodes.ssm_access:
                services += [
                    ec2.InterfaceVpcEndpointAwsService.SSM,
                    ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
                    ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES,
                ]
            endpoints = ec2.SecurityGroup(
                self, "Endpoints", vpc=self.vpc, description="Lifeboat interface endpoints: HTTPS from the VPC",
                allow_all_outbound=False,
            )  # fmt: skip
            endpoints.add_ingress_rule(
                ec2.Peer.ipv4(config.vpc_cidr), ec2.Port.tcp(443), "HTTPS from the VPC"
            )
            for service in services:
                self.vpc.add_interface_endpoint(
                    service.short_name.replace(".", "-"),
                    service=service,
                    subnets=ec2.SubnetSelection(subnet_group_name="nodes"),
                    security_groups=[endpoints],
                    open=False,
                )


class NodeFleet(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvConfig,
        network: NodeNetwork,
        repository: RepositoryBucket,
        api_url: str,
        queue: sqs.IQueue,
        notifications: sns.ITopic,
    ) -> None:
        super().__init__(scope, id)
        fleet = config.nodes
        if not (package_lambda.NODE_DIR / "wheels").is_dir():
            raise FileNotFoundError(
                f"{package_lambda.NODE_DIR} is missing: run `python -m cdk.package_lambda` first"
            )
        self.token = secretsmanager.Secret(
            self,
            "NodeToken",
            secret_name=f"{config.prefix}/node-token",
            description="The replication nodes' Lifeboat enrollment token (lbt_...): create one with "
            "`lifeboat node enrollment-token --name <group> --ttl-days <days>` and put it here; each node "
            "enrolls with it at boot and gets its own credential.",
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True),
        )
        acknowledge(
            self.token,
            "AwsSolutions-SMG4",
            "The value is a Lifeboat enrollment token issued by the control plane; replace it there "
            "(`lifeboat node enrollment-token`, revoke the old one), not with a Secrets Manager rotation "
            "function. Nodes' own credentials are rotated by the nodes.",
        )
        asset = s3_assets.Asset(self, "NodeRuntime", path=str(package_lambda.NODE_DIR), exclude=[".stamp"])
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="Lifeboat replication node: the repository bucket, its token, its runtime asset",
        )
        for statement in repository.write_statements():
            allow_wildcards(
                self.role,
                statement,
                "Nodes write and read content-addressed objects (packs, indexes, block maps) whose keys are "
                "not known in advance; the role covers this one bucket only.",
            )
        self.token.grant_read(self.role)
        allow_wildcards(
            self.role,
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[f"arn:{cdk.Aws.PARTITION}:s3:::{asset.s3_bucket_name}/{asset.s3_object_key}"],
            ),
            "The node runtime asset object in the CDK bootstrap bucket.",
        )
        if fleet.ssm_access:
            self.role.add_managed_policy(
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")
            )
            acknowledge(
                self.role,
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]",
                "Session Manager access to nodes (no SSH, no inbound port) needs AWS's SSM core policy; "
                "turn it off with nodes.ssm_access=false.",
            )

        security_group = ec2.SecurityGroup(
            self,
            "Nodes",
            vpc=network.vpc,
            description="Lifeboat nodes: no inbound, HTTPS out",
            allow_all_outbound=True,
        )
        user_data = ec2.UserData.for_linux()
        local_zip = user_data.add_s3_download_command(bucket=asset.bucket, bucket_key=asset.s3_object_key)
        unit = SERVICE_UNIT.format(api=api_url, site=fleet.site_id, region=cdk.Aws.REGION)
        user_data.add_commands(
            "set -euo pipefail",
            "dnf install -y python3.11 python3.11-pip unzip",
            "mkdir -p /opt/lifeboat/dist /etc/lifeboat /var/lib/lifeboat && chmod 700 /etc/lifeboat /var/lib/lifeboat",
            f"unzip -o {local_zip} -d /opt/lifeboat/dist",
            "python3.11 -m venv /opt/lifeboat/venv",
            "/opt/lifeboat/venv/bin/pip install --no-index --find-links /opt/lifeboat/dist/wheels "
            "/opt/lifeboat/dist/lifeboat-*.whl",
            "umask 077",
            f"aws secretsmanager get-secret-value --region {cdk.Aws.REGION} --secret-id {self.token.secret_arn} "
            "--query SecretString --output text > /etc/lifeboat/node-token",
            f"cat > /etc/systemd/system/lifeboat-node.service <<'UNIT'\n{unit}UNIT",
            "systemctl daemon-reload",
            "systemctl enable --now lifeboat-node.service",
        )
        template = ec2.LaunchTemplate(
            self,
            "Template",
            launch_template_name=f"{config.prefix}-node",
            machine_image=ec2.MachineImage.latest_amazon_linux2023(),
            instance_type=ec2.InstanceType(fleet.instance_type),
            role=self.role,
            security_group=security_group,
            user_data=user_data,
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            detailed_monitoring=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        fleet.volume_gib, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3
                    ),
                )
            ],
        )
        self.group = autoscaling.AutoScalingGroup(
            self,
            "Group",
            vpc=network.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_group_name="nodes"),
            launch_template=template,
            min_capacity=fleet.min_capacity,
            max_capacity=fleet.max_capacity,
            cooldown=cdk.Duration.minutes(5),
            health_checks=autoscaling.HealthChecks.ec2(grace_period=cdk.Duration.minutes(10)),
            notifications=[autoscaling.NotificationConfiguration(topic=notifications)],
            group_metrics=[autoscaling.GroupMetrics.all()],
        )
        acknowledge(
            self.group,
            "AwsSolutions-AS2",
            "Nodes serve no traffic and sit behind no load balancer; EC2 status checks are the health check "
            "and the control plane tracks node heartbeats.",
        )
        self.group.scale_on_metric(
            "QueueDepth",
            metric=queue.metric_approximate_number_of_messages_visible(period=cdk.Duration.minutes(1)),
            adjustment_type=autoscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            scaling_steps=[
                autoscaling.ScalingInterval(upper=0, change=-1),
                autoscaling.ScalingInterval(lower=1, change=+1),
                autoscaling.ScalingInterval(lower=fleet.jobs_per_node * 2, change=+2),
            ],
            evaluation_periods=3,
        )
