"""The control plane: REST API (API Gateway + the API Lambda), the scheduler, their roles.

API Gateway (REST, regional) proxies to ``functions/api/handler.handler``, which resolves every
route with powertools. Authentication at the gateway:

* every method has the Cognito user-pool authorizer (the claims' ``cognito:groups`` are the
  caller's roles) and a request validator requiring the ``Authorization`` header;
* except ``GET /health`` (public by design), the CORS preflight ``OPTIONS`` methods, and the
  node-agent routes (:data:`NODE_ROUTES`, the API's routes of permission ``NODE_WORK`` or
  ``NODE_ENROLL``): a node is not a Cognito user, so they have the node authorizer, a Lambda
  REQUEST authorizer (``functions/api/node_authorizer.py``) that verifies the node's
  credential or enrollment token (``lbt_...``, only a SHA-256 stored) against the metadata
  table and allows only its own node's routes; the API Lambda takes the caller from the
  authorizer's context. Its results are not cached (TTL 0): a revocation is effective at once.

Access logs (JSON) go to their own log group; stage throttling, X-Ray tracing and execution
metrics are on. ``POST /auth/login`` has its own resource (Cognito-authorized like every other
route: in AWS users sign in through Cognito, so the gateway refuses a caller without an ID
token before the local-password login is reached) with a tighter method throttle, and the
optional WAF adds a per-IP rate rule on that path (docs/login-throttling.md). The scheduler runs every minute from an EventBridge rule. Each function's role
holds exactly the table, queue and state-machine calls its adapters make.

Notifications (:meth:`ControlPlane.allow_notifications`): the scheduler delivers them on each
tick and the API sends test ones, so both may publish to the stack's alert topic (and to the
topics of ``notification_topic_arns``), use the alert topic's KMS key for that, and read
webhook signing secrets (kept in Secrets Manager under the same prefix as vCenter passwords).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk.config import EnvConfig
from cdk.constructs.api_firewall import attach_web_acl
from cdk.constructs.function import FunctionAssets, FunctionSpec, LifeboatFunction, retention
from cdk.constructs.identity import UserDirectory
from cdk.constructs.job_queue import JobQueue
from cdk.constructs.metadata_table import MetadataTable
from cdk.nag import acknowledge, allow_wildcards

#: routes a node agent calls with its credential or enrollment token (functions/api/app.py,
#: permissions NODE_WORK and NODE_ENROLL; tests/cdk checks the two lists agree)
NODE_ROUTES = (
    ("POST", "nodes/register"),
    ("POST", "nodes/{node_id}/heartbeat"),
    ("POST", "nodes/{node_id}/claim"),
    ("POST", "nodes/{node_id}/credentials/rotate"),
    ("GET", "nodes/{node_id}/sources"),
    ("POST", "nodes/{node_id}/sources/{site_id}/credentials"),
    ("POST", "nodes/{node_id}/inventory"),
    ("POST", "jobs/{job_id}/progress"),
    ("POST", "jobs/{job_id}/complete"),
)
PUBLIC_ROUTES = (("GET", "health"),)
#: the stage's method-setting key of the local-password login (its own, tighter throttle)
LOGIN_METHOD = "/auth/login/POST"
LOGIN_PATH = "/auth/login"


class ControlPlane(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvConfig,
        assets: FunctionAssets,
        table: MetadataTable,
        queue: JobQueue,
        users: UserDirectory,
        state_machines: dict[str, sfn.StateMachine],
    ) -> None:
        super().__init__(scope, id)
        env = {
            "LIFEBOAT_TABLE": table.table_name,
            "LIFEBOAT_QUEUE_URL": queue.queue.queue_url,
            "LIFEBOAT_DLQ_URL": queue.dead_letters.queue_url,
            "LIFEBOAT_JOB_LEASE_SECONDS": str(config.job_lease_seconds),
            "LIFEBOAT_RECOVERY_STATE_MACHINE": state_machines["Recovery"].state_machine_arn,
            "LIFEBOAT_TEST_CLEANUP_STATE_MACHINE": state_machines["TestCleanup"].state_machine_arn,
            "LIFEBOAT_SECRET_PREFIX": f"{config.prefix}/vcenter/",
            "LIFEBOAT_CHANNEL_SECRET_PREFIX": f"{config.prefix}/notifications/",
        }
        self.api_function = LifeboatFunction(
            self,
            "ApiFunction",
            config=config,
            assets=assets,
            spec=FunctionSpec(
                handler="functions.api.handler.handler",
                service="lifeboat-api",
                description="Lifeboat REST API (powertools resolver)",
                memory_mib=1024,  # more memory = more CPU: argon2/JWT and pydantic on the hot path
                timeout_seconds=29,  # API Gateway's integration limit
            ),
            environment=env,
        )
        self.scheduler_function = LifeboatFunction(
            self,
            "Scheduler",
            config=config,
            assets=assets,
            spec=FunctionSpec(
                handler="functions.scheduler.handler.handler",
                service="scheduler",
                description="Lifeboat scheduler tick (due jobs, RPO status, lost jobs)",
                memory_mib=512,
                timeout_seconds=55,  # finishes before the next tick
            ),
            environment=env,
        )
        for fn in (self.api_function, self.scheduler_function):
            fn.add(*table.read_write_statements(), *queue.statements())
        # The API starts recoveries and test cleanups in Step Functions (and may stop them).
        self.api_function.add(
            iam.PolicyStatement(
                actions=["states:StartExecution"],
                resources=[m.state_machine_arn for m in state_machines.values()],
            )
        )
        # vCenter passwords users hand the API are kept in Secrets Manager, under one prefix.
        allow_wildcards(
            self.api_function.role,
            iam.PolicyStatement(
                actions=[
                    "secretsmanager:CreateSecret",
                    "secretsmanager:GetSecretValue",
                    "secretsmanager:DeleteSecret",
                    "secretsmanager:TagResource",
                ],
                resources=[self._secrets(config, "vcenter"), self._secrets(config, "notifications")],
            ),
            "Secret names are generated per vCenter connection and per notification channel; only "
            "secrets under Lifeboat's own vcenter/ and notifications/ prefixes (Secrets Manager appends "
            "a random suffix to every ARN).",
        )
        self._execution_events(config, assets, env, table, state_machines)
        events.Rule(
            self,
            "EveryMinute",
            description="Lifeboat scheduler tick",
            schedule=events.Schedule.rate(cdk.Duration.minutes(1)),
            targets=[targets.LambdaFunction(self.scheduler_function.function, retry_attempts=0)],
        )
        self.authorizer_function = LifeboatFunction(
            self,
            "NodeAuthorizer",
            config=config,
            assets=assets,
            spec=FunctionSpec(
                handler="functions.api.node_authorizer.handler",
                service="lifeboat-node-authorizer",
                description="Lifeboat node authorizer: verifies node credentials and enrollment tokens",
                memory_mib=256,
                timeout_seconds=10,
            ),
            environment={"LIFEBOAT_TABLE": table.table_name},
        )
        self.authorizer_function.add(*table.read_item_statements())  # reads token records, nothing else
        self.api = self._rest_api(config, users)

    def allow_notifications(self, config: EnvConfig, topic: sns.ITopic, key: kms.IKey) -> None:
        """Let the scheduler (deliveries) and the API (test sends) publish notifications."""
        topics = [topic.topic_arn, *config.notification_topic_arns]
        for fn in (self.api_function, self.scheduler_function):
            fn.add(
                iam.PolicyStatement(actions=["sns:Publish"], resources=topics),
                # SNS encrypts what it stores with the topic's key, as the publisher
                iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn]),
            )
            fn.function.add_environment("LIFEBOAT_ALERT_TOPIC_ARN", topic.topic_arn)
        # webhook signing secrets: the API creates them (its vault statement covers that), the scheduler
        # signs with them; they have their own prefix, so the scheduler reads no vCenter password
        allow_wildcards(
            self.scheduler_function.role,
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"], resources=[self._secrets(config, "notifications")]
            ),
            "Webhook signing secrets are generated per notification channel under Lifeboat's own "
            "notifications/ prefix (Secrets Manager appends a random suffix to every ARN).",
        )

    def _secrets(self, config: EnvConfig, folder: str) -> str:
        """The ARNs of the Secrets Manager secrets under ``<prefix>/<folder>/``."""
        return cdk.Stack.of(self).format_arn(
            service="secretsmanager", resource="secret", resource_name=f"{config.prefix}/{folder}/*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )  # fmt: skip

    def _execution_events(
        self, config: EnvConfig, assets: FunctionAssets, env: dict[str, str], table: MetadataTable,
        state_machines: dict[str, sfn.StateMachine],
    ) -> None:  # fmt: skip
        """The end of every recovery / test-cleanup execution ends its job and stores its report
        (functions/recovery/execution_events.py), from an EventBridge rule on the two machines."""
        self.events_function = LifeboatFunction(
            self,
            "RecoveryEvents",
            config=config,
            assets=assets,
            spec=FunctionSpec(
                handler="functions.recovery.execution_events.handler",
                service="lifeboat-recovery-events",
                description="Ends recovery and test-cleanup jobs when their execution ends",
                memory_mib=512,
                timeout_seconds=60,
            ),
            environment=env,
        )
        self.events_function.add(*table.read_write_statements())
        stack = cdk.Stack.of(self)
        executions = [
            stack.format_arn(service="states", resource="execution", resource_name=f"{config.prefix}-{name.lower()}:*",
                             arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)
            for name in state_machines
        ]  # fmt: skip
        allow_wildcards(
            self.events_function.role,
            iam.PolicyStatement(actions=["states:DescribeExecution"], resources=executions),
            "Execution ids are the job ids, not known in advance; only executions of Lifeboat's two state "
            "machines (to read an output too large for the event).",
        )
        events.Rule(
            self,
            "ExecutionEnded",
            description="Lifeboat recovery / test-cleanup execution ended",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={
                    "stateMachineArn": [m.state_machine_arn for m in state_machines.values()],
                    "status": ["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"],
                },
            ),
            targets=[targets.LambdaFunction(self.events_function.function, retry_attempts=8)],
        )

    def _rest_api(self, config: EnvConfig, users: UserDirectory) -> apigw.RestApi:
        access_logs = logs.LogGroup(
            self,
            "ApiAccessLogs",
            retention=retention(config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        api = apigw.RestApi(
            self,
            "RestApi",
            rest_api_name=f"{config.prefix}-api",
            description="Lifeboat control-plane REST API",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.DESTROY,
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies may carry secrets
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=config.api_throttle_rate,
                throttling_burst_limit=config.api_throttle_burst,
                method_options={
                    LOGIN_METHOD: apigw.MethodDeploymentOptions(
                        throttling_rate_limit=config.login_throttle_rate,
                        throttling_burst_limit=config.login_throttle_burst,
                        metrics_enabled=True,
                        logging_level=apigw.MethodLoggingLevel.ERROR,
                        data_trace_enabled=False,  # the body is a password
                    )
                },
            ),
            default_cors_preflight_options=apigw.CorsOptions(
                allow_origins=list(config.cors_origins) or ["https://localhost"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                allow_methods=["GET", "POST", "PUT", "DELETE"],
            )
            if config.cors_origins or config.console_hosting
            else None,
        )
        acknowledge(
            api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-level CloudWatch role must use this AWS-managed policy "
            "(it only writes API Gateway's own log groups).",
        )
        authorizer = apigw.CognitoUserPoolsAuthorizer(
            self, "Cognito", cognito_user_pools=[users.pool], authorizer_name=f"{config.prefix}-cognito"
        )
        validator = apigw.RequestValidator(
            self, "Validator", rest_api=api, validate_request_parameters=True, validate_request_body=True
        )
        integration = apigw.LambdaIntegration(self.api_function.function, proxy=True)
        header = {"method.request.header.Authorization": True}

        def authorized(resource: apigw.IResource, method: str) -> apigw.Method:
            return resource.add_method(
                method, integration, authorizer=authorizer, authorization_type=apigw.AuthorizationType.COGNITO,
                request_validator=validator, request_parameters=header,
            )  # fmt: skip

        node_authorizer = apigw.RequestAuthorizer(
            self, "NodeAuthorizerRef", handler=self.authorizer_function.function,
            identity_sources=[apigw.IdentitySource.header("Authorization")],
            results_cache_ttl=cdk.Duration.seconds(0),  # no cache: a revoked credential fails on its next call
            authorizer_name=f"{config.prefix}-nodes",
        )  # fmt: skip

        for method, path in PUBLIC_ROUTES:
            m = self._resource(api, path).add_method(
                method,
                integration,
                authorization_type=apigw.AuthorizationType.NONE,
                request_validator=validator,
            )
            reason = "GET /health is the public liveness probe; it returns no data."
            acknowledge(m, "AwsSolutions-APIG4", reason)
            acknowledge(m, "AwsSolutions-COG4", reason)
        for method, path in NODE_ROUTES:
            m = self._resource(api, path).add_method(
                method, integration, authorizer=node_authorizer, authorization_type=apigw.AuthorizationType.CUSTOM,
                request_validator=validator, request_parameters=header,
            )  # fmt: skip
            acknowledge(
                m, "AwsSolutions-COG4",
                "Node-agent route: nodes are not Cognito users; the node Lambda authorizer verifies their "
                "credential or enrollment token (lbt_..., SHA-256 stored) and allows only their own node's routes.",
            )  # fmt: skip
        # Every other path and method: Cognito. Intermediate resources get ANY so that API Gateway
        # never answers for a path the proxy below would otherwise have served.
        intermediate = {
            "/".join(p.split("/")[:i]) for _, p in NODE_ROUTES for i in range(1, p.count("/") + 1)
        }
        for path in (*sorted(intermediate), "auth", "auth/{proxy+}"):
            authorized(self._resource(api, path), "ANY")
        # its own resource so the stage can throttle it apart (LOGIN_METHOD)
        authorized(self._resource(api, "auth/login"), "POST")
        authorized(api.root, "ANY")
        authorized(api.root.add_proxy(any_method=False), "ANY")
        if config.waf:
            attach_web_acl(self, api, config, login_path=LOGIN_PATH)
        else:
            acknowledge(
                api,
                "AwsSolutions-APIG3",
                "WAF is optional (cdk.json `waf: true`): every data route needs a Cognito token or a node API "
                "token, the stage is throttled and bodies are size-limited by the application.",
            )
        return api

    @staticmethod
    def _resource(api: apigw.RestApi, path: str) -> apigw.IResource:
        resource: apigw.IResource = api.root
        for part in path.split("/"):
            resource = resource.get_resource(part) or resource.add_resource(part)
        return resource
