"""SecretVault on AWS Secrets Manager: one secret per value, under a name prefix the
control plane's role is limited to; references are ``aws-secretsmanager:<ARN>``."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.domain.base import new_id
from shared.errors import (
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StoreError,
    TransientStoreError,
)

PREFIX = "aws-secretsmanager:"
_TRANSIENT = {"ThrottlingException", "InternalServiceError", "ServiceUnavailable", "RequestTimeout"}
_DENIED = {"AccessDeniedException", "UnrecognizedClientException", "KMSAccessDeniedException"}


class SecretsManagerVault:
    def __init__(self, name_prefix: str, *, kms_key_id: str | None = None, client: Any = None,
                 region: str | None = None) -> None:  # fmt: skip
        if client is None:
            import boto3

            client = boto3.client("secretsmanager", region_name=region)
        self.client = client
        self.name_prefix = name_prefix
        self.kms_key_id = kms_key_id

    def put(self, name: str, value: str) -> str:
        args: dict[str, Any] = {"Name": f"{self.name_prefix}{new_id('secret')}", "SecretString": value,
                                "Description": name[:2048], "Tags": [{"Key": "lifeboat", "Value": "vault"}]}  # fmt: skip
        if self.kms_key_id:
            args["KmsKeyId"] = self.kms_key_id
        answer = self._call("create", lambda: self.client.create_secret(**args))
        return PREFIX + str(answer["ARN"])

    def get(self, ref: str) -> str:
        arn = self._arn(ref)
        answer = self._call(arn, lambda: self.client.get_secret_value(SecretId=arn))
        value = answer.get("SecretString")
        if value is None:
            raise InvalidInputError(f"secret {arn} holds binary data")
        return str(value)

    def delete(self, ref: str) -> None:
        arn = self._arn(ref)
        try:
            self._call(arn, lambda: self.client.delete_secret(SecretId=arn, RecoveryWindowInDays=7))
        except NotFoundError:
            pass

    def _arn(self, ref: str) -> str:
        if not ref.startswith(PREFIX):
            raise InvalidInputError(f"{ref!r} is not a reference of this vault")
        return ref[len(PREFIX) :]

    @staticmethod
    def _call(what: str, fn: Any) -> Any:
        try:
            return fn()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if code == "ResourceNotFoundException" or (code == "InvalidRequestException" and "deleted" in message):
                raise NotFoundError(f"secret {what} not found (or scheduled for deletion)") from exc
            if code in _DENIED:
                raise PermissionDeniedError(f"secret {what}: access denied ({code})") from exc
            cls = TransientStoreError if code in _TRANSIENT else StoreError
            raise cls(f"secret {what}: {code or exc}", code=code) from exc
        except BotoCoreError as exc:
            raise TransientStoreError(f"secret {what}: {exc}") from exc
