"""A node-local disk cache of immutable repository objects (index shards, generations, deltas).

Only objects whose bytes never change under their name are cached: content-addressed
shards, generation manifests and delta index objects (random names, written once). The
cache holds the sealed bytes exactly as stored, so what sits on the node's disk is as
encrypted as the bucket, and every read is verified again by the caller's decoder: a
damaged cache file is dropped (``discard``) and fetched anew, never trusted.

Size is bounded: when the cache grows past ``max_bytes`` the least recently used files
go first. Several processes may share one cache folder; writes are atomic renames.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path

from shared.errors import InvalidInputError

DEFAULT_MAX_BYTES = 2 << 30
_REPO_ID = re.compile(r"[0-9a-f]{32}")
_KEY = re.compile(r"[a-z]+(/[A-Za-z0-9._-]+)+")


class ObjectCache:
    """Cached object bytes under ``root/<repository id>/<object key>``."""

    def __init__(self, root: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise InvalidInputError("the cache size must be positive")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._added = 0
        self.hits = 0
        self.misses = 0

    def _path(self, repo_id: str, key: str) -> Path | None:
        """Where ``key`` is cached, or None for a name that could leave the cache folder
        (a repository's config and listings are not trusted with the node's file system)."""
        if not _REPO_ID.fullmatch(repo_id) or not _KEY.fullmatch(key) or ".." in key.split("/"):
            return None
        return self.root / repo_id / key

    def get(self, repo_id: str, key: str) -> bytes | None:
        path = self._path(repo_id, key)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            with self._lock:
                self.misses += 1
            return None
        try:
            os.utime(path)  # recency for eviction
        except OSError:
            pass
        with self._lock:
            self.hits += 1
        return data

    def put(self, repo_id: str, key: str, data: bytes) -> None:
        """Store best-effort: a full or read-only cache disk never fails the caller."""
        path = self._path(repo_id, key)
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            self._added += len(data)
            due = self._added > self.max_bytes // 8
            if due:
                self._added = 0
        if due:
            self.evict()

    def discard(self, repo_id: str, key: str) -> None:
        path = self._path(repo_id, key)
        if path is not None:
            path.unlink(missing_ok=True)

    def evict(self) -> int:
        """Remove least recently used files until the cache fits; return bytes removed."""
        files = []
        total = 0
        for path in self.root.rglob("*"):
            try:
                st = path.stat()
            except OSError:
                continue
            if path.is_file():
                files.append((st.st_mtime, st.st_size, path))
                total += st.st_size
        removed = 0
        for _, size, path in sorted(files):
            if total - removed <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            removed += size
        return removed


def cache_from_env(env: Mapping[str, str]) -> ObjectCache | None:
    """The node's cache: ``LIFEBOAT_CACHE_DIR`` (``off`` disables it), else
    ``$XDG_CACHE_HOME/lifeboat`` or ``~/.cache/lifeboat``; ``LIFEBOAT_CACHE_MB`` bounds it."""
    where = env.get("LIFEBOAT_CACHE_DIR")
    if where == "off":
        return None
    if not where:
        base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
        where = str(Path(base) / "lifeboat")
    try:
        max_bytes = int(env.get("LIFEBOAT_CACHE_MB") or DEFAULT_MAX_BYTES >> 20) << 20
    except ValueError as exc:
        raise InvalidInputError("LIFEBOAT_CACHE_MB must be a whole number of MiB") from exc
    return ObjectCache(where, max_bytes=max_bytes)
