"""ObjectStore on Amazon S3 (or any S3-compatible server) through boto3.

The adapter translates, it does not decide: SDK errors become :mod:`shared.errors`
classes with the SDK error chained as ``__cause__``. botocore is left one quick retry
(``standard`` mode, 2 attempts in total); real retry policy lives in
:class:`shared.adapters.store_wrappers.RetryingStore`.

Atomicity comes from S3 itself: a single ``PutObject`` is all-or-nothing, so ``put``
never uses multipart uploads (objects here are packs of tens of MiB, far below the
5 GiB single-put limit).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from shared.errors import (
    CorruptObjectError,
    InvalidInputError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    TransientStoreError,
)
from shared.ports.object_store import ObjectInfo, check_key

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "403",
        "401",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "BadDigest",
        "XAmzContentSHA256Mismatch",
        "OperationAborted",
        "500",
        "502",
        "503",
        "504",
    }
)


def default_config(max_connections: int = 32) -> Config:
    """botocore settings for Lifeboat: a wide connection pool and only one SDK retry.

    Note botocore's ``Config(retries={"max_attempts": n})`` counts *retries* (n + 1
    attempts), unlike ``AWS_MAX_ATTEMPTS``; ``total_max_attempts`` is unambiguous.
    """
    return Config(
        max_pool_connections=max_connections,
        retries={"mode": "standard", "total_max_attempts": 2},
        connect_timeout=10,
        read_timeout=60,
        user_agent_extra="lifeboat",
    )


class S3Store:
    """Objects under ``s3://bucket/prefix/``.

    ``client`` is a boto3 S3 client; when omitted one is built from the standard AWS
    environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
    ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``/``AWS_REGION``, ``AWS_ENDPOINT_URL``/
    ``AWS_ENDPOINT_URL_S3`` — botocore reads all of them) with :func:`default_config`.

    The constructor does no I/O. A missing bucket surfaces on first use as a
    :class:`StoreError` naming the bucket — except from ``stat``, because S3 answers a
    HEAD on a missing bucket with a bare 404 that is indistinguishable from a missing
    key, so ``stat`` returns ``None`` there.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Any = None,
        *,
        max_connections: int = 32,
    ) -> None:
        if not bucket or "/" in bucket:
            raise InvalidInputError(f"invalid S3 bucket name {bucket!r}", bucket=bucket)
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self._base = f"{prefix}/" if prefix else ""
        if client is None:
            client = boto3.session.Session().client("s3", config=default_config(max_connections))
        self._client = client

    # --- helpers ----------------------------------------------------------------------
    def _full(self, key: str) -> str:
        return self._base + check_key(key)

    def _translate(self, exc: Exception, key: str | None, action: str) -> StoreError:
        where = f"{key} in {self.describe()}" if key else self.describe()
        fields: dict[str, object] = {"bucket": self.bucket}
        if key is not None:
            fields["key"] = key
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            fields.update(code=code, status=status)
            if code in _MISSING_BUCKET_CODES:
                return StoreError(f"S3 bucket {self.bucket!r} does not exist ({action} {where})", **fields)
            if code in _NOT_FOUND_CODES:
                return ObjectNotFoundError(f"object {key} not found in {self.describe()}", **fields)
            if code in _ACCESS_CODES or status in (401, 403):
                return StoreAccessError(
                    f"access refused by S3 ({code or status}) on {action} {where}; check the credentials "
                    "and the bucket policy",
                    **fields,
                )
            if code in _TRANSIENT_CODES or status == 429 or status >= 500:
                return TransientStoreError(f"S3 {action} {where} failed: {code or status}", **fields)
            return StoreError(
                f"S3 {action} {where} failed: {code or status}: {error.get('Message', '')}", **fields
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            return StoreAccessError(f"no usable AWS credentials for {action} {where}: {exc}", **fields)
        if isinstance(
            exc, BotoConnectionError | HTTPClientError | ResponseStreamingError | IncompleteReadError
        ):
            return TransientStoreError(f"S3 {action} {where} failed: {exc}", **fields)
        if isinstance(exc, BotoCoreError):
            return StoreError(f"S3 {action} {where} failed: {exc}", **fields)
        return StoreError(f"S3 {action} {where} failed: {exc!r}", **fields)

    # --- the port -----------------------------------------------------------------------
    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def put(self, key: str, data: bytes) -> None:
        full = self._full(key)
        try:
            self._client.put_object(Bucket=self.bucket, Key=full, Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, key, "put") from exc

    def get(self, key: str) -> bytes:
        full = self._full(key)
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=full)
            data: bytes = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, key, "get") from exc
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        full = self._full(key)
        if offset < 0 or length < 0:
            raise InvalidInputError(f"invalid range offset={offset} length={length} for {key}", key=key)
        if length == 0:
            info = self.stat(key)
            if info is None:
                raise ObjectNotFoundError(f"object {key} not found in {self.describe()}", key=key)
            if offset > info.size:
                raise self._short(key, offset, length, 0)
            return b""
        try:
            response = self._client.get_object(
                Bucket=self.bucket, Key=full, Range=f"bytes={offset}-{offset + length - 1}"
            )
            data: bytes = response["Body"].read()
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                raise self._short(key, offset, length, 0) from exc
            raise self._translate(exc, key, "get_range") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, key, "get_range") from exc
        if status == 200 and not response.get("ContentRange"):
            # Some S3-compatible servers ignore Range and send the whole object.
            data = data[offset : offset + length]
        if len(data) != length:
            raise self._short(key, offset, length, len(data))
        return data

    def _short(self, key: str, offset: int, length: int, got: int) -> CorruptObjectError:
        return CorruptObjectError(
            f"object {key} in {self.describe()} is truncated: wanted {length} bytes at {offset}, got {got}",
            key=key,
        )

    def stat(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                return None
            raise self._translate(exc, key, "stat") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, key, "stat") from exc
        return ObjectInfo(key, int(response["ContentLength"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        base_len = len(self._base)
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._base + prefix):
                for item in page.get("Contents", ()):
                    full: str = item["Key"]
                    if full.endswith("/"):
                        continue  # "folder" markers made by consoles and some tools
                    yield ObjectInfo(full[base_len:], int(item["Size"]))
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, None, f"list {prefix!r} in") from exc

    def delete(self, key: str) -> None:
        full = self._full(key)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _NOT_FOUND_CODES:
                return
            raise self._translate(exc, key, "delete") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, key, "delete") from exc
