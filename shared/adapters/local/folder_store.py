"""ObjectStore on a local folder: one file per object, atomic by rename."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shared.errors import (
    CorruptObjectError,
    ObjectNotFoundError,
    StoreAccessError,
    StoreError,
    StoreFullError,
)
from shared.ports.object_store import ObjectInfo, check_key


def _translate(exc: OSError, key: str) -> StoreError:
    if exc.errno in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR):  # a folder is not an object
        return ObjectNotFoundError(f"object {key} not found", key=key)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFullError(f"no space left writing {key}", key=key)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreAccessError(f"permission denied on {key}: {exc.strerror}", key=key)
    return StoreError(f"I/O error on {key}: {exc.strerror}", key=key)


class FolderStore:
    """Objects as files under ``root``. Writes go to a temp file, fsync, then rename."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).absolute()
        self._fsync = fsync

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def describe(self) -> str:
        return f"file://{self.root}"

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp_name = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp_name, path)
            tmp_name = None
        except OSError as exc:
            raise _translate(exc, key) from exc
        finally:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise _translate(exc, key) from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                data = os.pread(f.fileno(), length, offset)
        except OSError as exc:
            raise _translate(exc, key) from exc
        if len(data) != length:
            raise CorruptObjectError(
                f"object {key} is truncated: wanted {length} bytes at {offset}, got {len(data)}",
                key=key,
            )
        return data

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _translate(exc, key) from exc
        return ObjectInfo(key, st.st_size) if stat.S_ISREG(st.st_mode) else None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the folder that can hold the prefix, then filter by the full prefix.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith(".tmp-"):
                    continue
                full = os.path.join(dirpath, name)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    try:
                        yield ObjectInfo(key, os.stat(full).st_size)
                    except FileNotFoundError:
                        continue

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise _translate(exc, key) from exc
