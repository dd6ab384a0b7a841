"""Metrics kept in a prometheus-client registry and served as the text exposition format
(``lifeboat up``'s ``GET /metrics``). Every catalogue metric is registered up front, so a
scrape lists each name (with no samples yet for labelled ones) before the first event."""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from shared.domain.metrics import CATALOGUE, MetricKind, check


class PrometheusMetrics:
    def __init__(self, *, scrape_token: str | None = None, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # no *_created series (process-wide; they only add noise here)
        self.scrape_token = scrape_token or None
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}
        for spec in CATALOGUE:
            labels = list(spec.dimensions)
            if spec.kind is MetricKind.COUNTER:  # prometheus-client appends _total itself
                self._metrics[spec.name] = Counter(spec.prometheus_name.removesuffix("_total"), spec.help,
                                                   labels, registry=self.registry)  # fmt: skip
            elif spec.kind is MetricKind.GAUGE:
                self._metrics[spec.name] = Gauge(
                    spec.prometheus_name, spec.help, labels, registry=self.registry
                )
            else:
                self._metrics[spec.name] = Histogram(spec.prometheus_name, spec.help, labels, registry=self.registry,
                                                     buckets=(*spec.buckets, float("inf")))  # fmt: skip

    def _child(self, name: str, kind: MetricKind, value: float, dimensions: dict[str, str]) -> Any:
        spec = check(name, kind, value, dimensions)
        metric = self._metrics[name]
        return (
            metric.labels(**{d: str(dimensions[d]) for d in spec.dimensions}) if spec.dimensions else metric
        )

    def count(self, name: str, value: float = 1.0, /, **dimensions: str) -> None:
        self._child(name, MetricKind.COUNTER, value, dimensions).inc(value)

    def gauge(self, name: str, value: float, /, **dimensions: str) -> None:
        self._child(name, MetricKind.GAUGE, value, dimensions).set(value)

    def observe(self, name: str, value: float, /, **dimensions: str) -> None:
        self._child(name, MetricKind.HISTOGRAM, value, dimensions).observe(value)

    def flush(self) -> None:
        return None  # a scraper reads the registry when it likes

    def exposition(self) -> tuple[str, bytes]:
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)
