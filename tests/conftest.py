"""Shared fixtures.

Servers (SeaweedFS, Azurite, a fault-injecting HTTP server) live in ``tests/servers.py``
and are re-exported here. Object-store fixtures:

* ``moto_s3`` — an in-process moto S3 with one bucket (yields the bucket name);
* ``make_object_store`` — parametrised over :data:`STORE_BACKENDS`; returns
  ``make(name="main")`` building a store in a namespace unique to the test (a fresh
  folder, or a fresh prefix in the shared bucket/container). Stores made with different
  names never see each other's objects. Narrow the backends of one test with
  ``@pytest.mark.parametrize("make_object_store", [...], indirect=True)``;
* ``object_store`` — ``make_object_store("main")``.

Servers start only when a test selects their backend (``-k folder`` starts none).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.ports.object_store import ObjectStore
from tests.servers import (  # noqa: F401  (fixtures are found by name)
    Azurite,
    SeaweedFS,
    azurite,
    fault_server,
    seaweedfs,
)

# libguestfs appliances (the Prep Node, in every flow a node runs) with the direct backend and
# TCG: qemu aborts on these machines' /dev/kvm. Set before any test starts a node process.
os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")

STORE_BACKENDS = ("folder", "moto", "seaweedfs", "azurite")

MakeStore = Callable[..., ObjectStore]

MOTO_BUCKET = "lifeboat-moto"


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's in-process S3 (``mock_aws``) with bucket :data:`MOTO_BUCKET` created."""
    import boto3
    from moto import mock_aws

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=MOTO_BUCKET)
        yield MOTO_BUCKET


def _unique() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=STORE_BACKENDS)
def make_object_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """``make(name="main")`` -> a store of this backend in a namespace unique to the test."""
    backend: str = request.param
    unique = _unique()
    if backend == "folder":
        from shared.adapters.local.folder_store import FolderStore

        return lambda name="main": FolderStore(tmp_path / unique / name)
    if backend == "moto":
        from shared.adapters.aws.s3_store import S3Store

        bucket = request.getfixturevalue("moto_s3")
        return lambda name="main": S3Store(bucket, f"{unique}/{name}")
    if backend == "seaweedfs":
        weed: SeaweedFS = request.getfixturevalue("seaweedfs")
        return lambda name="main": weed.store(f"{unique}/{name}")
    if backend == "azurite":
        az: Azurite = request.getfixturevalue("azurite")
        return lambda name="main": az.store(f"{unique}/{name}")
    raise ValueError(f"unknown store backend {backend!r}")


@pytest.fixture
def object_store(make_object_store: MakeStore) -> ObjectStore:
    """A fresh, empty store of each backend."""
    return make_object_store()
