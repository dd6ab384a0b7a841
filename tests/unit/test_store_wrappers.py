"""Unit tests for shared.adapters.store_wrappers, on a small in-memory fake store."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest

from shared.adapters.store_wrappers import CountingStore, LimitedStore, RetryingStore, ThrottledStore
from shared.errors import (
    InvalidInputError,
    ObjectNotFoundError,
    StoreAccessError,
    TransientStoreError,
)
from shared.ports.object_store import ObjectInfo, ObjectStore, check_key


class FakeStore:
    """Dict-backed ObjectStore. ``failures[op]`` is a list of errors raised, in order,
    by the next calls of ``op`` ("put", "get", ..., "list", or "list-item" to fail a
    listing after its first item). ``calls`` counts calls per op."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.failures: dict[str, list[Exception]] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _enter(self, op: str) -> None:
        with self._lock:
            self.calls[op] = self.calls.get(op, 0) + 1
            pending = self.failures.get(op)
            error = pending.pop(0) if pending else None
        if error is not None:
            raise error

    def describe(self) -> str:
        return "fake://"

    def put(self, key: str, data: bytes) -> None:
        self._enter("put")
        self.objects[check_key(key)] = bytes(data)

    def get(self, key: str) -> bytes:
        self._enter("get")
        try:
            return self.objects[key]
        except KeyError:
            raise ObjectNotFoundError(f"object {key} not found", key=key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._enter("get_range")
        return self.get(key)[offset : offset + length]

    def stat(self, key: str) -> ObjectInfo | None:
        self._enter("stat")
        data = self.objects.get(key)
        return None if data is None else ObjectInfo(key, len(data))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._enter("list")
        for n, key in enumerate(sorted(k for k in self.objects if k.startswith(prefix))):
            if n == 1:
                self._enter("list-item")
            yield ObjectInfo(key, len(self.objects[key]))

    def delete(self, key: str) -> None:
        self._enter("delete")
        self.objects.pop(key, None)


def transient(n: int) -> list[Exception]:
    return [TransientStoreError(f"flaky {i}") for i in range(n)]


def test_fake_and_wrappers_are_object_stores() -> None:
    fake = FakeStore()
    for store in (
        fake,
        RetryingStore(fake),
        LimitedStore(fake, 2),
        ThrottledStore(fake, 1000),
        CountingStore(fake),
    ):
        assert isinstance(store, ObjectStore)
        assert store.describe() == "fake://"


# --- RetryingStore ---------------------------------------------------------------------------------------
def test_retry_recovers_from_transient_errors() -> None:
    fake, sleeps = FakeStore(), list[float]()
    store = RetryingStore(fake, attempts=5, sleep=sleeps.append)
    fake.failures["put"] = transient(3)
    store.put("k", b"v")
    assert fake.objects["k"] == b"v"
    assert fake.calls["put"] == 4
    assert len(sleeps) == 3


def test_retry_gives_up_after_n_attempts_and_reraises_the_last_error() -> None:
    fake, sleeps = FakeStore(), list[float]()
    store = RetryingStore(fake, attempts=4, sleep=sleeps.append)
    errors = transient(10)
    fake.failures["get"] = list(errors)
    with pytest.raises(TransientStoreError) as info:
        store.get("k")
    assert info.value is errors[3]
    assert fake.calls["get"] == 4
    assert len(sleeps) == 3


@pytest.mark.parametrize(
    "error",
    [
        ObjectNotFoundError("gone", key="k"),
        StoreAccessError("denied"),
        InvalidInputError("bad"),
        ValueError("bug"),
    ],
)
def test_retry_does_not_retry_other_errors(error: Exception) -> None:
    fake, sleeps = FakeStore(), list[float]()
    store = RetryingStore(fake, attempts=5, sleep=sleeps.append)
    fake.failures["stat"] = [error]
    with pytest.raises(type(error)) as info:
        store.stat("k")
    assert info.value is error
    assert fake.calls["stat"] == 1
    assert sleeps == []


def test_retry_backoff_is_full_jitter_exponential_and_capped() -> None:
    sleeps: list[float] = []
    fake = FakeStore()
    store = RetryingStore(
        fake, attempts=8, base_delay=0.5, max_delay=4.0, sleep=sleeps.append, rng=random.Random(7)
    )
    fake.failures["delete"] = transient(7)
    store.delete("k")
    caps = [min(4.0, 0.5 * 2**n) for n in range(7)]
    assert len(sleeps) == 7
    assert all(0.0 <= s <= cap for s, cap in zip(sleeps, caps, strict=True))
    # The jitter draws the whole range, not just the top.
    many: list[float] = []
    store = RetryingStore(fake, attempts=2, base_delay=1.0, sleep=many.append, rng=random.Random(1))
    for _ in range(200):
        fake.failures["get_range"] = transient(1)
        fake.objects["k"] = b"abc"
        store.get_range("k", 0, 1)
    assert min(many) < 0.1 and max(many) > 0.9


def test_retry_covers_every_operation() -> None:
    fake = FakeStore()
    store = RetryingStore(fake, attempts=2, sleep=lambda _: None)
    for op in ("put", "get", "get_range", "stat", "delete", "list"):
        fake.failures[op] = transient(1)
    store.put("k", b"v")
    assert store.get("k") == b"v"
    assert store.get_range("k", 1, 0) == b""
    assert store.stat("k") == ObjectInfo("k", 1)
    assert [i.key for i in store.list()] == ["k"]
    store.delete("k")
    assert fake.objects == {}


def test_retry_list_restarts_without_duplicates() -> None:
    fake = FakeStore()
    for key in ("a", "b", "c"):
        fake.objects[key] = b"x"
    fake.failures["list-item"] = transient(2)
    store = RetryingStore(fake, attempts=3, sleep=lambda _: None)
    assert [i.key for i in store.list()] == ["a", "b", "c"]
    assert fake.calls["list"] == 3


def test_retry_list_gives_up() -> None:
    fake = FakeStore()
    fake.objects.update(a=b"", b=b"")
    fake.failures["list"] = transient(3)
    store = RetryingStore(fake, attempts=3, sleep=lambda _: None)
    with pytest.raises(TransientStoreError):
        list(store.list())


def test_retry_rejects_zero_attempts() -> None:
    with pytest.raises(InvalidInputError):
        RetryingStore(FakeStore(), attempts=0)


# --- LimitedStore -------------------------------------------------------------------------------------------
class SlowStore(FakeStore):
    """Records the peak number of calls in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.peak = 0
        self._count_lock = threading.Lock()

    def _enter(self, op: str) -> None:
        with self._count_lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.002)
        with self._count_lock:
            self.active -= 1
        super()._enter(op)


def test_limited_store_never_exceeds_concurrency() -> None:
    inner = SlowStore()
    store = LimitedStore(inner, 3)

    def work(t: int) -> None:
        for i in range(10):
            store.put(f"k{t}-{i}", b"x")
            store.get(f"k{t}-{i}")
            store.stat(f"k{t}-{i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert inner.peak == 3  # reached the limit, never more
    assert len(inner.objects) == 120


def test_limited_store_list_does_not_hold_a_slot_between_items() -> None:
    fake = FakeStore()
    fake.objects.update(a=b"1", b=b"2")
    store = LimitedStore(fake, 1)
    seen = []
    for info in store.list():
        seen.append((info.key, store.get(info.key)))  # would deadlock if list held the slot
    assert seen == [("a", b"1"), ("b", b"2")]


def test_limited_store_releases_slots_on_errors() -> None:
    fake = FakeStore()
    store = LimitedStore(fake, 1)
    for _ in range(3):
        with pytest.raises(ObjectNotFoundError):
            store.get("missing")
    store.put("k", b"v")


def test_limited_store_rejects_zero() -> None:
    with pytest.raises(InvalidInputError):
        LimitedStore(FakeStore(), 0)


# --- ThrottledStore --------------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_throttle_allows_one_second_burst_then_paces() -> None:
    clock = FakeClock()
    store = ThrottledStore(FakeStore(), 1000, clock=clock, sleep=clock.sleep)
    store.put("a", b"x" * 1000)  # the full bucket: no wait
    assert clock.sleeps == []
    store.put("b", b"x" * 500)  # bucket empty: wait for 500 bytes
    assert clock.sleeps == [pytest.approx(0.5)]
    store.put("c", b"x" * 250)
    assert clock.sleeps[-1] == pytest.approx(0.25)


def test_throttle_average_rate_over_many_puts() -> None:
    clock = FakeClock()
    store = ThrottledStore(FakeStore(), 10_000, clock=clock, sleep=clock.sleep)
    start = clock.now
    for i in range(100):
        store.put(f"k{i}", b"x" * 1000)  # 100 kB at 10 kB/s, 1 s of burst
    assert clock.now - start == pytest.approx(9.0)


def test_throttle_burst_is_capped_at_one_second_after_idle() -> None:
    clock = FakeClock()
    store = ThrottledStore(FakeStore(), 1000, clock=clock, sleep=clock.sleep)
    store.put("a", b"x" * 1000)
    clock.now += 3600  # idle for an hour: still only one second's worth banked
    store.put("b", b"x" * 1000)
    assert clock.sleeps == []
    store.put("c", b"x" * 1000)
    assert clock.sleeps == [pytest.approx(1.0)]


def test_throttle_large_put_borrows_and_later_puts_wait() -> None:
    clock = FakeClock()
    store = ThrottledStore(FakeStore(), 1000, clock=clock, sleep=clock.sleep)
    store.put("big", b"x" * 3000)  # 2000 bytes beyond the bucket
    assert clock.sleeps == [pytest.approx(2.0)]
    store.put("next", b"x" * 1000)
    assert clock.sleeps[-1] == pytest.approx(1.0)


def test_throttle_does_not_limit_reads() -> None:
    clock = FakeClock()
    fake = FakeStore()
    fake.objects["k"] = b"x" * 10_000
    store = ThrottledStore(fake, 10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        store.get("k")
        store.get_range("k", 0, 5000)
    assert clock.sleeps == []


def test_throttle_is_thread_safe_and_holds_the_aggregate_rate() -> None:
    lock = threading.Lock()
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        with lock:
            clock.sleeps.append(seconds)

    store = ThrottledStore(FakeStore(), 1000, clock=clock, sleep=sleep)
    threads = [threading.Thread(target=lambda t=t: store.put(f"k{t}", b"x" * 100)) for t in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The clock never moved: 5000 bytes against a 1000-byte bucket means the waits,
    # each reserved in turn, step by 0.1 s up to 4 s.
    assert sorted(clock.sleeps) == pytest.approx([0.1 * n for n in range(1, 41)])


def test_throttle_rejects_non_positive_rates() -> None:
    for rate in (0, -1):
        with pytest.raises(InvalidInputError):
            ThrottledStore(FakeStore(), rate)


# --- CountingStore ----------------------------------------------------------------------------------------------
def test_counting_store_counts_bytes_and_requests() -> None:
    fake = FakeStore()
    store = CountingStore(fake)
    store.put("a", b"12345")
    store.put("b", b"")
    assert store.get("a") == b"12345"
    assert store.get_range("a", 1, 2) == b"23"
    store.stat("a")
    assert len(list(store.list())) == 2
    store.delete("b")
    assert (store.puts, store.bytes_put) == (2, 5)
    assert (store.gets, store.bytes_got) == (2, 7)
    assert (store.stats, store.lists, store.deletes, store.errors) == (1, 1, 1, 0)
    with pytest.raises(ObjectNotFoundError):
        store.get("b")
    assert (store.gets, store.errors) == (2, 1)
    store.reset()
    assert (store.puts, store.bytes_put, store.gets, store.bytes_got, store.errors) == (0, 0, 0, 0, 0)


def test_counting_store_is_thread_safe() -> None:
    store = CountingStore(FakeStore())

    def work(t: int) -> None:
        for i in range(200):
            store.put(f"k{t}-{i}", b"abc")
            store.get(f"k{t}-{i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (store.puts, store.bytes_put, store.gets, store.bytes_got) == (1600, 4800, 1600, 4800)


def test_counting_below_retrying_counts_attempts() -> None:
    fake = FakeStore()
    fake.failures["put"] = transient(2)
    counting = CountingStore(fake)
    store = RetryingStore(counting, attempts=3, sleep=lambda _: None)
    store.put("k", b"1234")
    assert (counting.puts, counting.bytes_put, counting.errors) == (1, 4, 2)
