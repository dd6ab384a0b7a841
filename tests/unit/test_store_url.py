"""Unit tests for shared.adapters.store_url.open_store (no network: opening does no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.adapters.local.folder_store import FolderStore
from shared.adapters.store_url import open_store
from shared.adapters.store_wrappers import LimitedStore, RetryingStore, ThrottledStore
from shared.errors import InvalidInputError, StoreAccessError
from shared.ports.object_store import ObjectStore

DEV_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;"
)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", DEV_CONNECTION_STRING)


def adapter_of(store: ObjectStore) -> ObjectStore:
    """Peel the standard wrappers, checking their order on the way."""
    if isinstance(store, ThrottledStore):
        store = store.inner
    assert isinstance(store, RetryingStore)
    assert isinstance(store.inner, LimitedStore)
    return store.inner.inner


def test_plain_path_opens_a_folder_store(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "repo"))
    folder = adapter_of(store)
    assert isinstance(folder, FolderStore)
    assert folder.root == tmp_path / "repo"
    assert store.describe() == f"file://{tmp_path / 'repo'}"


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = adapter_of(open_store("some/repo"))
    assert isinstance(folder, FolderStore)
    assert folder.root == tmp_path / "some" / "repo"


@pytest.mark.parametrize("url", ["file://{p}", "file://localhost{p}", "FILE://{p}"])
def test_file_urls_open_a_folder_store(tmp_path: Path, url: str) -> None:
    folder = adapter_of(open_store(url.format(p=tmp_path / "my repo").replace(" ", "%20")))
    assert isinstance(folder, FolderStore)
    assert folder.root == tmp_path / "my repo"


def test_the_folder_store_works_through_the_stack(tmp_path: Path) -> None:
    store = open_store(str(tmp_path), limit_mbps=1000)
    store.put("a/b", b"hello")
    assert store.get_range("a/b", 1, 3) == b"ell"
    assert [i.key for i in store.list()] == ["a/b"]


@pytest.mark.parametrize(
    ("url", "bucket", "prefix", "described"),
    [
        ("s3://my-bucket", "my-bucket", "", "s3://my-bucket"),
        ("s3://my-bucket/", "my-bucket", "", "s3://my-bucket"),
        ("s3://my-bucket/dr/site-a", "my-bucket", "dr/site-a", "s3://my-bucket/dr/site-a"),
        ("s3://my.bucket.01/dr/", "my.bucket.01", "dr", "s3://my.bucket.01/dr"),
    ],
)
def test_s3_urls(url: str, bucket: str, prefix: str, described: str) -> None:
    from shared.adapters.aws.s3_store import S3Store

    store = open_store(url)
    s3 = adapter_of(store)
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix) == (bucket, prefix)
    assert store.describe() == described
    assert "not-a-real-secret" not in store.describe()


def test_s3_client_follows_the_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.adapters.aws.s3_store import S3Store

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    s3 = adapter_of(open_store("s3://bucket/x", max_concurrent=64))
    assert isinstance(s3, S3Store)
    client = s3._client
    assert client.meta.endpoint_url == "http://127.0.0.1:8333"
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.config.max_pool_connections == 64
    assert client.meta.config.retries["mode"] == "standard"
    assert client.meta.config.retries["total_max_attempts"] == 2


def test_s3_default_pool_is_32() -> None:
    s3 = adapter_of(open_store("s3://bucket"))
    assert s3._client.meta.config.max_pool_connections == 32  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "container", "prefix", "described"),
    [
        ("azure://backups", "backups", "", "azure://backups"),
        ("azure://backups/site-a/vm_1", "backups", "site-a/vm_1", "azure://backups/site-a/vm_1"),
    ],
)
def test_azure_urls(url: str, container: str, prefix: str, described: str) -> None:
    from shared.adapters.azure.blob_store import AzureBlobStore

    store = open_store(url)
    blob = adapter_of(store)
    assert isinstance(blob, AzureBlobStore)
    assert (blob.container, blob.prefix) == (container, prefix)
    assert store.describe() == described
    assert "Eby8vdM02" not in store.describe()


def test_azure_without_connection_string_is_an_access_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    with pytest.raises(StoreAccessError, match="AZURE_STORAGE_CONNECTION_STRING"):
        open_store("azure://backups")


def test_limit_is_in_megabytes_of_ten_to_the_six_bytes(tmp_path: Path) -> None:
    store = open_store(str(tmp_path), limit_mbps=12.5)
    assert isinstance(store, ThrottledStore)
    assert store.bytes_per_second == 12_500_000
    assert isinstance(store.inner, RetryingStore)


def test_max_concurrent_reaches_the_limiter(tmp_path: Path) -> None:
    store = open_store(str(tmp_path), max_concurrent=5)
    assert isinstance(store, RetryingStore)
    assert isinstance(store.inner, LimitedStore)
    assert store.inner.max_concurrent == 5


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "gs://bucket/x",
        "http://example.com/repo",
        "s3://",
        "s3:///prefix",
        "s3://Upper-Case",
        "s3://ab",
        "s3://bucket_with_underscore",
        "s3://bucket/../escape",
        "s3://bucket/a//b",
        "s3://bucket/sp ace",
        "s3://bucket/x?versionId=1",
        "s3://bucket/x#frag",
        "s3://user:pass@bucket/x",
        "azure://",
        "azure://double--hyphen",
        "azure://Container",
        "azure://c/prefix/../x",
        "file://otherhost/path",
        "file://",
    ],
)
def test_bad_locations_are_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        open_store(url)
    if url.strip():
        assert url in str(info.value)


@pytest.mark.parametrize("kwargs", [{"max_concurrent": 0}, {"limit_mbps": 0}, {"limit_mbps": -5.0}])
def test_bad_options_are_invalid_input(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        open_store(str(tmp_path), **kwargs)  # type: ignore[arg-type]


def test_unsupported_scheme_message_lists_what_works() -> None:
    with pytest.raises(InvalidInputError) as info:
        open_store("gs://bucket")
    message = str(info.value)
    for scheme in ("s3://", "azure://", "file://"):
        assert scheme in message
