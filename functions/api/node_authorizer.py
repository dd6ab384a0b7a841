"""API Gateway Lambda authorizer (REQUEST type) of the node-agent routes.

It reads ``Authorization: Bearer lbt_...``, verifies the token against its stored hash in the
metadata table (:func:`shared.services.auth.principal_from_api_token`: unknown, wrong,
revoked or expired tokens are refused) and answers:

* no or invalid token: ``Unauthorized`` (API Gateway answers 401);
* a node credential: Allow on the node routes of *its own* node id (and ``/jobs/*/progress``,
  ``/jobs/*/complete``, ``/nodes/register``), with the context ``{subject, tokenId, nodeId,
  roles}`` the API Lambda takes as the caller (``functions/api/core._authenticate``);
* an enrollment token: Allow on ``POST /nodes/register`` only;
* any other token (a user's scoped token): Deny (403).

The policy covers every route the token may call, so it stays right if API Gateway caches it;
the stack sets the cache TTL to 0 so that a revocation takes effect on the very next call.
The token is never logged.
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from shared.domain.identity import Role
from shared.errors import AuthenticationError
from shared.ports.metadata_store import MetadataStore
from shared.services import auth

logger = Logger(service="lifeboat-node-authorizer")


class Unauthorized(Exception):
    """Raised with exactly this message, API Gateway answers 401."""


@functools.cache
def _store() -> MetadataStore:
    from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore

    return DynamoMetadataStore(os.environ["LIFEBOAT_TABLE"])


def _bearer(event: dict[str, Any]) -> str:
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    scheme, _, value = headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value.startswith(auth.TOKEN_PREFIX):
        raise Unauthorized("Unauthorized")
    return value


def _policy(principal_id: str, effect: str, resources: list[str], context: dict[str, str]) -> dict[str, Any]:
    return {
        "principalId": principal_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resources}],
        },
        "context": context,
    }


def resources_for(method_arn: str, principal: auth.Principal) -> list[str]:
    """The method ARNs ``principal`` may invoke (``arn:...:<api>/<stage>/<METHOD>/<path>``)."""
    base = "/".join(method_arn.split("/", 2)[:2])  # arn:aws:execute-api:<region>:<account>:<api>/<stage>
    register = f"{base}/POST/nodes/register"
    if principal.node_id and Role.NODE in principal.roles:
        return [register, f"{base}/*/nodes/{principal.node_id}/*",
                f"{base}/POST/jobs/*/progress", f"{base}/POST/jobs/*/complete"]  # fmt: skip
    if Role.ENROLLMENT in principal.roles:
        return [register]
    return []


def handle(
    event: dict[str, Any], *, store: MetadataStore | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Verify the token of one API Gateway REQUEST-authorizer event (see the module doc)."""
    secret = _bearer(event)
    try:
        principal = auth.principal_from_api_token(store or _store(), secret, now=now or datetime.now(UTC))
    except AuthenticationError as exc:
        logger.info("node token refused", extra={"reason": exc.message, "path": event.get("path", "")})
        raise Unauthorized("Unauthorized") from exc
    method_arn = str(event.get("methodArn", ""))
    resources = resources_for(method_arn, principal)
    if not resources:
        logger.info("token without a node role on a node route", extra={"token_id": principal.token_id})
        return _policy(principal.subject, "Deny", [method_arn], {})
    return _policy(principal.subject, "Allow", resources, auth.authorizer_context(principal))


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event)
