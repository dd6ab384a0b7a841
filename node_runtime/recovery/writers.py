"""Where a reconstructed disk goes: the BlockWriter port, a raw-file writer, and a bounded pool.

:func:`node_runtime.recovery.reconstruct.reconstruct` tells a writer about every byte of
a point exactly once: data through ``write``, holes (all-zero blocks) through ``skip``.
Writers for cloud targets (an Azure page blob, an EBS snapshot) live next to this module.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from shared.errors import TargetError

log = logging.getLogger(__name__)


class BlockWriter(Protocol):
    """The target of a reconstruction.

    Contract:

    * ``write(offset, data)`` is called from several threads at once; each byte of the
      disk is written at most once, and ``offset`` is a multiple of the point's block
      size. ``data`` may be a memoryview the writer must not keep after it returns
      unless it copies it (bytes objects it may keep). A writer may return before the
      data is durable and may raise a :class:`TargetError` from an earlier failed write.
    * ``skip(offset, length)`` announces a hole: those bytes must read back as zeros and
      will never be written. Called before any ``write``, from one thread. Writers whose
      target starts zeroed ignore it.
    * ``finish()`` makes everything durable and seals the target; it raises
      :class:`TargetError` if any write failed. Called once, after the last write.
    * ``abort()`` releases or deletes what the writer created. Best effort and
      idempotent; it never raises (failures are logged). Called instead of ``finish`` or
      after ``finish`` raised.
    """

    def write(self, offset: int, data: bytes | memoryview) -> None: ...

    def skip(self, offset: int, length: int) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...


class BoundedPool:
    """A thread pool whose ``submit`` blocks while ``limit`` tasks are queued or running.

    The first failure is kept; ``check()`` and ``wait()`` re-raise it, and later
    submissions are refused with it, so a writer fails fast instead of queueing work
    behind a dead target.
    """

    def __init__(self, threads: int, *, limit: int | None = None, name: str = "writer") -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(limit or 2 * threads)
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def submit(self, fn: Callable[[], None]) -> None:
        self.check()
        self._slots.acquire()
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            exc = None if future.cancelled() else future.exception()
            if exc is not None and self._error is None:
                self._error = exc
        self._slots.release()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def wait(self) -> None:
        """Wait for every submitted task; raise the first failure."""
        self._pool.shutdown(wait=True)
        self.check()

    def cancel(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _open_target(path: str, size: int) -> tuple[int, bool]:
    """Open the target; a file is truncated to ``size`` (all holes), a device must be big enough."""
    try:
        st = os.stat(path)
        is_device = stat.S_ISBLK(st.st_mode)
    except FileNotFoundError:
        is_device = False
    try:
        if is_device:
            fd = os.open(path, os.O_WRONLY)
            dev_size = os.lseek(fd, 0, os.SEEK_END)
            if dev_size < size:
                os.close(fd)
                raise TargetError(f"{path} holds {dev_size} bytes; the point needs {size}", path=path)
            return fd, True
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(fd, size)
        return fd, False
    except OSError as exc:
        raise TargetError(f"cannot prepare target {path}: {exc.strerror}", path=path) from exc


class FileWriter:
    """A raw image file (created or truncated to ``size``, holes stay sparse) or a block device.

    On a device, ``skip`` zeroes the hole (a device keeps old contents). Writes go
    straight to the file with ``pwrite``; ``finish`` fsyncs. ``abort`` closes the file and
    leaves it (a half-written disk is useful evidence; the caller decides).
    """

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.fd, self.is_device = _open_target(path, size)
        self._closed = False

    def write(self, offset: int, data: bytes | memoryview) -> None:
        start, length = offset, len(data)
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                view, offset = view[n:], offset + n
            # Start write-back now (DONTNEED on dirty pages queues them for writing), so
            # the disk works while we decode, and the final fsync has little left to do.
            os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            raise TargetError(
                f"write to {self.path} failed at {offset}: {exc.strerror}", path=self.path
            ) from exc

    def skip(self, offset: int, length: int) -> None:
        if self.is_device:
            zeros = bytes(min(length, 4 << 20))
            end = offset + length
            while offset < end:
                n = min(len(zeros), end - offset)
                self.write(offset, memoryview(zeros)[:n])
                offset += n

    def finish(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise TargetError(f"cannot finish writing {self.path}: {exc.strerror}", path=self.path) from exc
        finally:
            self._close()

    def abort(self) -> None:
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                os.close(self.fd)
            except OSError as exc:  # pragma: no cover - close of a valid fd
                log.warning("closing %s failed: %s", self.path, exc)
