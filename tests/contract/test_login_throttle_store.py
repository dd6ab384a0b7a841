"""Login-throttle counters on the real metadata stores: SQLite (a file) and DynamoDB (moto,
through pynamodb), including the TTL attribute DynamoDB deletes old counters by."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from shared.domain.identity import Role, User
from shared.domain.login_throttle import LoginThrottle
from shared.errors import TooManyRequestsError
from shared.policies.login_throttle import LoginThrottleSettings, Scope
from shared.ports.metadata_store import MetadataStore
from shared.services.login_throttle import LoginThrottler
from tests.contract.test_metadata_store import moto_dynamodb  # noqa: F401  (fixture found by name)

pytestmark = pytest.mark.ops
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SETTINGS = LoginThrottleSettings()


@pytest.fixture(params=("sqlite", "dynamodb"))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MetadataStore:
    if request.param == "sqlite":
        from shared.adapters.local.sqlite_metadata import SqliteMetadataStore

        return SqliteMetadataStore(tmp_path / "metadata.db")
    from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore

    request.getfixturevalue("moto_dynamodb")
    return DynamoMetadataStore.create_table(f"lifeboat-{uuid.uuid4().hex[:12]}")


def _at(store: MetadataStore, seconds: float) -> LoginThrottler:
    return LoginThrottler(store, SETTINGS, T0 + timedelta(seconds=seconds))


def test_lockout_listing_clearing_and_expiry(store: MetadataStore) -> None:
    started = []
    for n in range(SETTINGS.user_lockout_failures):
        started += _at(store, 60 * n).failed("dave", "192.0.2.1")
    assert [(s.scope, s.key) for s in started] == [(Scope.USER, "dave")]
    locked_at = 60 * (SETTINGS.user_lockout_failures - 1)
    with pytest.raises(TooManyRequestsError) as refused:
        _at(store, locked_at + 10).check("dave", "198.51.100.9")  # another address: the user is locked
    assert refused.value.fields["retry_after"] == SETTINGS.lockout_seconds - 10
    _at(store, locked_at + 10).check("erin", "192.0.2.1")  # the address is not locked (5 of 20)
    [listed] = _at(store, locked_at + 10).lockouts()
    assert (listed.scope, listed.key, listed.failures) == (Scope.USER, "dave", 5)
    record = store.get(LoginThrottle, LoginThrottle.id_for(Scope.USER, "dave"))
    assert (
        record.expires == int((T0 + timedelta(seconds=locked_at + SETTINGS.lockout_seconds)).timestamp()) + 1
    )

    assert _at(store, locked_at + 20).clear(Scope.USER, "dave") is True
    assert _at(store, locked_at + 20).clear(Scope.USER, "dave") is False
    _at(store, locked_at + 20).check("dave", "192.0.2.1")
    # unlocking the user leaves the address's count; listing deletes counters that stopped mattering
    assert store.get(LoginThrottle, LoginThrottle.id_for(Scope.ADDRESS, "192.0.2.1")).failures == 5
    assert _at(store, 86400).lockouts() == []
    assert store.query(LoginThrottle).items == []


def test_concurrent_failures_never_crash(store: MetadataStore) -> None:
    settings = LoginThrottleSettings(user_lockout_failures=1000, address_lockout_failures=1000)
    errors: list[BaseException] = []

    def guess() -> None:
        try:
            for _ in range(5):
                LoginThrottler(store, settings, T0).failed("target", "192.0.2.50")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    count = store.get(LoginThrottle, LoginThrottle.id_for(Scope.USER, "target")).failures
    assert 1 <= count <= 40  # increments lost to the race are acceptable, never more than were made


def test_dynamodb_item_carries_the_ttl_attribute(moto_dynamodb: None) -> None:  # noqa: F811
    from shared.adapters.aws.dynamo_metadata import TTL_ATTRIBUTE, DynamoMetadataStore

    table = f"lifeboat-{uuid.uuid4().hex[:12]}"
    store = DynamoMetadataStore.create_table(table)
    client = boto3.client("dynamodb")
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", TTL_ATTRIBUTE)

    _at(store, 0).failed("frank", "192.0.2.7")
    _at(store, 5).failed("frank", "192.0.2.7")
    record = store.get(LoginThrottle, LoginThrottle.id_for(Scope.USER, "frank"))
    item = client.get_item(
        TableName=table, Key={"pk": {"S": f"login-throttle#{record.id}"}, "sk": {"S": "r"}}
    )
    assert item["Item"][TTL_ATTRIBUTE] == {"N": str(record.expires)}
    assert record.expires == int((T0 + timedelta(seconds=SETTINGS.window_seconds)).timestamp()) + 1

    store.create(User(id="user-frank", username="frank", password_hash="x", roles=[Role.VIEWER]))
    user_item = client.get_item(TableName=table, Key={"pk": {"S": "user#user-frank"}, "sk": {"S": "r"}})
    assert TTL_ATTRIBUTE not in user_item["Item"]  # records without an expiry never expire
