"""The node agent: register, heartbeat, pull jobs through the API, run them, report.

It never talks to the metadata store or queue directly; everything goes through the REST
API with the node's scoped token, so a node needs network access to the API and to its
repositories only. Concurrency: at most ``capacity`` disks replicate at once across all
jobs. A job's node reports progress at least every ``progress_seconds``; the API's answer
says whether the job is being cancelled, and the agent stops that job at its next block.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from node_runtime.credentials import NodeIdentity
from node_runtime.progress import JobCancelled, ProgressReporter
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.discovery import discover_site
from node_runtime.sources.port import MachineSnapshot
from node_runtime.sources.resolve import SourcePolicy, machine_source
from node_runtime.sources.secrets import resolve_secret
from node_runtime.sources.vsphere.sweep import sweep_site
from shared.adapters.store_url import open_store
from shared.api_client import ApiClient
from shared.errors import (
    InvalidInputError,
    LifeboatError,
    PermissionDeniedError,
    RepositoryNotFoundError,
)
from shared.repo.object_cache import cache_from_env
from shared.repo.repository import Repository

log = logging.getLogger("lifeboat.node")


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

    @property
    def source_policy(self) -> SourcePolicy:
        """What this node may read and write (failback writes origin disks under it)."""
        ...


#: a runner for one job kind other than replication (recovery flows are wired in by the CLI)
JobRunner = Callable[[dict[str, Any], JobContext], JobOutcome]


def open_repository(url: str, secret: str | None, *, limit_mbps: float | None) -> Repository:
    """Open the site's repository, creating it on first use."""
    store = open_store(url, limit_mbps=limit_mbps)
    try:
        repo = Repository.open(store, lambda: secret or "")
    except RepositoryNotFoundError:
        log.info("initialising repository at %s", store.describe())
        repo = Repository.init(store, secret)
    repo.cache = cache_from_env(os.environ)  # index shards and deltas, fetched once per node
    return repo


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
        source_policy: SourcePolicy | None = None,
        identity: NodeIdentity | None = None,
    ) -> None:
        self.client = client
        self.identity = identity or NodeIdentity(client)  # its credential: enrollment, rotation
        self.name = name
        self.site_id = site_id
        self.capacity = capacity
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.progress_seconds = progress_seconds
        self.software_version = software_version
        self.disk_slots = threading.BoundedSemaphore(capacity)
        self.running: dict[str, threading.Thread] = {}
        self.runners = {"inventory-sync": self._inventory_sync, **(runners or {})}
        self.source_policy = source_policy or SourcePolicy()
        self.node_id = ""

    def register(self) -> str:
        node = self.identity.register({
            "name": self.name, "site_id": self.site_id, "capacity": self.capacity,
            "software_version": self.software_version, "source_sites": list(self.source_policy.source_sites),
        })  # fmt: skip
        self.node_id = node["id"]
        log.info("registered node %s", self.node_id)
        return self.node_id

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set: heartbeat, claim work while there is capacity."""
        self.register()
        try:
            swept = self.sweep_snapshots()
            if swept:
                log.warning("removed %d leftover replication snapshot(s): %s", len(swept), ", ".join(swept))
        except LifeboatError as exc:
            log.warning("snapshot sweep failed: %s", exc)
        last_beat = 0.0
        while not stop.is_set():
            self.running = {k: t for k, t in self.running.items() if t.is_alive()}
            try:
                if time.monotonic() - last_beat >= self.heartbeat_seconds:
                    self.identity.maybe_rotate(datetime.now(UTC))
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
            if job["job_kind"] not in ("replication", "reverse-replication"):
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
        context = _Context(self, job, ProgressReporter(self.client, job["id"], 0, self.progress_seconds))
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
        """One plan run: each machine through its source (one snapshot per machine, so its
        disks describe one moment), disks in parallel within ``capacity``."""
        params = job["params"]
        repo = open_repository(
            params["repository_url"], resolve_secret(params.get("credentials_ref")),
            limit_mbps=params.get("bandwidth_limit_mbps"),
        )  # fmt: skip
        machines = params["machines"]
        sources = {  # every source is checked (allow-list, connection settings) before any byte is read
            m["machine_id"]: machine_source(m, params, policy=self.source_policy, node_id=self.node_id,
                                            job_id=job["id"], secret=lambda ref: self._source_secret(params, ref))
            for m in machines
        }  # fmt: skip
        reporter = ProgressReporter(self.client, job["id"], 0, self.progress_seconds)
        results: dict[str, dict[str, Any]] = {}
        notes: list[str] = []

        def one_disk(
            snap: MachineSnapshot, machine_id: str, disk: dict[str, Any]
        ) -> tuple[dict[str, Any], datetime]:
            with self.disk_slots:
                reporter.check()
                seed = disk.get("seed_parent")  # a reverse lineage starts from the failed-over point
                opts = ReplicationOptions(block_size=disk.get("block_size"), tags={"job": job["id"]},
                                          seed_parent=(str(seed[0]), str(seed[1])) if seed else None)  # fmt: skip
                source = snap.disks[disk["source"]]
                point = replicate(
                    repo, disk["disk_id"], source, opts, progress=reporter.for_disk(disk["disk_id"])
                )
                source.committed(point)
            note = point.tags.get("read_note", "")
            if note:
                notes.append(f"{machine_id}/{disk['disk_id']}: {note}")
                reporter.message = "; ".join(notes)[:500]
            stats = point.stats  # what the control plane counts (ReplicatedBytes, ChangedBytes, ...)
            return {"disk_id": disk["disk_id"], "point_id": point.id, "disk_size": point.disk_size,
                    "bytes_new": stats.bytes_new_raw, "bytes_read": stats.bytes_read,
                    "bytes_stored": stats.bytes_new_stored, "seconds": stats.duration_s,
                    "read": point.tags.get("read", ""), "read_note": note,
                    "change_token": point.change_token}, point.time  # fmt: skip

        def one_machine(machine: dict[str, Any]) -> None:
            machine_id = machine["machine_id"]
            snap = sources[machine_id].open()
            done: list[tuple[dict[str, Any], datetime]] = []
            try:
                if any(d["source"] not in snap.disks for d in machine["disks"]):
                    raise InvalidInputError(f"machine {machine_id}: its source did not open every disk")
                with reporter.lock:  # sizes are known once the source is open (a VM's disks)
                    reporter.total += sum(snap.disks[d["source"]].size for d in machine["disks"])
                with ThreadPoolExecutor(
                    len(machine["disks"]), thread_name_prefix=f"disk-{machine_id}"
                ) as pool:
                    done = [
                        f.result()
                        for f in [pool.submit(one_disk, snap, machine_id, d) for d in machine["disks"]]
                    ]
            finally:
                try:
                    snap.close()  # the cleanup twin: removes the snapshot whatever happened
                except Exception as exc:
                    if len(done) < len(machine["disks"]):  # the run's own error is the one to report
                        log.warning("machine %s: cleanup after a failed run failed: %s", machine_id, exc)
                    else:  # the points are committed: keep them, say so; the next run removes it
                        log.error("machine %s: releasing the source failed: %s", machine_id, exc)
                        notes.append(
                            f"{machine_id}: releasing the snapshot failed ({exc}); the next run removes it"
                        )
                        reporter.message = "; ".join(notes)[:500]
            when = max(t for _, t in done)
            results[machine_id] = {
                "machine_id": machine_id, "time": when.astimezone(UTC).isoformat(), "disks": [d for d, _ in done],
                **({"hardware": snap.hardware.model_dump(mode="json")} if snap.hardware else {}),
            }  # fmt: skip

        with ThreadPoolExecutor(
            max(1, min(len(machines), self.capacity)), thread_name_prefix="machine"
        ) as pool:
            for fut in [pool.submit(one_machine, m) for m in machines]:
                fut.result()
        reporter.flush()
        return {"machines": [results[m["machine_id"]] for m in machines]}

    def _source_secret(self, params: dict[str, Any], ref: str) -> str:
        """A vmware site's vCenter password: its reference names the control plane's vault
        (sealed in the metadata store, or Secrets Manager in AWS), so the node asks the
        control plane, which answers only a node configured for that site (audited)."""
        site_id = str((params.get("source") or {}).get("site_id", ""))
        if not site_id:
            raise InvalidInputError(f"credentials reference {ref} has no site to ask the control plane for")
        return self.client.source_credentials(self.node_id, site_id)

    def _inventory_sync(self, job: dict[str, Any], context: JobContext) -> JobOutcome:
        """Discover a vmware or kvm site's inventory and hand it to the control plane whole,
        through the site's current connection (a sync queued before the connection changed
        uses the new one). A kvm site's socket that does not answer is reported, not fatal
        (its VM may be off, and is marked missing), unless none answers."""
        site_id = str(job["params"]["site_id"])
        if not self.source_policy.may_read_site(site_id):
            raise PermissionDeniedError(
                f"this node is not configured to read site {site_id} (start it with --source-site {site_id})"
            )
        source = next((s for s in self.client.node_sources(self.node_id) if s["site_id"] == site_id), None)
        if source is None:
            raise InvalidInputError(f"site {site_id} has no vCenter or KVM host connection any more")
        found = discover_site(source, site_id=site_id, say=context.message,
                              secret=lambda ref: self._source_secret({"source": source}, ref))  # fmt: skip
        context.message(found.message)
        counts = self.client.post_inventory(self.node_id, job["id"], found.vms, found.objects)
        extra = {"unreachable": found.unreachable} if source.get("kind") == "kvm" else {}
        return JobOutcome("succeeded", result={**counts, **extra})

    def sweep_snapshots(self) -> list[str]:
        """Remove the replication snapshots this node left on any vCenter (after a crash).
        kvm sites are not swept here: a KVM run's export and bitmaps are its source's to release."""
        removed: list[str] = []
        for source in self.client.node_sources(self.node_id):
            if source.get("kind") != "vsphere":
                continue
            try:
                params: dict[str, Any] = {"source": source}
                removed += sweep_site(source, self.node_id, functools.partial(self._source_secret, params))
            except LifeboatError as exc:
                log.warning("could not sweep snapshots on site %s: %s", source.get("site_id"), exc)
        return removed


class _Context:
    """A :class:`JobContext` over the agent's reporter."""

    def __init__(self, agent: NodeAgent, job: dict[str, Any], reporter: ProgressReporter) -> None:
        self.agent, self.job, self.reporter = agent, job, reporter
        self.totals: dict[str, int] = {}

    def cancelled(self) -> bool:
        return self.reporter.cancelled

    @property
    def source_policy(self) -> SourcePolicy:
        return self.agent.source_policy

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
