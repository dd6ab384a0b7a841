"""The Metrics port: counters, gauges and observations named in the catalogue
(:mod:`shared.domain.metrics`), with their dimensions.

Contract:

* ``count(name, value=1, **dims)`` adds ``value`` (>= 0) to a counter; ``gauge(name, value,
  **dims)`` sets a level; ``observe(name, value, **dims)`` records one observation of a
  histogram. ``dims`` MUST be exactly the catalogue's dimensions of ``name``, with bounded
  values (plan ids, job kinds, stage names).
* A name not in the catalogue, the wrong kind, other dimensions, a non-finite value or a
  negative count raise ``ValueError`` at the call (a programming error: every adapter
  checks, the no-op one too, so tests catch it).
* Emitting never blocks on the network and never raises for transport trouble: adapters
  buffer and send in ``flush`` (EMF: printed; PutMetricData: batched calls), or keep the
  values in memory for a scraper (Prometheus). ``flush`` is idempotent, safe from any
  thread, logs what it could not send and drops it; composition roots call it at the end
  of each Lambda invocation (and on an interval / at exit in long-lived processes).
* Each event is emitted by ONE process: the control plane, from what nodes and workflow
  engines report (see docs/monitoring.md), so that no event is counted twice.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from shared.domain.metrics import MetricKind, check


class Metrics(Protocol):
    def count(self, name: str, value: float = 1.0, /, **dimensions: str) -> None: ...

    def gauge(self, name: str, value: float, /, **dimensions: str) -> None: ...

    def observe(self, name: str, value: float, /, **dimensions: str) -> None: ...

    def flush(self) -> None: ...


@runtime_checkable
class ScrapeTarget(Protocol):
    """A Metrics adapter a scraper reads (Prometheus): ``GET /metrics`` serves
    :meth:`exposition`. ``scrape_token`` is an optional secret a scraper may send as its
    bearer token instead of a user's or API token (compared in constant time)."""

    scrape_token: str | None

    def exposition(self) -> tuple[str, bytes]:
        """``(content type, body)`` in the Prometheus text exposition format."""
        ...


class NullMetrics:
    """Checks every value against the catalogue and drops it (the default of :class:`Control`)."""

    def count(self, name: str, value: float = 1.0, /, **dimensions: str) -> None:
        check(name, MetricKind.COUNTER, value, dimensions)

    def gauge(self, name: str, value: float, /, **dimensions: str) -> None:
        check(name, MetricKind.GAUGE, value, dimensions)

    def observe(self, name: str, value: float, /, **dimensions: str) -> None:
        check(name, MetricKind.HISTOGRAM, value, dimensions)

    def flush(self) -> None:
        return None
