"""The API's web ACL (WAF, optional: cdk.json ``waf``): a per-IP rate rule on the login and AWS's
managed rule groups, associated with the API's stage."""

from __future__ import annotations

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from cdk.config import EnvConfig


def attach_web_acl(scope: Construct, api: apigw.RestApi, config: EnvConfig, *, login_path: str) -> None:
    """The web ACL (``WebAcl``) and its association, created in ``scope``."""

    def managed(name: str, priority: int) -> wafv2.CfnWebACL.RuleProperty:
        return wafv2.CfnWebACL.RuleProperty(
            name=name,
            priority=priority,
            override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
            statement=wafv2.CfnWebACL.StatementProperty(
                managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                    vendor_name="AWS", name=name
                )
            ),
            visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
            ),
        )

    acl = wafv2.CfnWebACL(
        scope,
        "WebAcl",
        name=f"{config.prefix}-api",
        scope="REGIONAL",
        default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
        visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
            cloud_watch_metrics_enabled=True,
            metric_name=f"{config.prefix}-api",
            sampled_requests_enabled=True,
        ),
        rules=[
            _login_rate_rule(config, 0, login_path),
            managed("AWSManagedRulesCommonRuleSet", 1),
            managed("AWSManagedRulesKnownBadInputsRuleSet", 2),
        ],
    )
    wafv2.CfnWebACLAssociation(
        scope, "WebAclAssociation", resource_arn=api.deployment_stage.stage_arn, web_acl_arn=acl.attr_arn
    )


def _login_rate_rule(config: EnvConfig, priority: int, login_path: str) -> wafv2.CfnWebACL.RuleProperty:
    """Block an IP that sends more than ``waf_login_rate_limit`` requests to /auth/login in 5 minutes
    (the URI path ends with it: ``/v1/auth/login`` on the execute-api host, ``/auth/login`` on a
    custom domain)."""
    name = "LoginRatePerIp"
    return wafv2.CfnWebACL.RuleProperty(
        name=name,
        priority=priority,
        action=wafv2.CfnWebACL.RuleActionProperty(block={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                limit=config.waf_login_rate_limit,
                aggregate_key_type="IP",
                evaluation_window_sec=300,
                scope_down_statement=wafv2.CfnWebACL.StatementProperty(
                    byte_match_statement=wafv2.CfnWebACL.ByteMatchStatementProperty(
                        field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(uri_path={}),
                        positional_constraint="ENDS_WITH",
                        search_string=login_path,
                        text_transformations=[
                            wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="LOWERCASE")
                        ],
                    )
                ),
            )
        ),
        visibility_config=wafv2.CfnWebACL.VisibilityConfigProperty(
            cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
        ),
    )
