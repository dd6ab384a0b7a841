"""The values an adapter holds until it sends them, grouped the way CloudWatch needs:
one group per (service, dimension set); counters summed, gauges last-wins, observations kept."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from shared.domain.metrics import MetricKind, MetricSpec, check

#: (service, sorted dimension items)
GroupKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class Group:
    service: str
    dimensions: dict[str, str]
    values: dict[str, list[float]] = field(default_factory=dict)
    specs: dict[str, MetricSpec] = field(default_factory=dict)


class MetricBuffer:
    """Thread-safe; :meth:`drain` hands over everything held and starts afresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[GroupKey, Group] = {}

    def add(self, name: str, kind: MetricKind, value: float, dimensions: dict[str, str]) -> None:
        spec = check(name, kind, value, dimensions)
        dims = {k: str(v) for k, v in dimensions.items()}
        key: GroupKey = (spec.service, tuple(sorted(dims.items())))
        with self._lock:
            group = self._groups.setdefault(key, Group(spec.service, dims))
            group.specs[name] = spec
            held = group.values.setdefault(name, [])
            if kind is MetricKind.COUNTER and held:
                held[0] += value
            elif kind is MetricKind.GAUGE:
                held[:] = [value]
            else:
                held.append(value)

    def drain(self) -> list[Group]:
        with self._lock:
            groups, self._groups = list(self._groups.values()), {}
        return groups
