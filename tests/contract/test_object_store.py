"""The ObjectStore contract (see shared/ports/object_store.py), run against every adapter.

Backends: ``folder`` (tmp dir), ``moto`` (in-process S3), ``seaweedfs`` (a real S3
server with auth) and ``azurite`` (Azure Blob emulator). Each test gets a fresh,
unique namespace. The last section checks SDK error translation (refused credentials,
missing bucket, unreachable or failing servers) for the S3 and Azure adapters.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.errors import (
    CorruptObjectError,
    InvalidInputError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    TransientStoreError,
)
from shared.ports.object_store import ObjectInfo, ObjectStore
from tests.conftest import MakeStore
from tests.servers import Azurite, FaultServer, SeaweedFS, free_ports

MiB = 1024 * 1024


def _keys(store: ObjectStore, prefix: str = "") -> dict[str, int]:
    listed = list(store.list(prefix))
    keys = [info.key for info in listed]
    assert len(keys) == len(set(keys)), f"list yielded duplicates: {keys}"
    return {info.key: info.size for info in listed}


# --- round trips -----------------------------------------------------------------------------------
def test_is_an_object_store(object_store: ObjectStore) -> None:
    assert isinstance(object_store, ObjectStore)


@pytest.mark.parametrize("size", [0, 1, 5 * MiB], ids=["empty", "1B", "5MiB"])
def test_put_get_round_trip(object_store: ObjectStore, size: int) -> None:
    data = os.urandom(size)
    object_store.put("data/obj", data)
    assert object_store.get("data/obj") == data
    assert object_store.stat("data/obj") == ObjectInfo("data/obj", size)


def test_overwrite_replaces_the_whole_object(object_store: ObjectStore) -> None:
    object_store.put("k", b"a much longer first version")
    object_store.put("k", b"short")
    assert object_store.get("k") == b"short"
    assert object_store.stat("k") == ObjectInfo("k", 5)
    object_store.put("k", b"short")  # repeating a put is harmless
    assert object_store.get("k") == b"short"


def test_get_missing_raises_not_found_naming_the_key(object_store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        object_store.get("no/such/object")
    assert info.value.fields["key"] == "no/such/object"
    assert "no/such/object" in str(info.value)
    assert info.value.__cause__ is not None, "the SDK/OS error must be chained"


# --- ranges ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("offset", "length"), [(0, 1), (0, 1000), (999, 1), (123, 456), (500, 500)])
def test_get_range_returns_exact_bytes(object_store: ObjectStore, offset: int, length: int) -> None:
    data = os.urandom(1000)
    object_store.put("packs/p1", data)
    assert object_store.get_range("packs/p1", offset, length) == data[offset : offset + length]


def test_get_range_zero_length_is_empty(object_store: ObjectStore) -> None:
    object_store.put("k", b"0123456789")
    assert object_store.get_range("k", 4, 0) == b""


@pytest.mark.parametrize(
    ("offset", "length"), [(990, 20), (1000, 1), (5000, 10)], ids=["tail", "at-end", "beyond"]
)
def test_get_range_past_end_is_corrupt(object_store: ObjectStore, offset: int, length: int) -> None:
    object_store.put("packs/short", os.urandom(1000))
    with pytest.raises(CorruptObjectError) as info:
        object_store.get_range("packs/short", offset, length)
    assert info.value.fields["key"] == "packs/short"
    assert "packs/short" in str(info.value)


def test_get_range_of_empty_object_is_corrupt(object_store: ObjectStore) -> None:
    object_store.put("empty", b"")
    with pytest.raises(CorruptObjectError):
        object_store.get_range("empty", 0, 1)


def test_get_range_missing_raises_not_found(object_store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        object_store.get_range("missing", 0, 10)
    assert info.value.fields["key"] == "missing"


# --- stat, list, delete ------------------------------------------------------------------------------
def test_stat_present_and_missing(object_store: ObjectStore) -> None:
    assert object_store.stat("a/b") is None
    object_store.put("a/b", b"xyz")
    assert object_store.stat("a/b") == ObjectInfo("a/b", 3)


def test_a_key_prefix_is_not_an_object(object_store: ObjectStore) -> None:
    object_store.put("a/b", b"xyz")
    assert object_store.stat("a") is None
    with pytest.raises(ObjectNotFoundError):
        object_store.get("a")
    object_store.delete("a")
    assert object_store.get("a/b") == b"xyz"


def test_list_filters_by_prefix(object_store: ObjectStore) -> None:
    # No key is also a "directory" of another key: FolderStore cannot hold both.
    objects = {
        "data/a/x": 1,
        "data/a/y/z": 2,
        "data/ab": 3,
        "data/abc/d": 4,
        "data/b": 5,
        "other/c": 6,
    }
    for key, size in objects.items():
        object_store.put(key, b"x" * size)

    def having(prefix: str) -> dict[str, int]:
        return {k: v for k, v in objects.items() if k.startswith(prefix)}

    assert _keys(object_store) == objects
    for prefix in ("data/a", "data/a/", "data/ab", "data/ab/", "data/a/y", "data/", "data", "d", "other/c"):
        assert _keys(object_store, prefix) == having(prefix), prefix
    assert _keys(object_store, "data/a/") == {"data/a/x": 1, "data/a/y/z": 2}
    assert _keys(object_store, "data/ab") == {"data/ab": 3, "data/abc/d": 4}
    assert _keys(object_store, "nothing") == {}


def test_list_of_empty_store_is_empty(object_store: ObjectStore) -> None:
    assert _keys(object_store) == {}


def test_stores_in_neighbouring_namespaces_are_isolated(make_object_store: MakeStore) -> None:
    one, other = make_object_store("one"), make_object_store("onex")
    one.put("k", b"1")
    other.put("k", b"22")
    other.put("only-there", b"x")
    assert _keys(one) == {"k": 1}
    assert _keys(other) == {"k": 2, "only-there": 1}
    assert one.get("k") == b"1"
    assert one.stat("only-there") is None


def test_delete_is_idempotent(object_store: ObjectStore) -> None:
    object_store.put("d/k", b"x")
    object_store.delete("d/k")
    assert object_store.stat("d/k") is None
    with pytest.raises(ObjectNotFoundError):
        object_store.get("d/k")
    object_store.delete("d/k")
    object_store.delete("never/existed")
    assert _keys(object_store) == {}


BAD_KEYS = [
    "",
    "/abs",
    "trailing/",
    "a//b",
    "a/../b",
    "..",
    "./a",
    "sp ace",
    "back\\slash",
    "ünï",
    "a?b",
    "a\nb",
]


def test_invalid_keys_are_rejected(object_store: ObjectStore) -> None:
    for key in BAD_KEYS:
        calls: dict[str, tuple[Any, tuple[Any, ...]]] = {
            "put": (object_store.put, (key, b"x")),
            "get": (object_store.get, (key,)),
            "get_range": (object_store.get_range, (key, 0, 1)),
            "stat": (object_store.stat, (key,)),
            "delete": (object_store.delete, (key,)),
        }
        for name, (method, args) in calls.items():
            try:
                method(*args)
            except InvalidInputError:
                continue
            except Exception as exc:
                pytest.fail(f"{name}({key!r}) raised {exc!r}, not InvalidInputError")
            pytest.fail(f"{name}({key!r}) was accepted")
    assert _keys(object_store) == {}


# --- concurrency --------------------------------------------------------------------------------------
def test_concurrent_puts_from_8_threads(object_store: ObjectStore) -> None:
    payloads = {f"c/{t}/{i:02d}": os.urandom(16 * 1024 + t * 100 + i) for t in range(8) for i in range(12)}

    def writer(t: int) -> None:
        for key, data in payloads.items():
            if key.startswith(f"c/{t}/"):
                object_store.put(key, data)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    assert _keys(object_store, "c/") == {k: len(v) for k, v in payloads.items()}
    with ThreadPoolExecutor(8) as pool:
        got = dict(zip(payloads, pool.map(object_store.get, payloads), strict=True))
    assert got == payloads


def test_concurrent_overwrites_are_atomic(request: pytest.FixtureRequest, object_store: ObjectStore) -> None:
    if request.node.callspec.params.get("make_object_store") == "moto":
        pytest.skip("moto's in-process S3 is not thread-safe when one key is overwritten and read at once")
    versions = [bytes([v]) * (256 * 1024) for v in range(8)]
    object_store.put("hot", versions[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(object_store.get("hot"))

    def writer(version: bytes) -> None:
        for _ in range(3):
            object_store.put("hot", version)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(writer, versions))
    finally:
        stop.set()
        thread.join()
    assert seen, "the reader never completed a get"
    assert all(data in versions for data in seen), "a reader saw a partial or mixed object"
    assert object_store.get("hot") in versions


# --- describe and secrets -----------------------------------------------------------------------------
def test_describe_names_the_location(object_store: ObjectStore) -> None:
    text = object_store.describe()
    assert text.startswith(("file://", "s3://", "azure://")), text


def test_describe_has_no_secrets_seaweedfs(seaweedfs: SeaweedFS) -> None:
    text = seaweedfs.store("some/prefix").describe()
    assert text == f"s3://{seaweedfs.bucket}/some/prefix"
    assert seaweedfs.secret_key not in text
    assert seaweedfs.access_key not in text


def test_describe_has_no_secrets_azurite(azurite: Azurite) -> None:
    text = azurite.store("some/prefix").describe()
    assert text == f"azure://{azurite.container}/some/prefix"
    assert azurite.account_key not in text
    assert azurite.account_key[:12] not in text


# --- SDK error translation ------------------------------------------------------------------------------
def _all_calls(store: ObjectStore) -> list[Any]:
    return [
        lambda: store.put("k", b"x"),
        lambda: store.get("k"),
        lambda: store.get_range("k", 0, 1),
        lambda: store.stat("k"),
        lambda: list(store.list()),
        lambda: store.delete("k"),
    ]


@pytest.mark.parametrize("backend", ["seaweedfs", "azurite"])
def test_wrong_credentials_raise_store_access_error(request: pytest.FixtureRequest, backend: str) -> None:
    if backend == "seaweedfs":
        weed: SeaweedFS = request.getfixturevalue("seaweedfs")
        wrong = "wrong-" + weed.secret_key
        good, bad = weed.store("creds"), weed.store("creds", secret_key=wrong)
    else:
        az: Azurite = request.getfixturevalue("azurite")
        wrong = "AAAA" + az.account_key[4:]
        good, bad = az.store("creds"), az.store("creds", account_key=wrong)
    good.put("k", b"x")
    for call in _all_calls(bad):
        with pytest.raises(StoreAccessError) as info:
            call()
        assert info.value.__cause__ is not None
        assert wrong not in str(info.value)


@pytest.mark.parametrize("backend", ["moto", "seaweedfs", "azurite"])
def test_missing_bucket_is_a_clear_store_error(request: pytest.FixtureRequest, backend: str) -> None:
    name = "lifeboat-no-such-bucket"
    store: ObjectStore
    if backend == "moto":
        from shared.adapters.aws.s3_store import S3Store

        request.getfixturevalue("moto_s3")
        store = S3Store(name, "p")
    elif backend == "seaweedfs":
        store = request.getfixturevalue("seaweedfs").store("p", bucket=name)
    else:
        store = request.getfixturevalue("azurite").store("p", container=name)
    for call in (lambda: store.put("k", b"x"), lambda: store.get("k"), lambda: list(store.list())):
        with pytest.raises(StoreError) as info:
            call()
        assert not isinstance(info.value, TransientStoreError | StoreAccessError)
        assert name in str(info.value)


def _s3_store_at(endpoint: str) -> ObjectStore:
    """An S3Store on ``endpoint`` with SDK retries off, so failures surface at once."""
    import boto3
    from botocore.config import Config

    from shared.adapters.aws.s3_store import S3Store, default_config

    config = default_config().merge(
        Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 1})
    )
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        config=config,
    )
    return S3Store("bucket", "p", client=client)


def _azure_store_at(endpoint: str) -> ObjectStore:
    """An AzureBlobStore on ``endpoint`` with SDK retries off, so failures surface at once."""
    from shared.adapters.azure.blob_store import AzureBlobStore, service_from_connection_string
    from tests.servers import AZURITE_ACCOUNT, AZURITE_KEY

    cs = (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )
    return AzureBlobStore("container", "p", service=service_from_connection_string(cs, retries=0))


STORES_AT = {"s3": _s3_store_at, "azure": _azure_store_at}


@pytest.mark.parametrize("kind", STORES_AT)
def test_unreachable_server_is_transient(kind: str) -> None:
    (port,) = free_ports(1)  # nothing listens there
    store = STORES_AT[kind](f"http://127.0.0.1:{port}")
    for call in _all_calls(store):
        with pytest.raises(TransientStoreError) as info:
            call()
        assert info.value.__cause__ is not None


@pytest.mark.parametrize("kind", STORES_AT)
@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (503, "SlowDown", TransientStoreError),
        (500, "InternalError", TransientStoreError),
        (503, "ServerBusy", TransientStoreError),
        (403, "AccessDenied", StoreAccessError),
        (403, "AuthenticationFailed", StoreAccessError),
        (400, "InvalidArgument", StoreError),
    ],
)
def test_server_errors_are_translated(
    fault_server: FaultServer, kind: str, status: int, code: str, expected: type[StoreError]
) -> None:
    if kind == "s3":
        fault_server.body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        fault_server.headers = {"Content-Type": "application/xml"}
    else:
        fault_server.body = (
            f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>injected</Message></Error>'
        ).encode()
        fault_server.headers = {"Content-Type": "application/xml", "x-ms-error-code": code}
    fault_server.status = status
    store = STORES_AT[kind](fault_server.url)
    for call in _all_calls(store):
        with pytest.raises(expected) as info:
            call()
        if expected is StoreError:
            assert not isinstance(info.value, TransientStoreError | StoreAccessError | ObjectNotFoundError)
        assert info.value.__cause__ is not None
