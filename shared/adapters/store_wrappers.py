"""Wrappers around any ObjectStore; each is itself an ObjectStore.

Policy that adapters must not decide — retries, concurrency limits, bandwidth limits,
measurement — is stacked here by the composition root, e.g.::

    ThrottledStore(RetryingStore(LimitedStore(S3Store(...), 16)), 50e6)

All wrappers are thread-safe and delegate ``describe`` to the store they wrap.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from shared.errors import InvalidInputError, TransientStoreError
from shared.ports.object_store import ObjectInfo, ObjectStore

T = TypeVar("T")


class RetryingStore:
    """Retries calls that fail with :class:`TransientStoreError`; nothing else is retried.

    A call is tried at most ``attempts`` times. Before retry *n* (n = 0, 1, ...) it sleeps
    a uniformly random time in ``[0, min(max_delay, base_delay * 2**n)]`` ("full
    jitter"), so many clients backing off from the same throttled service spread out.
    After the last attempt the last :class:`TransientStoreError` propagates unchanged.

    Every port call is idempotent, so retrying a ``put`` or ``delete`` whose outcome is
    unknown is safe. ``list`` restarts the listing after a transient failure and skips
    keys it already yielded (it remembers them, which costs memory per key listed);
    retries are counted per restart, and a listing that makes progress gets a fresh
    budget.
    """

    def __init__(
        self,
        inner: ObjectStore,
        attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise InvalidInputError(f"attempts must be at least 1, got {attempts}")
        self.inner = inner
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()

    def _delay(self, retry: int) -> float:
        cap = min(self.max_delay, self.base_delay * (2**retry))
        with self._rng_lock:
            return self._rng.uniform(0.0, cap)

    def _call(self, fn: Callable[[], T]) -> T:
        for retry in range(self.attempts):
            try:
                return fn()
            except TransientStoreError:
                if retry + 1 >= self.attempts:
                    raise
                self._sleep(self._delay(retry))
        raise AssertionError("unreachable")  # pragma: no cover

    def describe(self) -> str:
        return self.inner.describe()

    def put(self, key: str, data: bytes) -> None:
        self._call(lambda: self.inner.put(key, data))

    def get(self, key: str) -> bytes:
        return self._call(lambda: self.inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._call(lambda: self.inner.get_range(key, offset, length))

    def stat(self, key: str) -> ObjectInfo | None:
        return self._call(lambda: self.inner.stat(key))

    def delete(self, key: str) -> None:
        self._call(lambda: self.inner.delete(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        seen: set[str] = set()
        retry = 0
        while True:
            try:
                for info in self.inner.list(prefix):
                    if info.key in seen:
                        continue
                    seen.add(info.key)
                    retry = 0
                    yield info
                return
            except TransientStoreError:
                if retry + 1 >= self.attempts:
                    raise
                self._sleep(self._delay(retry))
                retry += 1


class LimitedStore:
    """At most ``max_concurrent`` calls run in ``inner`` at once; the rest wait.

    ``list`` holds a slot only while it fetches the next item, never while the caller
    processes it, so a slow consumer cannot starve other callers and code that calls
    the store while iterating a listing cannot deadlock.
    """

    def __init__(self, inner: ObjectStore, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise InvalidInputError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self.inner = inner
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def describe(self) -> str:
        return self.inner.describe()

    def put(self, key: str, data: bytes) -> None:
        with self._slots:
            self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        with self._slots:
            return self.inner.get(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        with self._slots:
            return self.inner.get_range(key, offset, length)

    def stat(self, key: str) -> ObjectInfo | None:
        with self._slots:
            return self.inner.stat(key)

    def delete(self, key: str) -> None:
        with self._slots:
            self.inner.delete(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        items = iter(self.inner.list(prefix))
        while True:
            with self._slots:
                info = next(items, None)
            if info is None:
                return
            yield info


class ThrottledStore:
    """Limits the bytes ``put`` sends to ``bytes_per_second`` on average (token bucket).

    The bucket holds at most one second's worth of bytes, so after an idle spell at most
    ~1 s worth goes out at full speed. A put larger than the bucket is let through by
    borrowing: the bucket goes negative and the following puts wait until it refills.
    Each caller reserves its bytes under a lock and sleeps outside it, so concurrent
    callers queue fairly and the aggregate rate holds across threads. Reads are not
    throttled.
    """

    def __init__(
        self,
        inner: ObjectStore,
        bytes_per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not bytes_per_second > 0:
            raise InvalidInputError(f"bytes_per_second must be positive, got {bytes_per_second}")
        self.inner = inner
        self.bytes_per_second = float(bytes_per_second)
        self.capacity = float(bytes_per_second)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._last = clock()

    def _reserve(self, nbytes: int) -> float:
        """Take ``nbytes`` from the bucket; return how long the caller must wait first."""
        with self._lock:
            now = self._clock()
            elapsed = max(0.0, now - self._last)
            self._last = now
            self._tokens = min(self.capacity, self._tokens + elapsed * self.bytes_per_second)
            self._tokens -= nbytes
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self.bytes_per_second

    def describe(self) -> str:
        return self.inner.describe()

    def put(self, key: str, data: bytes) -> None:
        wait = self._reserve(len(data))
        if wait > 0:
            self._sleep(wait)
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(key, offset, length)

    def stat(self, key: str) -> ObjectInfo | None:
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


class CountingStore:
    """Counts what passes through: successful calls and the bytes they moved.

    ``puts``/``bytes_put`` count completed puts and their payload; ``gets``/``bytes_got``
    count completed ``get`` and ``get_range`` calls and the bytes returned. ``stats``,
    ``lists`` (listings started), ``deletes`` and ``errors`` (calls that raised) complete
    the picture. Place it below a RetryingStore to count attempts on the wire, above it
    to count logical operations.
    """

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.puts = 0
            self.bytes_put = 0
            self.gets = 0
            self.bytes_got = 0
            self.stats = 0
            self.lists = 0
            self.deletes = 0
            self.errors = 0

    def _error(self) -> None:
        with self._lock:
            self.errors += 1

    def describe(self) -> str:
        return self.inner.describe()

    def put(self, key: str, data: bytes) -> None:
        try:
            self.inner.put(key, data)
        except Exception:
            self._error()
            raise
        with self._lock:
            self.puts += 1
            self.bytes_put += len(data)

    def get(self, key: str) -> bytes:
        try:
            data = self.inner.get(key)
        except Exception:
            self._error()
            raise
        with self._lock:
            self.gets += 1
            self.bytes_got += len(data)
        return data

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            data = self.inner.get_range(key, offset, length)
        except Exception:
            self._error()
            raise
        with self._lock:
            self.gets += 1
            self.bytes_got += len(data)
        return data

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            info = self.inner.stat(key)
        except Exception:
            self._error()
            raise
        with self._lock:
            self.stats += 1
        return info

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._lock:
            self.lists += 1
        try:
            yield from self.inner.list(prefix)
        except Exception:
            self._error()
            raise

    def delete(self, key: str) -> None:
        try:
            self.inner.delete(key)
        except Exception:
            self._error()
            raise
        with self._lock:
            self.deletes += 1
