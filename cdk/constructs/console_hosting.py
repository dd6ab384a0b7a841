"""Optional console hosting: a private S3 bucket behind CloudFront with Origin Access Control.

The console is static files talking only to the REST API. The bucket is reachable only through
the distribution (OAC, SigV4), HTTPS only (redirect), with security headers (HSTS, CSP,
X-Content-Type-Options, X-Frame-Options DENY, Referrer-Policy). Upload with
``aws s3 sync console/ s3://<bucket>/`` (docs/deploy-aws.md).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.config import EnvConfig
from cdk.nag import acknowledge


class ConsoleHosting(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig, api_url: str) -> None:
        super().__init__(scope, id)
        logs_bucket = s3.Bucket(
            self,
            "Logs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,  # CloudFront standard logs use ACLs
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(90))],
            removal_policy=cdk.RemovalPolicy.DESTROY,
            auto_delete_objects=False,
        )
        acknowledge(
            logs_bucket,
            "AwsSolutions-S1",
            "This is the access-log bucket itself; it does not log into itself.",
        )
        self.bucket = s3.Bucket(
            self,
            "Site",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            server_access_logs_bucket=logs_bucket,
            server_access_logs_prefix="site/",
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        api_origin = cdk.Fn.select(2, cdk.Fn.split("/", api_url))
        headers = cloudfront.ResponseHeadersPolicy(
            self,
            "SecurityHeaders",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=cdk.Duration.days(365),
                    include_subdomains=True,
                    preload=True,
                    override=True,
                ),
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=cdk.Fn.join(
                        "",
                        [
                            "default-src 'self'; connect-src 'self' https://",
                            api_origin,
                            "; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
                        ],
                    ),
                    override=True,
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True
                ),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.STRICT_ORIGIN_WHEN_CROSS_ORIGIN,
                    override=True,
                ),
            ),
        )
        self.distribution = cloudfront.Distribution(
            self,
            "Distribution",
            comment=f"Lifeboat console ({config.name})",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                response_headers_policy=headers,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
            ),
            enable_logging=True,
            log_bucket=logs_bucket,
            log_file_prefix="cloudfront/",
            minimum_protocol_version=cloudfront.SecurityPolicyProtocol.TLS_V1_2_2021,
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
        )
        acknowledge(
            self.distribution,
            "AwsSolutions-CFR1",
            "A DR console must be reachable from wherever the operators are during a disaster; access is "
            "controlled by Cognito sign-in, not geography.",
        )
        acknowledge(
            self.distribution,
            "AwsSolutions-CFR2",
            "The distribution serves static files only; every data call goes to the API, which has its own "
            "authorizer, throttling and optional WAF.",
        )
        acknowledge(
            self.distribution,
            "AwsSolutions-CFR4",
            "Without a custom domain CloudFront serves its default *.cloudfront.net certificate, whose "
            "minimum protocol cannot be raised; set a domain and certificate to enforce TLSv1.2_2021.",
        )
