"""Notifications: detectors write the outbox (:func:`emit`), the dispatcher delivers it (:func:`dispatch`).

:func:`emit` is called where an event is detected (the scheduler's RPO alerts and lost
jobs, job completion, recovery reports). It writes one :class:`Notification` per matching
channel, its id derived from the channel and the event's key, so a detector that runs again
writes nothing new; it never raises (a failure is logged and swallowed: a notification must
never fail the job that caused it).

:func:`dispatch` runs on every scheduler tick. Each attempt first claims the notification
(a conditional write that moves ``next_attempt_at`` past the attempt), so two dispatchers
never send one notification at once. Failures worth retrying back off exponentially with
jitter (``BASE_DELAY * 2**(attempt-1)``, capped at ``MAX_DELAY``, at least the receiver's
``Retry-After``); after ``MAX_ATTEMPTS`` attempts, or when the receiver rejects it, the
notification is ``dead``. A tick spends at most ``budget`` on deliveries, and a channel that
failed once in a tick gets no more attempts in that tick, so a dead or slow endpoint costs
one timeout per tick and delays no other channel.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from shared.domain.inventory import Node
from shared.domain.jobs import Job, JobKind, JobState
from shared.domain.notifications import (
    SEVERITY,
    ChannelKind,
    Notification,
    NotificationChannel,
    NotificationEvent,
)
from shared.domain.plans import ProtectionPlan
from shared.errors import ConflictError, LifeboatError, NotFoundError
from shared.ports.metadata_store import every
from shared.ports.notifier import Delivery
from shared.services.context import Control

log = logging.getLogger("lifeboat.notify")

MAX_ATTEMPTS = 8
BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=1)
#: how long an attempt holds its claim (a dispatcher that dies mid-send is retried after it)
CLAIM = timedelta(minutes=2)
#: wall-clock seconds one tick may spend delivering (the scheduler Lambda has 55 s in all)
TICK_BUDGET = 20.0
#: delivered and dead notifications are deleted this long after they were written
KEEP = timedelta(days=30)


def _summary_line(event: NotificationEvent, summary: str, link: str) -> str:
    line = f"[Lifeboat] {SEVERITY[event].upper()} {event.value}: {summary}"
    return (f"{line} {link}" if link else line)[:2048]


def _link(ctl: Control, *, job_id: str | None, plan_id: str | None) -> str:
    if not ctl.console_url:
        return ""
    base = ctl.console_url.rstrip("/")
    if job_id:
        return f"{base}/#/jobs/{job_id}"
    return f"{base}/#/plans" if plan_id else f"{base}/"


def notification_id(channel_id: str, key: str) -> str:
    """The outbox id of one event (``key``) for one channel: a re-run writes the same id."""
    return "ntf-" + hashlib.sha256(f"{channel_id}\0{key}".encode()).hexdigest()[:32]


def build(
    ctl: Control, channel: NotificationChannel, event: NotificationEvent, *, key: str, summary: str,
    plan_id: str | None = None, site_ids: Iterable[str] = (), node_id: str | None = None,
    job_id: str | None = None, details: dict[str, Any] | None = None,
) -> Notification:  # fmt: skip
    """The outbox record of ``event`` for ``channel`` (not stored)."""
    now = ctl.now()
    link = _link(ctl, job_id=job_id, plan_id=plan_id)
    payload = {
        "event": event.value, "severity": SEVERITY[event], "summary": summary[:1024], "time": now.isoformat(),
        "plan_id": plan_id, "site_ids": sorted(set(site_ids)), "node_id": node_id, "job_id": job_id,
        "details": details or {}, "console_url": link or None, "channel_id": channel.id,
    }  # fmt: skip
    return Notification(
        id=notification_id(channel.id, key), channel_id=channel.id, event=event, severity=SEVERITY[event],
        text=_summary_line(event, summary, link), payload=payload, next_attempt_at=now,
        created_at=now, updated_at=now,
    )  # fmt: skip


def load_channels(ctl: Control) -> list[NotificationChannel]:
    """The enabled channels (for a detector that emits many events: read them once); never raises."""
    try:
        return [c for c in every(ctl.store, NotificationChannel) if c.enabled]
    except Exception:  # a notification never fails what caused it
        log.exception("could not read the notification channels")
        return []


def emit(
    ctl: Control, event: NotificationEvent, *, key: str, summary: str, plan_id: str | None = None,
    site_ids: Iterable[str] = (), node_id: str | None = None, job_id: str | None = None,
    details: dict[str, Any] | None = None, channels: list[NotificationChannel] | None = None,
) -> list[str]:  # fmt: skip
    """Write the outbox records of one event (``key`` identifies it: the same key, the same
    records); returns their ids. ``channels``: from :func:`load_channels` (read here if None);
    the plan's sites are looked up only when ``site_ids`` is empty and a channel is scoped by
    site. Never raises: failures are logged and swallowed."""
    try:
        wanting = [c for c in (load_channels(ctl) if channels is None else channels) if event in c.events]
        if not wanting:
            return []
        sites = set(site_ids)
        if plan_id and not sites and any(c.site_ids for c in wanting):
            sites = _plan_sites(ctl, plan_id)
        written = []
        for channel in wanting:
            if not channel.wants(event, plan_id=plan_id, site_ids=sites):
                continue
            record = build(ctl, channel, event, key=f"{event.value}:{key}", summary=summary, plan_id=plan_id,
                           site_ids=sites, node_id=node_id, job_id=job_id, details=details)  # fmt: skip
            try:
                ctl.store.create(record)
            except ConflictError:
                pass  # this event was written before (a re-run of its detector)
            written.append(record.id)
        return written
    except Exception:  # a notification never fails what caused it
        log.exception("could not write notifications", extra={"event": event.value, "job_id": job_id,
                                                              "plan_id": plan_id})  # fmt: skip
        return []


def _plan_sites(ctl: Control, plan_id: str) -> set[str]:
    try:
        plan = ctl.store.get(ProtectionPlan, plan_id)
    except NotFoundError:
        return set()
    return {plan.source_site_id, plan.target_site_id}


def job_failed(ctl: Control, job: Job) -> None:
    """``job_failed`` for a job that ended failed (its last error is the summary)."""
    why = job.errors[-1] if job.errors else "no details"
    emit(ctl, NotificationEvent.JOB_FAILED, key=job.id, summary=f"{job.job_kind} job {job.id} failed: {why}",
         plan_id=job.plan_id, node_id=job.node_id, job_id=job.id,
         details={"job_kind": str(job.job_kind), "attempts": job.attempts})  # fmt: skip


def test_recovery_failed(ctl: Control, job: Job, report_state: str | None) -> None:
    """``test_recovery_failed`` for a test recovery job that failed or whose stored report says
    ``failed`` or ``partial`` (``report_state``; None if no report was stored)."""
    if job.job_kind is not JobKind.TEST_RECOVERY:
        return
    if job.state is not JobState.FAILED and report_state not in ("failed", "partial"):
        return
    why = f"the report says {report_state}" if report_state else (job.errors[-1] if job.errors else "failed")
    emit(ctl, NotificationEvent.TEST_RECOVERY_FAILED, key=job.id, plan_id=job.plan_id, job_id=job.id,
         node_id=job.node_id, summary=f"test recovery {job.id} of plan {job.plan_id} failed: {why}",
         details={"report_state": report_state, "job_state": str(job.state)})  # fmt: skip


def node_lost(ctl: Control, job: Job) -> None:
    """``node_lost`` for a job whose node stopped reporting and whose message is gone."""
    sites: set[str] = set()
    if job.node_id:
        try:
            sites.add(ctl.store.get(Node, job.node_id).site_id)
        except NotFoundError:
            pass
    emit(ctl, NotificationEvent.NODE_LOST, key=job.id, plan_id=job.plan_id, site_ids=sites, node_id=job.node_id,
         job_id=job.id, summary=f"node {job.node_id} lost while running {job.job_kind} job {job.id}")  # fmt: skip


# --- the dispatcher --------------------------------------------------------------------------
@dataclass
class DispatchReport:
    delivered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    #: due but left for the next tick (budget spent, or its channel failed this tick)
    deferred: int = 0
    #: delivered or dead notifications older than KEEP, deleted this tick
    pruned: int = 0


def backoff(attempt: int, retry_after: float | None, rng: random.Random | None = None) -> timedelta:
    """The wait after failed attempt number ``attempt`` (1-based): exponential, jittered
    between half and all of it, capped, never shorter than ``retry_after`` (also capped)."""
    full = min(MAX_DELAY.total_seconds(), BASE_DELAY.total_seconds() * 2 ** max(0, attempt - 1))
    delay = (rng or random).uniform(full / 2, full)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_DELAY.total_seconds()))
    return timedelta(seconds=delay)


def dispatch(
    ctl: Control, *, budget: float = TICK_BUDGET, max_attempts: int = MAX_ATTEMPTS, rng: random.Random | None = None
) -> DispatchReport:  # fmt: skip
    """Deliver the due pending notifications (see the module docstring); never raises."""
    report = DispatchReport()
    if ctl.notifier is None:
        return report
    deadline = time.monotonic() + budget
    try:
        channels = {c.id: c for c in every(ctl.store, NotificationChannel)}
        pending = list(every(ctl.store, Notification, {"state": "pending"}))
    except LifeboatError:
        log.exception("could not read the notification outbox")
        return report
    failing: set[str] = set()
    secrets: dict[str, str | None] = {}
    for n in pending:
        if n.next_attempt_at > ctl.now():
            continue
        if n.channel_id in failing or time.monotonic() >= deadline:
            report.deferred += 1
            continue
        try:
            outcome = attempt(
                ctl, n, channels.get(n.channel_id), max_attempts=max_attempts, rng=rng, secrets=secrets
            )
        except LifeboatError:
            log.exception("notification bookkeeping failed", extra={"notification_id": n.id})
            continue
        if outcome is None:
            continue
        bucket = {"delivered": report.delivered, "pending": report.retrying, "dead": report.dead}
        bucket[outcome.state].append(n.id)
        if outcome.state != "delivered":
            failing.add(n.channel_id)
    report.pruned = prune(ctl)
    return report


def prune(ctl: Control, *, keep: timedelta = KEEP, limit: int = 200) -> int:
    """Delete up to ``limit`` delivered or dead notifications written more than ``keep`` ago
    (the outbox is a record of recent deliveries, not an archive); returns how many."""
    deleted = 0
    for state in ("delivered", "dead"):
        try:
            old = ctl.store.query(Notification, where={"state": state}, before=ctl.now() - keep, limit=limit)
            for n in old.items:
                ctl.store.delete(Notification, n.id, revision=n.revision)
                deleted += 1
        except (ConflictError, NotFoundError):
            continue
        except LifeboatError:
            log.exception("could not prune the notification outbox")
    return deleted


def attempt(
    ctl: Control, n: Notification, channel: NotificationChannel | None, *, max_attempts: int = MAX_ATTEMPTS,
    rng: random.Random | None = None, secrets: dict[str, str | None] | None = None,
) -> Notification | None:  # fmt: skip
    """One delivery attempt of ``n``; the stored outcome, or None if another dispatcher had claimed it."""
    if channel is None or not channel.enabled:
        why = "the channel was deleted" if channel is None else "the channel is disabled"
        return _save(ctl, n.model_copy(update={"state": "dead", "last_error": why}))
    assert ctl.notifier is not None
    try:
        claimed = ctl.store.update(n.model_copy(update={"attempts": n.attempts + 1,
                                                        "next_attempt_at": ctl.now() + CLAIM}))  # fmt: skip
    except (ConflictError, NotFoundError):
        return None
    message = {"text": claimed.text, "lifeboat": {**claimed.payload, "notification_id": claimed.id,
                                                  "attempt": claimed.attempts}}  # fmt: skip
    try:
        secret = _secret(ctl, channel, secrets if secrets is not None else {})
        result = ctl.notifier.send(channel, message, subject=_subject(claimed), secret=secret)
    except Exception as exc:
        result = Delivery("retry", detail=f"{type(exc).__name__}: {exc}"[:500])
    return _save(ctl, _after(ctl, claimed, result, max_attempts, rng))


def _subject(n: Notification) -> str:
    return f"Lifeboat {n.severity}: {n.event.value}"[:100]


def _secret(ctl: Control, channel: NotificationChannel, cache: dict[str, str | None]) -> str | None:
    if channel.channel_kind is not ChannelKind.WEBHOOK or channel.secret_ref is None:
        return None
    if channel.id not in cache:
        if ctl.channel_vault is None:
            raise LookupError("this control plane has no secret vault configured")
        cache[channel.id] = ctl.channel_vault.get(channel.secret_ref)
    return cache[channel.id]


def _after(ctl: Control, n: Notification, result: Delivery, max_attempts: int,
           rng: random.Random | None) -> Notification:  # fmt: skip
    now = ctl.now()
    common = {"last_status": result.status, "last_error": result.detail[:1024]}
    if result.outcome == "delivered":
        return n.model_copy(update={**common, "state": "delivered", "delivered_at": now, "last_error": ""})
    if result.outcome == "rejected" or n.attempts >= max_attempts:
        return n.model_copy(update={**common, "state": "dead"})
    return n.model_copy(
        update={**common, "next_attempt_at": now + backoff(n.attempts, result.retry_after, rng)}
    )


def _save(ctl: Control, n: Notification) -> Notification | None:
    try:
        saved = ctl.store.update(n)
    except (ConflictError, NotFoundError):
        return None
    if saved.state == "dead":
        log.warning("notification dead", extra={"notification_id": saved.id, "channel_id": saved.channel_id,
                                                "status": saved.last_status, "error": saved.last_error})  # fmt: skip
    return saved
