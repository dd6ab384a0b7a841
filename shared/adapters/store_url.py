"""Turn a repository location (a path or URL) into a ready, wrapped ObjectStore."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from shared.adapters.local.folder_store import FolderStore
from shared.adapters.store_wrappers import LimitedStore, RetryingStore, ThrottledStore
from shared.errors import InvalidInputError
from shared.ports.object_store import ObjectStore, check_key

SUPPORTED = "a local path, file:///path, s3://bucket[/prefix] or azure://container[/prefix]"

# S3 general-purpose bucket names; Azure container names.
_S3_BUCKET = re.compile(r"^(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_AZURE_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


def open_store(url: str, *, max_concurrent: int = 16, limit_mbps: float | None = None) -> ObjectStore:
    """Open the store at ``url`` and stack the standard wrappers on it.

    Accepted locations:

    * a plain path (relative or absolute) or ``file:///abs/path`` -> :class:`FolderStore`;
    * ``s3://bucket[/prefix]`` -> ``S3Store``; credentials, region and endpoint come from
      the standard AWS environment (``AWS_ENDPOINT_URL`` selects an S3-compatible server);
    * ``azure://container[/prefix]`` -> ``AzureBlobStore``; the account comes from
      ``AZURE_STORAGE_CONNECTION_STRING``.

    The result is ``RetryingStore(LimitedStore(adapter, max_concurrent))``, wrapped in a
    ``ThrottledStore`` when ``limit_mbps`` is given. ``limit_mbps`` is in megabytes per
    second with MB = 10**6 bytes (so 12.5 means 100 Mbit/s) and caps upload bandwidth
    (``put``) only. Opening does no I/O: a missing bucket or refused credentials show up
    on first use (an unset Azure connection string raises :class:`StoreAccessError`
    here). Anything else raises :class:`InvalidInputError` naming what is accepted.
    """
    if max_concurrent < 1:
        raise InvalidInputError(f"max_concurrent must be at least 1, got {max_concurrent}")
    if limit_mbps is not None and not limit_mbps > 0:
        raise InvalidInputError(f"the bandwidth limit must be positive, got {limit_mbps} MB/s")
    adapter = _adapter(url, max_connections=max(32, max_concurrent))
    store: ObjectStore = RetryingStore(LimitedStore(adapter, max_concurrent))
    if limit_mbps is not None:
        store = ThrottledStore(store, limit_mbps * 1_000_000)
    return store


def _adapter(url: str, *, max_connections: int) -> ObjectStore:
    if not url or not url.strip():
        raise InvalidInputError(f"empty repository location; expected {SUPPORTED}")
    if "://" not in url:
        return FolderStore(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise InvalidInputError(
            f"repository location {url!r} must not have a query or fragment; expected {SUPPORTED}", url=url
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidInputError(
                f"file URL {url!r} names host {parts.netloc!r}; only local paths (file:///path) work",
                url=url,
            )
        path = unquote(parts.path)
        if not path:
            raise InvalidInputError(f"file URL {url!r} has no path", url=url)
        return FolderStore(path)
    if scheme in ("s3", "azure"):
        name = parts.netloc
        prefix = _prefix(url, parts.path)
        if scheme == "s3":
            if not _S3_BUCKET.match(name):
                raise InvalidInputError(
                    f"{name!r} in {url!r} is not a valid S3 bucket name (3-63 characters: lowercase "
                    "letters, digits, dots, hyphens)",
                    url=url,
                )
            from shared.adapters.aws.s3_store import S3Store

            return S3Store(name, prefix, max_connections=max_connections)
        if not _AZURE_CONTAINER.match(name):
            raise InvalidInputError(
                f"{name!r} in {url!r} is not a valid Azure container name (3-63 characters: lowercase "
                "letters, digits, single hyphens)",
                url=url,
            )
        from shared.adapters.azure.blob_store import AzureBlobStore

        return AzureBlobStore(name, prefix, max_connections=max_connections)
    raise InvalidInputError(f"unsupported repository location {url!r}; expected {SUPPORTED}", url=url)


def _prefix(url: str, path: str) -> str:
    prefix = path.strip("/")
    if not prefix:
        return ""
    try:
        return check_key(prefix)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"invalid prefix {prefix!r} in {url!r}: use letters, digits and . _ - / only", url=url
        ) from exc
