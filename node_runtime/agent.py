"""The node agent: register, heartbeat, pull jobs through the API, run them, report.

It never talks to the metadata store or queue directly; everything goes through the REST
API with the node's scoped token, so a node needs network access to the API and to its
repositories only. Concurrency: at most ``capacity`` disks replicate at once across all
jobs. A job's node reports progress at least every ``progress_seconds``; the API's answer
says whether the job is being cancelled, and the agent stops that job at its next block.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.replication.source import FileSource, load_extents
from shared.adapters.store_url import open_store
from shared.api_client import ApiClient
from shared.errors import InvalidInputError, LifeboatError, RepositoryNotFoundError
from shared.repo.repository import Repository

log = logging.getLogger("lifeboat.node")


class JobCancelled(Exception):
    """Raised inside the pipeline's progress callback to stop a cancelled job."""


def resolve_secret(ref: str | None) -> str | None:
    """A repository passphrase from a credentials reference: ``env:NAME`` or ``file:/path``;
    ``None`` falls back to LIFEBOAT_PASSWORD (and to no encryption when that is unset)."""
    if ref is None:
        return os.environ.get("LIFEBOAT_PASSWORD")
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None:
            raise InvalidInputError(f"credentials reference {ref}: variable {rest} is not set on this node")
        return value
    if scheme == "file":
        return Path(rest).read_text().strip()
    raise InvalidInputError(
        f"credentials reference {ref!r} is not supported on this node (use env: or file:)"
    )


def open_repository(url: str, secret: str | None, *, limit_mbps: float | None) -> Repository:
    """Open the site's repository, creating it on first use."""
    store = open_store(url, limit_mbps=limit_mbps)
    try:
        return Repository.open(store, lambda: secret or "")
    except RepositoryNotFoundError:
        log.info("initialising repository at %s", store.describe())
        return Repository.init(store, secret)


class NodeAgent:
    def __init__(
        self,
        client: ApiClient,
        *,
        name: str,
        site_id: str,
        capacity: int = 40,
        poll_seconds: float = 2.0,
        heartbeat_seconds: float = 15.0,
        progress_seconds: float = 2.0,
        software_version: str = "0.1.0",
    ) -> None:
        self.client = client
        self.name = name
        self.site_id = site_id
        self.capacity = capacity
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.progress_seconds = progress_seconds
        self.software_version = software_version
        self.disk_slots = threading.BoundedSemaphore(capacity)
        self.running: dict[str, threading.Thread] = {}
        self.node_id = ""

    def register(self) -> str:
        node = self.client.register_node(
            name=self.name,
            site_id=self.site_id,
            capacity=self.capacity,
            software_version=self.software_version,
        )
        self.node_id = node["id"]
        log.info("registered node %s", self.node_id)
        return self.node_id

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set: heartbeat, claim work while there is capacity."""
        self.register()
        last_beat = 0.0
        while not stop.is_set():
            self.running = {k: t for k, t in self.running.items() if t.is_alive()}
            try:
                if time.monotonic() - last_beat >= self.heartbeat_seconds:
                    self.client.heartbeat(self.node_id, len(self.running))
                    last_beat = time.monotonic()
                if len(self.running) < self.capacity:
                    job = self.client.claim(self.node_id)
                    if job is not None:
                        thread = threading.Thread(
                            target=self.run_job, args=(job,), name=f"job-{job['id']}", daemon=True
                        )
                        self.running[job["id"]] = thread
                        thread.start()
                        continue
            except LifeboatError as exc:
                log.warning("control plane call failed: %s", exc)
            stop.wait(self.poll_seconds)

    # --- one job -----------------------------------------------------------------------------------
    def run_job(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        log.info("running job %s (%s)", job_id, job["job_kind"])
        try:
            if job["job_kind"] != "replication":
                raise InvalidInputError(
                    f"{job['job_kind']} jobs need the recovery flow, which this node version does not run yet"
                )
            result = self._replicate(job)
        except JobCancelled:
            self._finish(job_id, "cancelled", error="cancelled by request")
        except LifeboatError as exc:
            self._finish(job_id, "failed", error=str(exc))
        except Exception as exc:
            log.exception("job %s crashed", job_id)
            self._finish(job_id, "failed", error=f"node error: {type(exc).__name__}: {exc}")
        else:
            self._finish(job_id, "succeeded", result=result)

    def _finish(
        self, job_id: str, state: str, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        for attempt in range(5):
            try:
                self.client.complete(job_id, state, result=result, error=error)
                return
            except LifeboatError as exc:
                log.warning("reporting job %s as %s failed (%s); retrying", job_id, state, exc)
                time.sleep(min(30, 2**attempt))

    def _replicate(self, job: dict[str, Any]) -> dict[str, Any]:
        params = job["params"]
        repo = open_repository(
            params["repository_url"], resolve_secret(params.get("credentials_ref")),
            limit_mbps=params.get("bandwidth_limit_mbps"),
        )  # fmt: skip
        disks = [(m["machine_id"], d) for m in params["machines"] for d in m["disks"]]
        total = 0
        for _, d in disks:
            with contextlib.suppress(OSError):
                total += os.path.getsize(d["source"]) if not d["source"].startswith("/dev/") else 0
        reporter = _Reporter(self.client, job["id"], total, self.progress_seconds)
        results: dict[str, list[dict[str, Any]]] = {}
        times: dict[str, datetime] = {}

        def one(machine_id: str, disk: dict[str, Any]) -> None:
            with self.disk_slots:
                reporter.check()
                extents = load_extents(disk["changed_extents"]) if disk.get("changed_extents") else None
                opts = ReplicationOptions(block_size=disk.get("block_size"), changed_extents=extents,
                                          source_label=disk["source"], tags={"job": job["id"]})  # fmt: skip
                with FileSource(disk["source"]) as src:
                    point = replicate(
                        repo, disk["disk_id"], src, opts, progress=reporter.for_disk(disk["disk_id"])
                    )
                results.setdefault(machine_id, []).append({
                    "disk_id": disk["disk_id"], "point_id": point.id, "disk_size": point.disk_size,
                    "bytes_new": point.stats.bytes_new_raw})  # fmt: skip
                times[machine_id] = max(times.get(machine_id, point.time), point.time)

        with ThreadPoolExecutor(max(1, min(len(disks), self.capacity))) as pool:
            for fut in [pool.submit(one, m, d) for m, d in disks]:
                fut.result()
        reporter.flush()
        return {
            "machines": [
                {"machine_id": m, "time": times[m].astimezone(UTC).isoformat(), "disks": results[m]}
                for m in results
            ]
        }


class _Reporter:
    """Aggregates per-disk progress and reports it at most every ``interval`` seconds."""

    def __init__(self, client: ApiClient, job_id: str, total: int, interval: float) -> None:
        self.client, self.job_id, self.total, self.interval = client, job_id, total, interval
        self.done: dict[str, int] = {}
        self.lock = threading.Lock()
        self.last = 0.0
        self.started = time.monotonic()
        self.cancelled = False

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
            )
            if answer.get("state") == "cancelling":
                self.cancelled = True
        except LifeboatError as exc:
            log.warning("progress report for %s failed: %s", self.job_id, exc)
