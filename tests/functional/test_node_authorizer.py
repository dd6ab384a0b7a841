"""The API Gateway node authorizer against the DynamoDB metadata adapter (moto in-process).

API Gateway REQUEST-authorizer events in, IAM policies out; then the API resolves a node
route with the authorizer's context as API Gateway would pass it, and refuses such a context
where it must not be trusted (outside Lambda, or on a user route).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from functions.api import app as api
from functions.api import node_authorizer
from functions.embedded.http_server import _LambdaContext
from shared.adapters.local.sqlite_queue import SqliteJobQueue
from shared.domain.identity import Role
from shared.domain.inventory import Node, Site, SiteKind
from shared.ports.metadata_store import MetadataStore
from shared.services import auth, node_credentials
from shared.services.context import Control

pytestmark = pytest.mark.ops
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ARN = "arn:aws:execute-api:eu-west-1:123456789012:abc123/v1"


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[MetadataStore]:
    from moto import mock_aws

    from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield DynamoMetadataStore.create_table("lifeboat-authorizer")


@pytest.fixture
def ctl(store: MetadataStore, tmp_path: Path) -> Iterator[Control]:
    control = Control(
        store=store, queue=SqliteJobQueue(tmp_path / "queue.db"), jwt_secret="s" * 40, now=lambda: NOW
    )
    store.create(Site(id="dr", name="DR", site_kind=SiteKind.LOCAL, repository_url="/never"))
    yield control
    api.configure(control)  # whoever configures next: never leave the trust flag on


def event(method: str, path: str, token: str | None) -> dict[str, Any]:
    """A REQUEST-authorizer event as API Gateway sends it."""
    return {"type": "REQUEST", "methodArn": f"{ARN}/{method}{path}", "httpMethod": method, "path": path,
            "headers": {"Authorization": f"Bearer {token}"} if token else {}}  # fmt: skip


def enroll(ctl: Control) -> tuple[Node, str, str]:
    """An enrollment token, and a node registered with it: ``(node, credential, enrollment)``."""
    _, enrollment = auth.create_api_token(ctl.store, name="asg", owner="admin", roles=[Role.ENROLLMENT],
                                          expires_at=NOW + timedelta(days=1))  # fmt: skip
    principal = auth.principal_from_api_token(ctl.store, enrollment, now=NOW)
    node, _, secret = node_credentials.register(ctl, principal, {"name": "n1", "site_id": "dr"})
    assert secret
    return node, secret, enrollment


def test_a_node_credential_is_allowed_its_own_node_routes_with_context(ctl: Control) -> None:
    node, secret, _ = enroll(ctl)
    answer = node_authorizer.handle(
        event("POST", f"/nodes/{node.id}/claim", secret), store=ctl.store, now=NOW
    )
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == "execute-api:Invoke"
    assert set(statement["Resource"]) == {f"{ARN}/POST/nodes/register", f"{ARN}/*/nodes/{node.id}/*",
                                          f"{ARN}/POST/jobs/*/progress", f"{ARN}/POST/jobs/*/complete"}  # fmt: skip
    ctx = answer["context"]
    assert ctx["nodeId"] == node.id and ctx["roles"] == "node" and ctx["tokenId"] in secret
    assert all(isinstance(v, str) for v in ctx.values()) and secret not in json.dumps(answer)


def test_an_enrollment_token_is_allowed_register_only(ctl: Control) -> None:
    _, _, enrollment = enroll(ctl)
    answer = node_authorizer.handle(event("POST", "/nodes/register", enrollment), store=ctl.store, now=NOW)
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Resource"] == [f"{ARN}/POST/nodes/register"]
    assert answer["context"]["nodeId"] == "" and answer["context"]["roles"] == "enrollment"


def test_missing_wrong_revoked_and_expired_tokens_are_unauthorized(ctl: Control) -> None:
    node, secret, enrollment = enroll(ctl)
    path = f"/nodes/{node.id}/heartbeat"
    for token in (None, "not-a-token", "lbt_tok-000000000000_x", secret + "x"):
        with pytest.raises(node_authorizer.Unauthorized, match=r"^Unauthorized$"):
            node_authorizer.handle(event("POST", path, token), store=ctl.store, now=NOW)
    with pytest.raises(node_authorizer.Unauthorized):  # the enrollment token expired a day later
        node_authorizer.handle(event("POST", "/nodes/register", enrollment), store=ctl.store,
                               now=NOW + timedelta(days=2))  # fmt: skip
    node_credentials.revoke(ctl, node.id)
    with pytest.raises(node_authorizer.Unauthorized):  # no cache: the very next call is refused
        node_authorizer.handle(event("POST", path, secret), store=ctl.store, now=NOW)


def test_a_users_api_token_is_denied(ctl: Control) -> None:
    _, admin_token = auth.create_api_token(ctl.store, name="ci", owner="admin", roles=[Role.ADMIN])
    answer = node_authorizer.handle(event("POST", "/nodes/register", admin_token), store=ctl.store, now=NOW)
    (statement,) = answer["policyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and answer["context"] == {}


def _api_event(method: str, path: str, authorizer: dict[str, Any], body: Any = None) -> dict[str, Any]:
    return {"resource": path, "path": path, "httpMethod": method, "headers": {"Content-Type": "application/json"},
            "multiValueHeaders": {}, "queryStringParameters": None, "multiValueQueryStringParameters": None,
            "pathParameters": None, "stageVariables": None, "isBase64Encoded": False,
            "body": json.dumps(body) if body is not None else None,
            "requestContext": {"resourcePath": path, "httpMethod": method, "path": f"/v1{path}", "stage": "v1",
                               "requestId": "r1", "identity": {"sourceIp": "10.0.0.1"}, "accountId": "1",
                               "apiId": "abc123", "authorizer": authorizer}}  # fmt: skip


def test_the_api_trusts_the_authorizer_context_only_in_lambda_and_only_on_node_routes(ctl: Control) -> None:
    node, secret, _ = enroll(ctl)
    verdict = node_authorizer.handle(
        event("POST", f"/nodes/{node.id}/heartbeat", secret), store=ctl.store, now=NOW
    )
    context = {**verdict["context"], "principalId": verdict["principalId"]}
    beat = _api_event("POST", f"/nodes/{node.id}/heartbeat", context, {"running_jobs": 2})
    api.configure(ctl)  # the embedded server and other hosts: a context is never trusted
    assert api.resolve(beat, _LambdaContext())["statusCode"] == 401
    api.configure(ctl, trust_authorizer=True)  # the Lambda behind API Gateway
    answer = api.resolve(beat, _LambdaContext())
    assert answer["statusCode"] == 200 and json.loads(answer["body"])["running_jobs"] == 2
    # another node's id in the path: 403, whatever the gateway let through
    other = _api_event("POST", "/nodes/node-other/heartbeat", context, {"running_jobs": 1})
    assert api.resolve(other, _LambdaContext())["statusCode"] == 403
    # a context claiming the admin role on a user route is not taken (those routes have Cognito)
    forged = {"tokenId": "tok-x", "roles": "admin", "subject": "mallory"}
    assert (
        api.resolve(_api_event("POST", f"/nodes/{node.id}/revoke", forged), _LambdaContext())["statusCode"]
        == 401
    )
    assert not ctl.store.get(Node, node.id).revoked
