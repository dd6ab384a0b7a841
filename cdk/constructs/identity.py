"""Users of the console and the CLI: a Cognito user pool whose groups are Lifeboat's roles.

``cognito:groups`` in the API Gateway authorizer's claims become the caller's roles
(``shared/services/auth.principal_from_claims``). No self sign-up; TOTP MFA required; a strong
password policy; threat protection (Plus feature plan) blocks compromised credentials.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from cdk.config import EnvConfig

ROLES = ("admin", "operator", "viewer")  # shared/domain/identity.Role values


class UserDirectory(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvConfig) -> None:
        super().__init__(scope, id)
        self.pool = cognito.UserPool(
            self,
            "Users",
            user_pool_name=f"{config.prefix}-users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            password_policy=cognito.PasswordPolicy(
                min_length=14,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
                temp_password_validity=cdk.Duration.days(3),
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            deletion_protection=config.retain_data,
            removal_policy=cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY,
        )
        for role in ROLES:
            cognito.CfnUserPoolGroup(
                self,
                f"Group{role.capitalize()}",
                user_pool_id=self.pool.user_pool_id,
                group_name=role,
                description=f"Lifeboat role {role}",
            )
        self.client = self.pool.add_client(
            "Console",
            user_pool_client_name=f"{config.prefix}-console",
            auth_flows=cognito.AuthFlow(user_srp=True),
            generate_secret=False,
            prevent_user_existence_errors=True,
            id_token_validity=cdk.Duration.minutes(60),
            access_token_validity=cdk.Duration.minutes(60),
            refresh_token_validity=cdk.Duration.days(1),
        )
