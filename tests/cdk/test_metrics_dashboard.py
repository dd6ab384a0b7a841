"""The dashboard and alarms graph what the control plane emits: every Lifeboat metric the
synthesised template references is in the catalogue, with the catalogue's dimensions, and is
printed (as EMF) by a run of the metrics scenario (tests/support/metrics_lab.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from shared.domain.metrics import NAMESPACE, spec
from tests.cdk.synth import Synthesized
from tests.support import metrics_lab

pytestmark = pytest.mark.ops

#: a plain metric in a dashboard body: ["Lifeboat","Name","dim","value",...]
PLAIN = re.compile(r'\[\s*"' + NAMESPACE + r'"\s*,\s*"(\w+)"((?:\s*,\s*"[^"]*")*)')
#: a SEARCH expression: {Lifeboat,dim,...} MetricName=\"Name\" service=\"value\" (quotes escaped in the body)
SEARCH = re.compile(r"\{" + NAMESPACE + r',([\w,]+)\} MetricName=\\"(\w+)\\" service=\\"(\w+)\\"')


def _text(value: Any) -> str:
    """A template value's literal text (Fn::Join parts joined, tokens left out)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        return "".join(_text(v) for v in value["Fn::Join"][1])
    return ""


def referenced(synthesized: Synthesized) -> dict[str, set[tuple[tuple[str, str], ...] | frozenset[str]]]:
    """Lifeboat metric name -> the dimensions each reference uses (plain: name/value pairs;
    SEARCH: the dimension names, with service's value checked on the way)."""
    found: dict[str, set[Any]] = {}
    for dashboard in synthesized.resources("AWS::CloudWatch::Dashboard").values():
        body = _text(dashboard["Properties"]["DashboardBody"])
        for name, rest in PLAIN.findall(body):
            values = re.findall(r'"([^"]*)"', rest)
            found.setdefault(name, set()).add(tuple(zip(values[::2], values[1::2], strict=True)))
        for dims, name, service in SEARCH.findall(body):
            assert service == spec(name).service, (name, service)
            found.setdefault(name, set()).add(frozenset(dims.split(",")))
    for alarm in synthesized.resources("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        metrics = [props, *(q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q)]
        for metric in metrics:  # a labelled metric's alarm has the Metrics form
            if metric.get("Namespace") == NAMESPACE:
                dims = tuple((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
                found.setdefault(metric["MetricName"], set()).add(dims)
    return found


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LIFEBOAT_PASSWORD", raising=False)
        _, _, docs = metrics_lab.run_with_emf(Path(tmp_path_factory.mktemp("metrics")))
    return {d["name"] for d in docs}


def test_the_dashboard_and_alarms_graph_catalogue_metrics_that_a_run_emits(
    full: Synthesized, emitted: set[str]
) -> None:
    refs = referenced(full)
    assert {
        "ReplicatedBytes",
        "RpoLagSeconds",
        "JobsFailed",
        "RpoAlertsOpened",
        "RecoveryStageSeconds",
    } <= set(refs)
    for name, uses in refs.items():
        m = spec(name)  # KeyError: a name the catalogue does not have
        for dims in uses:
            if isinstance(dims, frozenset):
                assert dims == {*m.dimensions, "service"}, (name, dims)
            else:
                assert dict(dims) == {"service": m.service} and not m.dimensions, (name, dims)
    assert set(refs) <= emitted, f"graphed but never emitted: {set(refs) - emitted}"
