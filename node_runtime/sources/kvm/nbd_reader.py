"""An NBD export through libnbd (Debian ``python3-libnbd``): data, holes and dirty bitmaps.

Reads serve replication; writes (``pwrite``, ``zero``, ``flush``) serve failback, which
writes the blocks that differ into an origin disk exported writable.

One libnbd handle per reading thread (a handle serialises its requests), all closed by
:meth:`NbdExport.close`. Extent maps come from NBD block status: ``base:allocation``
(what holds data) and ``qemu:dirty-bitmap:NAME`` (what a bitmap marks dirty).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from shared.errors import SourceError

ALLOCATION = "base:allocation"
STATE_ZERO = 2  # base:allocation: the range reads as zeros
DIRTY = 1  # qemu:dirty-bitmap: the range is dirty
_STATUS_CHUNK = 1 << 30


def dirty_context(bitmap: str) -> str:
    return f"qemu:dirty-bitmap:{bitmap}"


def _nbd() -> Any:
    try:
        import nbd  # Debian python3-libnbd (tools/debian_modules.py makes it importable)
    except ImportError as exc:
        raise SourceError("reading KVM disks needs libnbd's Python binding: apt-get install python3-libnbd "
                          "and run `make deps`") from exc  # fmt: skip
    return nbd


class NbdExport:
    """One export on a unix socket, read-only."""

    def __init__(self, socket_path: str, name: str, contexts: tuple[str, ...] = ()) -> None:
        self.socket_path, self.name, self.contexts = socket_path, name, (ALLOCATION, *contexts)
        self._local = threading.local()
        self._handles: list[Any] = []
        self._lock = threading.Lock()
        self.size = self._handle().get_size()

    def _handle(self) -> Any:
        h = getattr(self._local, "handle", None)
        if h is not None:
            return h
        nbd = _nbd()
        h = nbd.NBD()
        try:
            for c in self.contexts:
                h.add_meta_context(c)
            h.set_export_name(self.name)
            h.connect_unix(self.socket_path)
        except nbd.Error as exc:
            _drop(h)
            raise SourceError(f"cannot open NBD export {self.name} on {self.socket_path}: {exc}",
                              socket=self.socket_path) from exc  # fmt: skip
        with self._lock:
            self._handles.append(h)
        self._local.handle = h
        return h

    def pread(self, offset: int, length: int) -> bytes:
        try:
            return bytes(self._handle().pread(length, offset))
        except _nbd().Error as exc:
            raise SourceError(f"NBD read of {length} bytes at {offset} from {self.name} failed: {exc}") from exc

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        try:
            self._handle().pwrite(bytes(data), offset)
        except _nbd().Error as exc:
            raise SourceError(f"NBD write of {len(data)} bytes at {offset} to {self.name} failed: {exc}") from exc

    def zero(self, offset: int, length: int) -> None:
        try:
            self._handle().zero(length, offset)
        except _nbd().Error as exc:
            raise SourceError(f"NBD zero of {length} bytes at {offset} on {self.name} failed: {exc}") from exc

    def flush(self) -> None:
        """Make every write so far durable (one flush per connection that wrote)."""
        with self._lock:
            handles = list(self._handles)
        try:
            for h in handles:
                h.flush()
        except _nbd().Error as exc:
            raise SourceError(f"NBD flush of {self.name} failed: {exc}") from exc

    def extents(self, context: str, keep: Callable[[int], bool]) -> list[tuple[int, int]]:
        """Merged (offset, length) ranges whose ``context`` flags satisfy ``keep``."""
        h = self._handle()
        if not h.can_meta_context(context):
            raise SourceError(f"NBD export {self.name} does not offer {context}", context=context)
        out: list[tuple[int, int]] = []
        offset = 0
        while offset < self.size:
            seen: list[tuple[int, int]] = []

            def collect(meta: str, start: int, entries: list[int], _err: Any, seen: list = seen) -> int:
                if meta == context:
                    pos = start
                    for i in range(0, len(entries), 2):
                        if keep(entries[i + 1]):
                            _append(out, pos, entries[i])
                        pos += entries[i]
                    seen.append((start, pos - start))
                return 0

            try:
                h.block_status(min(_STATUS_CHUNK, self.size - offset), offset, collect)
            except _nbd().Error as exc:
                raise SourceError(f"NBD block status of {self.name} at {offset} failed: {exc}") from exc
            advanced = max((s + n for s, n in seen), default=offset)
            if advanced <= offset:
                raise SourceError(f"NBD block status of {self.name} made no progress at {offset}")
            offset = min(advanced, self.size)
        return [(o, min(n, self.size - o)) for o, n in out if o < self.size]

    def close(self) -> None:
        with self._lock:
            handles, self._handles = self._handles, []
        for h in handles:
            try:
                h.shutdown()
            except _nbd().Error:  # the server may be gone already
                pass
            _drop(h)


def _drop(handle: Any) -> None:
    """Close a libnbd handle now (libnbd < 1.16 has no close(): the handle closes when freed)."""
    close = getattr(handle, "close", None)
    if close is not None:
        close()


def _append(out: list[tuple[int, int]], offset: int, length: int) -> None:
    if out and out[-1][0] + out[-1][1] == offset:
        out[-1] = (out[-1][0], out[-1][1] + length)
    else:
        out.append((offset, length))
