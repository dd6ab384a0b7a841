"""Per-construct checks of the synthesised templates (aws_cdk.assertions) and the nag result."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from cdk.constructs.control_plane import NODE_ROUTES, PUBLIC_ROUTES
from cdk.constructs.metadata_table import INDEXES, TTL_ATTRIBUTE
from cdk.nag import LEDGER
from tests.cdk.synth import Synthesized

#: the only actions allowed on Resource "*", and why AWS requires it
STAR_ACTIONS = {
    # X-Ray (Lambda/Step Functions active tracing): no resource-level permissions exist.
    "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
    # Step Functions -> CloudWatch Logs vended delivery: no resource-level permissions exist.
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
    # EC2 Describe*: read-only, no resource-level permissions exist.
    "ec2:DescribeSnapshots", "ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeInstanceStatus",
    "ec2:DescribeVolumes", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
}  # fmt: skip


def _template(s: Synthesized, suffix: str) -> Template:
    (stack,) = [st for st in s.built.stacks if st.stack_name.endswith(suffix)]
    return Template.from_json(s.templates[stack.stack_name])


def test_synth_has_no_unacknowledged_nag_findings(synthesized: Synthesized) -> None:
    assert synthesized.report is not None, "cdk-nag did not run"
    violations = [v for p in synthesized.report["pluginReports"] for v in p["violations"]]
    assert violations == []


def test_nag_is_plugged_in_and_fails_the_synth(tmp_path: Path) -> None:
    """The canary: the same wiring on a stack with a finding refuses to synthesise."""
    import aws_cdk as cdk
    from aws_cdk import aws_sqs as sqs

    from cdk.nag import add_checks

    app = cdk.App(outdir=str(tmp_path), context={"@aws-cdk/core:validationReportJson": True})
    add_checks(app)
    sqs.Queue(cdk.Stack(app, "Canary"), "Plain", enforce_ssl=False)
    with pytest.raises(RuntimeError, match="Validation"):
        app.synth()
    report = json.loads((tmp_path / "policy-validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert {"AwsSolutions-SQS3", "AwsSolutions-SQS4"} <= rules


def test_every_stack_synthesizes(dev: Synthesized, full: Synthesized) -> None:
    assert sorted(n.rsplit("-", 1)[-1] for n in dev.templates) == ["Control", "Nodes", "Storage"]
    assert sorted(n.rsplit("-", 1)[-1] for n in full.templates) == ["Console", "Control", "Nodes", "Storage"]


def test_every_acknowledgment_has_a_reason(full: Synthesized) -> None:
    assert LEDGER
    for ack in LEDGER:
        assert ack.rule.startswith("AwsSolutions-") and len(ack.reason) >= 40, ack


def test_repository_bucket_is_encrypted_private_tls_only(full: Synthesized) -> None:
    t = _template(full, "Storage")
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": Match.any_value(),
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    Match.object_like({"ServerSideEncryptionByDefault": Match.object_like({"SSEAlgorithm": "aws:kms"})})
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
            },
            "LifecycleConfiguration": {
                "Rules": Match.array_with([Match.object_like({"AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}})])
            },
            "LoggingConfiguration": Match.object_like({"LogFilePrefix": "repository/"}),
            "ObjectLockEnabled": True,
            "ObjectLockConfiguration": Match.object_like({"ObjectLockEnabled": "Enabled"}),
        },
    )  # fmt: skip
    t.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            }
        },
    )
    t.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    t.has_resource("AWS::S3::Bucket", {"DeletionPolicy": "Retain"})


def test_metadata_table_matches_the_adapter(dev: Synthesized) -> None:
    t = _template(dev, "Storage")
    t.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": Match.object_like({"SSEEnabled": True, "SSEType": "KMS"}),
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": name,
                    "KeySchema": [{"AttributeName": attr, "KeyType": "HASH"}, {"AttributeName": "created", "KeyType": "RANGE"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
                for name, attr in INDEXES.items()
            ],
        },
    )  # fmt: skip
    # the adapter's own model agrees (index names and keys, the TTL attribute it writes)
    from shared.adapters.aws import dynamo_metadata
    from shared.adapters.aws.dynamo_metadata import item_model

    _, by_kind, by_a = item_model("t")
    assert [by_kind.Meta.index_name, *(i.Meta.index_name for i in by_a)] == list(INDEXES)
    assert TTL_ATTRIBUTE == dynamo_metadata.TTL_ATTRIBUTE
    t.has_resource_properties(
        "AWS::DynamoDB::Table", {"TimeToLiveSpecification": {"AttributeName": "expires", "Enabled": True}}
    )


def test_queues_are_encrypted_tls_only_with_a_dead_letter_queue(dev: Synthesized) -> None:
    t = _template(dev, "Control")
    t.resource_count_is("AWS::SQS::Queue", 2)
    t.has_resource_properties(
        "AWS::SQS::Queue",
        {"KmsMasterKeyId": Match.any_value(), "RedrivePolicy": Match.object_like({"maxReceiveCount": 5})},
    )
    t.has_resource_properties(
        "AWS::SQS::QueuePolicy",
        {"PolicyDocument": {"Statement": Match.array_with([Match.object_like({"Effect": "Deny"})])}},
    )


def _statements(s: Synthesized) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path, policy in s.resources("AWS::IAM::Policy").items():
        out += [(path, st) for st in policy["Properties"]["PolicyDocument"]["Statement"]]
    for path, role in s.resources("AWS::IAM::Role").items():
        for p in role["Properties"].get("Policies", []):
            out += [(path, st) for st in p["PolicyDocument"]["Statement"]]
    return out


def test_every_role_is_scoped(full: Synthesized) -> None:
    """No action wildcards; Resource "*" only for actions that have no resource-level permissions."""
    for path, st in _statements(full):
        if st["Effect"] != "Allow":
            continue
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        assert not [a for a in actions if a.endswith(":*") or a == "*"], (path, actions)
        if "*" in resources:
            assert set(actions) <= STAR_ACTIONS, (path, actions)


def test_each_function_has_its_own_role(full: Synthesized) -> None:
    roles = [
        f["Properties"]["Role"]["Fn::GetAtt"][0] for f in full.resources("AWS::Lambda::Function").values()
    ]
    assert len(roles) == len(set(roles)) >= 14


def test_creating_ec2_calls_require_the_run_tag(full: Synthesized) -> None:
    creating = {"ec2:RunInstances", "ec2:CreateNetworkInterface", "ec2:RegisterImage", "ebs:StartSnapshot"}
    deleting = {"ec2:TerminateInstances", "ec2:DeleteVolume", "ec2:DeleteSnapshot", "ec2:DeregisterImage"}
    for path, st in _statements(full):
        actions = set(st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
        if actions & deleting:
            assert "aws:ResourceTag/lifeboat:run" in str(st.get("Condition")), (path, st)
        if actions & creating and any(
            "network-interface/*" in str(r) or "instance/*" in str(r) for r in [st["Resource"]]
        ):
            assert st.get("Condition"), (path, st)


def test_functions_have_tracing_and_powertools_env(dev: Synthesized) -> None:
    for path, fn in dev.resources("AWS::Lambda::Function").items():
        props = fn["Properties"]
        assert props["TracingConfig"] == {"Mode": "Active"}, path
        env = props["Environment"]["Variables"]
        assert {"POWERTOOLS_SERVICE_NAME", "LOG_LEVEL"} <= set(env), path
        assert props["Runtime"] == "python3.13"


def test_scheduler_runs_every_minute(dev: Synthesized) -> None:
    _template(dev, "Control").has_resource_properties(
        "AWS::Events::Rule", {"ScheduleExpression": "rate(1 minute)"}
    )


def test_api_methods_need_cognito_except_health_options_and_node_routes(full: Synthesized) -> None:
    """Users' routes: Cognito; node routes: the node Lambda authorizer; /health and OPTIONS: none."""
    t = full.templates[next(n for n in full.templates if n.endswith("Control"))]
    resources = t["Resources"]

    def path_of(ref: Any) -> str:
        if "Fn::GetAtt" in ref:  # the root resource
            return ""
        r = resources[ref["Ref"]]["Properties"]
        return f"{path_of(r['ParentId'])}/{r['PathPart']}"

    unauthenticated = {(m, f"/{p}") for m, p in PUBLIC_ROUTES}
    node_routes = {(m, f"/{p}") for m, p in NODE_ROUTES}
    seen = set()
    for r in resources.values():
        if r["Type"] != "AWS::ApiGateway::Method":
            continue
        props = r["Properties"]
        route = (props["HttpMethod"], path_of(props["ResourceId"]))
        seen.add(route)
        if props["HttpMethod"] == "OPTIONS" or route in unauthenticated:
            assert props["AuthorizationType"] == "NONE", route
        elif route in node_routes:
            assert props["AuthorizationType"] == "CUSTOM", route
            authorizer = resources[props["AuthorizerId"]["Ref"]]["Properties"]
            assert authorizer["Type"] == "REQUEST" and authorizer["AuthorizerResultTtlInSeconds"] == 0, route
            assert authorizer["IdentitySource"] == "method.request.header.Authorization", route
        else:
            assert props["AuthorizationType"] == "COGNITO_USER_POOLS", route
            assert props["AuthorizerId"], route
        if props["HttpMethod"] != "OPTIONS":  # CORS preflight is a MOCK integration
            assert props.get("RequestValidatorId"), route
    assert unauthenticated <= seen and node_routes <= seen and ("ANY", "/{proxy+}") in seen
    # the login has its own (Cognito) method, so the stage can throttle it apart; /auth/* still proxies
    assert {("POST", "/auth/login"), ("ANY", "/auth"), ("ANY", "/auth/{proxy+}")} <= seen
    cognito = _template(full, "Control")
    cognito.has_resource_properties("AWS::Cognito::UserPool", {"MfaConfiguration": "ON"})
    for group in ("admin", "operator", "viewer"):
        cognito.has_resource_properties("AWS::Cognito::UserPoolGroup", {"GroupName": group})
    cognito.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {"AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}), "TracingEnabled": True,
         "MethodSettings": Match.array_with([Match.object_like({"ThrottlingRateLimit": 50})])},
    )  # fmt: skip
    cognito.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {"MethodSettings": Match.array_with([Match.object_like(
            {"ResourcePath": "/~1auth~1login", "HttpMethod": "POST", "ThrottlingRateLimit": 5,
             "ThrottlingBurstLimit": 10, "DataTraceEnabled": False})])},
    )  # fmt: skip
    cognito.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)


@pytest.mark.ops
def test_node_routes_are_the_apis_node_routes() -> None:
    """The gateway's node-authorizer routes are exactly the API's NODE_WORK / NODE_ENROLL routes."""
    from functions.api import app as api
    from shared.domain.identity import NODE_PERMISSIONS

    in_app = {(m, re.sub(r"<([^>]+)>", r"{\1}", rule).lstrip("/")) for (m, rule), p in api.ROUTES.items()
              if p in NODE_PERMISSIONS}  # fmt: skip
    assert in_app == set(NODE_ROUTES)


@pytest.mark.ops
def test_node_authorizer_reads_token_records_only(full: Synthesized) -> None:
    """Least privilege: the node authorizer may get items from the table (and decrypt them), nothing else."""
    fns = {path: fn for path, fn in full.resources("AWS::Lambda::Function").items()
           if fn["Properties"].get("Handler") == "functions.api.node_authorizer.handler"}  # fmt: skip
    assert len(fns) == 1
    role = next(iter(fns.values()))["Properties"]["Role"]["Fn::GetAtt"][0]
    actions: set[str] = set()
    for policy in full.resources("AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            for st in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions |= set(st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
    data = {
        a for a in actions if a.split(":")[0] in ("dynamodb", "kms", "sqs", "s3", "secretsmanager", "states")
    }
    assert data == {"dynamodb:GetItem", "kms:Decrypt", "kms:DescribeKey"}, actions


def test_waf_rate_limits_login_per_ip(full: Synthesized, dev: Synthesized) -> None:
    _template(full, "Control").has_resource_properties(
        "AWS::WAFv2::WebACL",
        {"Rules": Match.array_with([Match.object_like({
            "Name": "LoginRatePerIp", "Priority": 0, "Action": {"Block": {}},
            "Statement": {"RateBasedStatement": {
                "Limit": 100, "AggregateKeyType": "IP", "EvaluationWindowSec": 300,
                "ScopeDownStatement": {"ByteMatchStatement": Match.object_like(
                    {"FieldToMatch": {"UriPath": {}}, "PositionalConstraint": "ENDS_WITH",
                     "SearchString": "/auth/login"})}}},
        })])},
    )  # fmt: skip
    _template(dev, "Control").resource_count_is("AWS::WAFv2::WebACL", 0)  # dev: off (cost); prod: on


def test_state_machines_log_and_trace(dev: Synthesized) -> None:
    t = _template(dev, "Control")
    t.resource_count_is("AWS::StepFunctions::StateMachine", 2)
    t.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": Match.object_like({"Level": "ALL", "IncludeExecutionData": True}),
        },
    )


def test_launch_template_requires_imdsv2_and_encrypts_volumes(full: Synthesized) -> None:
    t = _template(full, "Nodes")
    t.has_resource_properties(
        "AWS::EC2::LaunchTemplate",
        {
            "LaunchTemplateData": Match.object_like(
                {
                    "MetadataOptions": Match.object_like(
                        {"HttpTokens": "required", "HttpPutResponseHopLimit": 1}
                    ),
                    "BlockDeviceMappings": [
                        Match.object_like({"Ebs": Match.object_like({"Encrypted": True})})
                    ],
                    "UserData": Match.any_value(),
                }
            )
        },
    )
    t.has_resource_properties("AWS::AutoScaling::ScalingPolicy", {"PolicyType": "StepScaling"})
    t.has_resource_properties(
        "AWS::CloudWatch::Alarm", {"MetricName": "ApproximateNumberOfMessagesVisible", "Namespace": "AWS/SQS"}
    )
    for gateway in ("s3", "dynamodb"):
        t.has_resource_properties(
            "AWS::EC2::VPCEndpoint",
            {"VpcEndpointType": "Gateway", "ServiceName": Match.object_like({"Fn::Join": Match.array_with([Match.array_with([f".{gateway}"])])})},
        )  # fmt: skip
    user_data = str(t.find_resources("AWS::EC2::LaunchTemplate"))
    assert "lifeboat node run" in user_data and "secretsmanager get-secret-value" in user_data


def test_alarms_notify_the_encrypted_topic(full: Synthesized) -> None:
    t = _template(full, "Nodes")
    for name in ("rpo-breach", "dead-letters", "scheduler-errors", "recoveries-failed"):
        t.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {"AlarmName": f"lifeboat-full-{name}", "AlarmActions": [Match.any_value()]},
        )
    t.has_resource_properties("AWS::CloudWatch::Dashboard", {"DashboardName": "lifeboat-full-overview"})
    _template(full, "Control").has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()}
    )


def test_console_hosting_uses_oac_and_security_headers(full: Synthesized) -> None:
    t = _template(full, "Console")
    t.resource_count_is("AWS::CloudFront::OriginAccessControl", 1)
    t.has_resource_properties(
        "AWS::CloudFront::ResponseHeadersPolicy",
        {"ResponseHeadersPolicyConfig": Match.object_like({"SecurityHeadersConfig": Match.object_like(
            {"StrictTransportSecurity": Match.object_like({"Override": True}),
             "FrameOptions": {"FrameOption": "DENY", "Override": True}})})},
    )  # fmt: skip


@pytest.mark.parametrize("stack_suffix", ["Storage", "Control", "Nodes"])
def test_template_from_stack(dev: Synthesized, stack_suffix: str) -> None:
    """Template.from_stack on the live stacks agrees with the written template."""
    (stack,) = [s for s in dev.built.stacks if s.stack_name.endswith(stack_suffix)]
    assert (
        Template.from_stack(stack).to_json()["Resources"].keys()
        == dev.templates[stack.stack_name]["Resources"].keys()
    )


@pytest.mark.ops
def test_scheduler_and_api_publish_notifications_to_the_alert_topic_only(full: Synthesized) -> None:
    """sns:Publish on exactly the alert topic, its KMS key for that, and (scheduler) webhook secrets."""
    control = [(p, st) for p, st in _statements(full) if "-Control/" in p]
    (topic_id,) = [t.split("/")[1] for t in full.resources("AWS::SNS::Topic") if "-Control/" in t]
    publish = [(p, st) for p, st in control if st["Action"] == "sns:Publish"]
    assert len(publish) == 2 and {("Scheduler" in p) for p, _ in publish} == {True, False}
    assert all(st["Resource"] == {"Ref": topic_id} for _, st in publish), publish
    keys = [st for _, st in control if st["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]]
    assert len(keys) == 2 and all("AlertsKey" in json.dumps(st["Resource"]) for st in keys), keys
    secrets = [(p, st) for p, st in control if st["Action"] == "secretsmanager:GetSecretValue"]
    assert [("Scheduler" in p) for p, _ in secrets] == [True], secrets
    scheduler_reads = json.dumps(secrets[0][1]["Resource"])
    assert "notifications/*" in scheduler_reads and "vcenter" not in scheduler_reads  # no vCenter password
