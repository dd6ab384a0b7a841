"""Secrets a node resolves itself (a repository passphrase), from a reference — never the
secret in a plan or job:

* ``env:NAME`` — an environment variable of the node process;
* ``file:/path`` — the first line of a file (mode 0600 is the operator's business);
* ``aws-secretsmanager:<arn or name>`` — AWS Secrets Manager, with the node's own role.

vCenter passwords are not among them: the control plane keeps those in its vault and hands
them to a node configured for the site (the agent asks it).
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.errors import InvalidInputError, PermissionDeniedError, SourceError


def resolve_node_secret(ref: str) -> str:
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise InvalidInputError(f"credentials reference {ref}: variable {rest} is not set on this node")
        return value
    if scheme == "file":
        try:
            return Path(rest).read_text().strip()
        except OSError as exc:
            raise InvalidInputError(f"credentials reference {ref}: {exc.strerror}") from exc
    if scheme == "aws-secretsmanager":
        return _secrets_manager(rest)
    raise InvalidInputError(
        f"credentials reference {ref!r} is not supported on this node (use env:, file: or aws-secretsmanager:)"
    )


def _secrets_manager(secret_id: str) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("AccessDeniedException", "UnrecognizedClientException"):
            raise PermissionDeniedError(f"secret {secret_id}: access denied to this node ({code})") from exc
        raise SourceError(f"secret {secret_id}: {code or exc}") from exc
    except BotoCoreError as exc:
        raise SourceError(f"secret {secret_id}: {exc}") from exc
    value = answer.get("SecretString")
    if value is None:
        raise InvalidInputError(f"secret {secret_id} holds binary data, not a password")
    return str(value)


def resolve_secret(ref: str | None) -> str | None:
    """A repository passphrase from a credentials reference (see :func:`resolve_node_secret`);
    ``None`` falls back to LIFEBOAT_PASSWORD (and to no encryption when that is unset)."""
    return os.environ.get("LIFEBOAT_PASSWORD") if ref is None else resolve_node_secret(ref)
