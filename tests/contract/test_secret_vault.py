"""The SecretVault contract on every adapter: sealed in SQLite (embedded) and AWS Secrets
Manager (moto, in process)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from shared.adapters.aws.secrets_manager_vault import SecretsManagerVault
from shared.adapters.local.sealed_secrets import SealedSecretVault
from shared.adapters.local.sqlite_metadata import SqliteMetadataStore
from shared.errors import InvalidInputError, NotFoundError
from shared.ports.secrets import SecretVault


@pytest.fixture(params=["sealed-sqlite", "secrets-manager"])
def vault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecretVault]:
    if request.param == "sealed-sqlite":
        yield SealedSecretVault(SqliteMetadataStore(tmp_path / "m.db"), b"s" * 32)
        return
    with mock_aws():
        yield SecretsManagerVault("lifeboat/vcenter/", client=boto3.client("secretsmanager", region_name="eu-west-1"))


def test_put_get_delete(vault: SecretVault) -> None:
    ref = vault.put("site vc", "p@ss word ✓")
    assert vault.get(ref) == "p@ss word ✓" and "p@ss" not in ref
    other = vault.put("site vc", "p@ss word ✓")
    assert other != ref  # references are never reused
    vault.delete(ref)
    vault.delete(ref)  # idempotent
    with pytest.raises(NotFoundError):
        vault.get(ref)
    assert vault.get(other) == "p@ss word ✓"


def test_a_foreign_reference_is_invalid_input(vault: SecretVault) -> None:
    with pytest.raises(InvalidInputError):
        vault.get("env:HOME")


def test_secrets_manager_names_stay_under_the_prefix() -> None:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-west-1")
        ref = SecretsManagerVault("lifeboat/vcenter/", client=client).put("x", "y")
        assert client.describe_secret(SecretId=ref.split(":", 1)[1])["Name"].startswith("lifeboat/vcenter/secret-")


