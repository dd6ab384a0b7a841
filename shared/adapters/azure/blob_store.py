"""ObjectStore on Azure Blob Storage (or Azurite) through azure-storage-blob.

Objects are block blobs. ``upload_blob`` sends objects up to the SDK's single-put size
(64 MiB) as one Put Blob and larger ones as blocks plus one Put Block List; both are
atomic for readers, so ``put`` keeps the port's all-or-nothing promise.

The SDK is left one quick retry; the retry policy that matters lives in
:class:`shared.adapters.store_wrappers.RetryingStore`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from enum import Enum
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ExponentialRetry
from requests import Session
from requests.adapters import HTTPAdapter

from shared.adapters.azure.error_codes import ACCESS_CODES
from shared.errors import (
    CorruptObjectError,
    InvalidInputError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    TransientStoreError,
)
from shared.ports.object_store import ObjectInfo, check_key

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"

_TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError", "Md5Mismatch"})


def _error_code(exc: BaseException) -> str:
    """The service's error code as a plain string (the SDK gives a str or a str-Enum)."""
    code = getattr(exc, "error_code", None)
    if isinstance(code, Enum):
        code = code.value
    return str(code or "")


def service_from_connection_string(
    connection_string: str, *, max_connections: int = 32, retries: int = 1
) -> BlobServiceClient:
    """A BlobServiceClient with Lifeboat's settings: ``retries`` quick SDK retries, a wide pool."""
    session = Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max_connections)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return BlobServiceClient.from_connection_string(
        connection_string,
        retry_policy=ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=retries, random_jitter_range=1
        ),
        transport=RequestsTransport(session=session, session_owner=True),
        connection_timeout=10,
        read_timeout=60,
    )


class AzureBlobStore:
    """Objects under ``azure://container/prefix/``.

    ``service`` is a ``BlobServiceClient``; when omitted one is built from the
    ``AZURE_STORAGE_CONNECTION_STRING`` environment variable with
    :func:`service_from_connection_string`. The constructor does no I/O; a missing
    container surfaces on first use as a :class:`StoreError` naming the container.
    """

    def __init__(
        self,
        container: str,
        prefix: str = "",
        service: Any = None,
        *,
        max_connections: int = 32,
    ) -> None:
        if not container or "/" in container:
            raise InvalidInputError(f"invalid Azure container name {container!r}", container=container)
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        if service is None:
            connection_string = os.environ.get(CONNECTION_STRING_ENV)
            if not connection_string:
                raise StoreAccessError(
                    f"no Azure credentials: set {CONNECTION_STRING_ENV} to the storage account's "
                    "connection string",
                    container=container,
                )
            service = service_from_connection_string(connection_string, max_connections=max_connections)
        self.container = container
        self.prefix = prefix
        self._base = f"{prefix}/" if prefix else ""
        self._service = service
        self._container = service.get_container_client(container)

    # --- helpers ----------------------------------------------------------------------
    def _full(self, key: str) -> str:
        return self._base + check_key(key)

    def _translate(self, exc: AzureError, key: str | None, action: str) -> StoreError:
        where = f"{key} in {self.describe()}" if key else self.describe()
        fields: dict[str, object] = {"container": self.container}
        if key is not None:
            fields["key"] = key
        status = int(getattr(exc, "status_code", None) or 0)
        code = _error_code(exc)
        fields.update(code=code, status=status)
        if code == "ContainerNotFound":
            return StoreError(
                f"Azure container {self.container!r} does not exist ({action} {where})", **fields
            )
        if isinstance(exc, ResourceNotFoundError) and code in ("BlobNotFound", ""):
            return ObjectNotFoundError(f"object {key} not found in {self.describe()}", **fields)
        if isinstance(exc, ClientAuthenticationError) or code in ACCESS_CODES or status in (401, 403):
            return StoreAccessError(
                f"access refused by Azure ({code or status}) on {action} {where}; check the account key "
                "or SAS and its permissions",
                **fields,
            )
        if isinstance(exc, ServiceRequestError | ServiceResponseError | IncompleteReadError):
            return TransientStoreError(f"Azure {action} {where} failed: {type(exc).__name__}", **fields)
        if code in _TRANSIENT_CODES or status in (408, 429) or status >= 500:
            return TransientStoreError(f"Azure {action} {where} failed: {code or status}", **fields)
        return StoreError(f"Azure {action} {where} failed: {code or status or type(exc).__name__}", **fields)

    def _short(self, key: str, offset: int, length: int, got: int) -> CorruptObjectError:
        return CorruptObjectError(
            f"object {key} in {self.describe()} is truncated: wanted {length} bytes at {offset}, got {got}",
            key=key,
        )

    # --- the port -----------------------------------------------------------------------
    def describe(self) -> str:
        return f"azure://{self.container}/{self.prefix}" if self.prefix else f"azure://{self.container}"

    def put(self, key: str, data: bytes) -> None:
        full = self._full(key)
        try:
            self._container.upload_blob(full, data, overwrite=True, max_concurrency=1)
        except AzureError as exc:
            raise self._translate(exc, key, "put") from exc

    def get(self, key: str) -> bytes:
        full = self._full(key)
        try:
            data: bytes = self._container.download_blob(full, max_concurrency=1).readall()
        except AzureError as exc:
            raise self._translate(exc, key, "get") from exc
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        full = self._full(key)
        if offset < 0 or length < 0:
            raise InvalidInputError(f"invalid range offset={offset} length={length} for {key}", key=key)
        if length == 0:
            # The SDK rejects zero-length ranges client-side; answer from the blob's size.
            info = self.stat(key)
            if info is None:
                raise ObjectNotFoundError(f"object {key} not found in {self.describe()}", key=key)
            if offset > info.size:
                raise self._short(key, offset, length, 0)
            return b""
        try:
            data: bytes = self._container.download_blob(
                full, offset=offset, length=length, max_concurrency=1
            ).readall()
        except HttpResponseError as exc:
            if exc.status_code == 416 or _error_code(exc) == "InvalidRange":
                raise self._short(key, offset, length, 0) from exc
            raise self._translate(exc, key, "get_range") from exc
        except AzureError as exc:
            raise self._translate(exc, key, "get_range") from exc
        if len(data) != length:
            # Azurite answers a range starting exactly at the end with 0 bytes, not 416.
            raise self._short(key, offset, length, len(data))
        return data

    def stat(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            props = self._container.get_blob_client(full).get_blob_properties()
        except ResourceNotFoundError as exc:
            if _error_code(exc) == "ContainerNotFound":
                raise self._translate(exc, key, "stat") from exc
            return None
        except AzureError as exc:
            raise self._translate(exc, key, "stat") from exc
        return ObjectInfo(key, int(props.size))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base_len = len(self._base)
        try:
            for blob in self._container.list_blobs(name_starts_with=self._base + prefix):
                name: str = blob.name
                if name.endswith("/"):
                    continue
                yield ObjectInfo(name[base_len:], int(blob.size))
        except AzureError as exc:
            raise self._translate(exc, None, f"list {prefix!r} in") from exc

    def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            self._container.delete_blob(full, delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if _error_code(exc) == "ContainerNotFound":
                raise self._translate(exc, key, "delete") from exc
            return
        except AzureError as exc:
            raise self._translate(exc, key, "delete") from exc
