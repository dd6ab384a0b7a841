"""A job's progress as the node reports it: per-disk bytes summed, sent at most every few seconds,
and the control plane's answer read back for a cancellation."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shared.api_client import ApiClient
from shared.errors import LifeboatError

log = logging.getLogger("lifeboat.node")


class JobCancelled(Exception):
    """Raised inside the pipeline's progress callback to stop a cancelled job."""


class ProgressReporter:
    """Aggregates per-disk progress and reports it at most every ``interval`` seconds."""

    def __init__(self, client: ApiClient, job_id: str, total: int, interval: float) -> None:
        self.client, self.job_id, self.total, self.interval = client, job_id, total, interval
        self.done: dict[str, int] = {}
        self.lock = threading.Lock()
        self.last = 0.0
        self.started = time.monotonic()
        self.cancelled = False
        self.message = ""

    def check(self) -> None:
        if self.cancelled:
            raise JobCancelled()

    def for_disk(self, disk_id: str) -> Callable[[int, int], None]:
        def update(done: int, _total: int) -> None:
            with self.lock:
                self.done[disk_id] = done
                due = time.monotonic() - self.last >= self.interval
                if due:
                    self.last = time.monotonic()
            if due:
                self.flush()
            self.check()

        return update

    def flush(self) -> None:
        done = sum(self.done.values())
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 and self.total > done else None
        try:
            answer = self.client.progress(
                self.job_id,
                bytes_done=done,
                bytes_total=max(self.total, done),
                rate_bps=rate,
                eta_seconds=eta,
                message=self.message,
            )
            if answer.get("state") == "cancelling":
                self.cancelled = True
        except LifeboatError as exc:
            log.warning("progress report for %s failed: %s", self.job_id, exc)
