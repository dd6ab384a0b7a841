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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.replication.source import FileSource, load_extents
from shared.adapters.store_url import open_store
from shared.api_client import ApiClient
from shared.errors import InvalidInputError, LifeboatError, RepositoryNotFoundError
from shared.repo.repository import Repository

log = logging.getLogger("lifeboat.node")


class JobCancelled(Exception):
    """Raised inside the pipeline's progress callback to stop a cancelled job."""


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended, as a runner decided: ``state`` is succeeded, failed or cancelled."""

    state: str
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class JobContext(Protocol):
    """What the agent gives a job runner."""

    def cancelled(self) -> bool:
        """True once the control plane asked to cancel this job (checked at each report)."""
        ...

    def progress(self, key: str, done: int, total: int) -> None:
        """Bytes done of one part (e.g. a disk); reported aggregated, at most every few seconds."""
        ...

    def message(self, text: str) -> None: ...

    def replicate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Run a replication (a migration's final incremental) and return its result."""
        ...


#: a runner for one job kind other than replication (recovery flows are wired in by the CLI)
JobRunner = Callable[[dict[str, Any], JobContext], JobOutcome]


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
        runners: dict[str, JobRunner] | None = None,
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
        self.runners = dict(runners or {})
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
                outcome = self._run_other(job)
                self._finish(job_id, outcome.state, result=outcome.result, error=outcome.error)
                return
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

    def _run_other(self, job: dict[str, Any]) -> JobOutcome:
        runner = self.runners.get(job["job_kind"])
        if runner is None:
            raise InvalidInputError(f"this node cannot run {job['job_kind']} jobs")
        context = _Context(self, job, _Reporter(self.client, job["id"], 0, self.progress_seconds))
        done = threading.Event()

        def keep_reporting() -> None:  # keeps the lease through long quiet stages (a guest booting)
            while not done.wait(self.progress_seconds):
                context.reporter.flush()

        beat = threading.Thread(target=keep_reporting, name=f"beat-{job['id']}", daemon=True)
        beat.start()
        try:
            return runner(job, context)
        finally:
            done.set()
            beat.join()
            context.reporter.flush()

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


class _Context:
    """A :class:`JobContext` over the agent's reporter."""

    def __init__(self, agent: NodeAgent, job: dict[str, Any], reporter: _Reporter) -> None:
        self.agent, self.job, self.reporter = agent, job, reporter
        self.totals: dict[str, int] = {}

    def cancelled(self) -> bool:
        return self.reporter.cancelled

    def progress(self, key: str, done: int, total: int) -> None:
        with self.reporter.lock:
            self.totals[key] = total
            self.reporter.total = sum(self.totals.values())
        with contextlib.suppress(JobCancelled):  # the runner decides how to stop (cancelled())
            self.reporter.for_disk(key)(done, total)

    def message(self, text: str) -> None:
        self.reporter.message = text[:500]
        self.reporter.flush()

    def replicate(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.agent._replicate({**self.job, "params": params})


class _Reporter:
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
