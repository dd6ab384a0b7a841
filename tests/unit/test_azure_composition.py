"""Which credential the Azure target's staging container uses (functions/recovery/targets.py)."""

from __future__ import annotations

from typing import Any

import pytest

from functions.recovery.targets import _container

KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONNECTION = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"


class Identity:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise AssertionError("no I/O while composing")


def test_the_connection_string_is_used_for_its_own_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", CONNECTION)
    container = _container("http://127.0.0.1:10000/devstoreaccount1/recovery-staging", Identity(), {})
    assert (
        container.container_name == "recovery-staging"
        and container.credential.account_name == "devstoreaccount1"
    )


def test_a_staging_account_other_than_the_connection_strings_uses_the_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", CONNECTION)  # a node's repository account
    identity = Identity()
    container = _container("https://lbstaging.blob.core.windows.net/recovery-staging", identity, {})
    assert container.account_name == "lbstaging" and container.credential is identity


def test_a_url_without_a_container_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    from shared.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        _container("https://lbstaging.blob.core.windows.net/", Identity(), {})
