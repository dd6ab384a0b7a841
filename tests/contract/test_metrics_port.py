"""The Metrics contract (shared/ports/metrics.py), run against every adapter: ``null`` (the
Control's default), ``emf`` (CloudWatch Embedded Metric Format, read back from what it
prints) and ``prometheus`` (read back from its exposition with prometheus-client's parser).
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.adapters.metrics.emf import EmfMetrics
from shared.adapters.metrics.prometheus import PrometheusMetrics
from shared.domain import metrics as m
from shared.ports.metrics import Metrics, NullMetrics
from tests.support.emf import emf_documents

pytestmark = pytest.mark.ops


@dataclass
class Backend:
    name: str
    metrics: Metrics
    #: (metric name, dimensions) -> the values emitted since the last read (None: cannot be read back)
    read: Callable[[], dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] | None


def _emf() -> Backend:
    metrics = EmfMetrics()

    def read() -> dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            metrics.flush()
        out: dict[Any, list[float]] = {}
        for d in emf_documents(printed.getvalue()):
            dims = tuple(sorted((k, v) for k, v in d["dimensions"].items() if k != "service"))
            out.setdefault((d["name"], dims), []).extend(d["values"])
        return out

    return Backend("emf", metrics, read)


def _prometheus() -> Backend:
    metrics = PrometheusMetrics()
    by_family = {s.prometheus_name.removesuffix("_total"): s for s in m.CATALOGUE}

    def read() -> dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]:
        out: dict[Any, list[float]] = {}
        for family in text_string_to_metric_families(metrics.exposition()[1].decode()):
            spec = by_family[family.name]
            for s in family.samples:
                if s.name in (spec.prometheus_name, spec.prometheus_name + "_sum"):
                    out.setdefault((spec.name, tuple(sorted(s.labels.items()))), []).append(s.value)
        return out

    return Backend("prometheus", metrics, read)


@pytest.fixture(params=["null", "emf", "prometheus"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return {"null": lambda: Backend("null", NullMetrics(), None), "emf": _emf, "prometheus": _prometheus}[
        request.param
    ]()


BAD: list[tuple[str, Callable[[Metrics], None]]] = [
    ("not in the catalogue", lambda x: x.count("JobStarted", kind="replication")),
    ("dimension missing", lambda x: x.count(m.JOBS_STARTED.name)),
    ("dimension extra", lambda x: x.count(m.REPLICATED_BYTES.name, 1.0, plan="web")),
    ("a counter set as a gauge", lambda x: x.gauge(m.JOBS_STARTED.name, 1.0, kind="replication")),
    ("a gauge observed", lambda x: x.observe(m.RPO_LAG_SECONDS.name, 1.0, plan="web")),
    ("a negative count", lambda x: x.count(m.REPLICATED_BYTES.name, -1.0)),
    ("not a number", lambda x: x.observe(m.RECOVERY_STAGE_SECONDS.name, float("nan"), stage="power-on")),
    ("infinite", lambda x: x.gauge(m.RPO_LAG_SECONDS.name, float("inf"), plan="web")),
]


@pytest.mark.parametrize(("why", "call"), BAD, ids=[b[0] for b in BAD])
def test_a_value_the_catalogue_does_not_allow_is_refused_and_nothing_is_kept(
    backend: Backend, why: str, call: Callable[[Metrics], None]
) -> None:
    with pytest.raises(ValueError):
        call(backend.metrics)
    if backend.read is not None:
        assert not any(v for v in backend.read().values() if any(v)), why


def test_counts_from_many_threads_add_up(backend: Backend) -> None:
    def work() -> None:
        for _ in range(500):
            backend.metrics.count(m.JOBS_STARTED.name, kind="replication")
            backend.metrics.count(m.REPLICATED_BYTES.name, 4096.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if backend.read is not None:
        read = backend.read()
        assert sum(read[(m.JOBS_STARTED.name, (("kind", "replication"),))]) == 4000
        assert sum(read[(m.REPLICATED_BYTES.name, ())]) == 4000 * 4096


def test_a_gauge_keeps_its_last_value_per_dimension_and_every_observation_counts(backend: Backend) -> None:
    for lag in (10.0, 30.0, 20.0):
        backend.metrics.gauge(m.RPO_LAG_SECONDS.name, lag, plan="web")
    backend.metrics.gauge(m.RPO_LAG_SECONDS.name, 5.0, plan="db")
    for seconds in (1.5, 2.5):
        backend.metrics.observe(m.RECOVERY_STAGE_SECONDS.name, seconds, stage="power-on")
    if backend.read is None:
        backend.metrics.flush()
        return
    read = backend.read()
    assert read[(m.RPO_LAG_SECONDS.name, (("plan", "web"),))] == [20.0]
    assert read[(m.RPO_LAG_SECONDS.name, (("plan", "db"),))] == [5.0]
    assert sum(read[(m.RECOVERY_STAGE_SECONDS.name, (("stage", "power-on"),))]) == 4.0
    again = backend.read()  # a second flush sends nothing twice; a second scrape reads the same state
    assert again == ({} if backend.name == "emf" else read)
