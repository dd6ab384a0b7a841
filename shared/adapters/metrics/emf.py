"""Metrics as CloudWatch Embedded Metric Format, printed to stdout by aws-lambda-powertools
(Lambda ships stdout to CloudWatch Logs, which extracts the metrics). One EMF document per
(service, dimension set) per flush; call :meth:`EmfMetrics.flush` at the end of each invocation."""

from __future__ import annotations

import logging

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from shared.adapters.metrics.buffer import MetricBuffer
from shared.domain.metrics import NAMESPACE, MetricKind

log = logging.getLogger("lifeboat.metrics")
#: EMF allows 100 values per metric per document, and powertools flushes on its own when a
#: metric reaches 100 (leaving our explicit flush empty): stay one below
MAX_VALUES = 99


class EmfMetrics:
    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self._buffer = MetricBuffer()

    def count(self, name: str, value: float = 1.0, /, **dimensions: str) -> None:
        self._buffer.add(name, MetricKind.COUNTER, value, dimensions)

    def gauge(self, name: str, value: float, /, **dimensions: str) -> None:
        self._buffer.add(name, MetricKind.GAUGE, value, dimensions)

    def observe(self, name: str, value: float, /, **dimensions: str) -> None:
        self._buffer.add(name, MetricKind.HISTOGRAM, value, dimensions)

    def flush(self) -> None:
        for group in self._buffer.drain():
            try:
                for start in range(0, max(len(v) for v in group.values.values()), MAX_VALUES):
                    doc = EphemeralMetrics(namespace=self.namespace, service=group.service)
                    for key, value in group.dimensions.items():
                        doc.add_dimension(key, value)
                    for name, values in group.values.items():
                        for v in values[start : start + MAX_VALUES]:
                            doc.add_metric(name, MetricUnit(group.specs[name].unit), v)
                    doc.flush_metrics()
            except Exception:  # metrics never fail the work they measure
                log.exception("could not emit metrics", extra={"service": group.service})
