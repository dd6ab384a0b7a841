"""The catalogue of Lifeboat's metrics: one name, unit, kind, dimension set and help text each.

Every emitter (the :class:`~shared.ports.metrics.Metrics` port's adapters) and every reader
(the CloudWatch dashboard and alarms in cdk/constructs/observability.py, docs/monitoring.md)
takes names from here. Names are CloudWatch-style CamelCase in namespace :data:`NAMESPACE`;
the Prometheus name derives mechanically (:attr:`MetricSpec.prometheus_name`):
``lifeboat_`` + snake_case, plus ``_total`` for counters (``ReplicatedBytes`` ->
``lifeboat_replicated_bytes_total``).

Invariants: a name MUST appear once; an emitted value MUST carry exactly the spec's
dimensions (CloudWatch treats each dimension set as a different metric); dimension values
MUST come from bounded sets (plan ids, job kinds, stage names), never from free text.
In CloudWatch every metric also carries ``service`` = :attr:`MetricSpec.service`, the part
of the control plane that emits it, whichever process that part runs in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

NAMESPACE = "Lifeboat"
PROMETHEUS_PREFIX = "lifeboat_"


class MetricKind(StrEnum):
    COUNTER = "counter"  # a count of events or bytes since start (CloudWatch: Sum)
    GAUGE = "gauge"  # a level measured now (CloudWatch: Maximum)
    HISTOGRAM = "histogram"  # one observation per event (CloudWatch: Average/percentiles)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: MetricKind
    unit: str  # a CloudWatch unit: Count, Bytes, Seconds, Bytes/Second, None
    dimensions: tuple[str, ...]
    help: str
    service: str
    buckets: tuple[float, ...] = ()  # histogram bucket bounds for Prometheus

    @property
    def prometheus_name(self) -> str:
        snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", self.name).lower()
        return PROMETHEUS_PREFIX + snake + ("_total" if self.kind is MetricKind.COUNTER else "")

    @property
    def statistic(self) -> str:
        """The CloudWatch statistic a graph or alarm of this metric uses."""
        return {MetricKind.COUNTER: "Sum", MetricKind.GAUGE: "Maximum", MetricKind.HISTOGRAM: "Average"}[
            self.kind
        ]


_SECONDS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_RATES = tuple(float(mb << 20) for mb in (1, 10, 50, 100, 250, 500, 1000, 2500))
_JOB = ("kind",)

# the scheduler's tick
JOBS_CREATED = MetricSpec(
    "JobsCreated",
    MetricKind.COUNTER,
    "Count",
    (),
    "Jobs the scheduler created (due replications, inventory syncs, reverse protection).",
    "scheduler",
)
RPO_ALERTS_OPENED = MetricSpec(
    "RpoAlertsOpened",
    MetricKind.COUNTER,
    "Count",
    (),
    "RPO alerts opened or raised to a higher severity.",
    "scheduler",
)
RPO_LAG_SECONDS = MetricSpec(
    "RpoLagSeconds",
    MetricKind.GAUGE,
    "Seconds",
    ("plan",),
    "Per protection plan at each tick: the age of its oldest machine's newest point (machines never replicated are left out).",
    "scheduler",
)
# the job life cycle
JOBS_STARTED = MetricSpec(
    "JobsStarted",
    MetricKind.COUNTER,
    "Count",
    _JOB,
    "Jobs a node claimed or a workflow engine started (a job requeued after its node was lost counts at each claim).",
    "control",
)
JOBS_SUCCEEDED = MetricSpec(
    "JobsSucceeded", MetricKind.COUNTER, "Count", _JOB, "Jobs that ended succeeded.", "control"
)
JOBS_FAILED = MetricSpec(
    "JobsFailed",
    MetricKind.COUNTER,
    "Count",
    _JOB,
    "Jobs that ended failed (including nodes lost).",
    "control",
)
JOBS_CANCELLED = MetricSpec(
    "JobsCancelled", MetricKind.COUNTER, "Count", _JOB, "Jobs that ended cancelled.", "control"
)
# replication, as the node reported each disk's new point
REPLICATED_BYTES = MetricSpec(
    "ReplicatedBytes",
    MetricKind.COUNTER,
    "Bytes",
    (),
    "Bytes read from sources into new recovery points (changed ranges on incremental runs, every data block on full ones).",
    "control",
)
CHANGED_BYTES = MetricSpec(
    "ChangedBytes",
    MetricKind.COUNTER,
    "Bytes",
    (),
    "Of the replicated bytes, those in blocks the repository did not hold yet (sent, before compression).",
    "control",
)
REPLICATION_THROUGHPUT = MetricSpec(
    "ReplicationThroughput",
    MetricKind.HISTOGRAM,
    "Bytes/Second",
    (),
    "Per disk and run: bytes replicated / the disk's replication time.",
    "control",
    _RATES,
)
REPOSITORY_BYTES_STORED = MetricSpec(
    "RepositoryBytesStored",
    MetricKind.COUNTER,
    "Bytes",
    (),
    "Bytes the repositories grew by (new blocks after compression and encryption).",
    "control",
)
DEDUP_RATIO = MetricSpec(
    "DedupRatio",
    MetricKind.GAUGE,
    "None",
    ("plan",),
    "Per plan, its last run: bytes replicated / bytes changed (how much deduplication saved).",
    "control",
)
# recovery runs, as their reports measured them
RECOVERY_STAGE_SECONDS = MetricSpec(
    "RecoveryStageSeconds",
    MetricKind.HISTOGRAM,
    "Seconds",
    ("stage",),
    "Each machine's time in each recovery stage.",
    "control",
    _SECONDS,
)
RECOVERY_RTO_SECONDS = MetricSpec(
    "RecoveryRtoSeconds",
    MetricKind.HISTOGRAM,
    "Seconds",
    ("mode",),
    "Per recovery run: run start to the last machine validated.",
    "control",
    _SECONDS,
)

CATALOGUE: tuple[MetricSpec, ...] = (
    JOBS_CREATED,
    RPO_ALERTS_OPENED,
    RPO_LAG_SECONDS,
    JOBS_STARTED,
    JOBS_SUCCEEDED,
    JOBS_FAILED,
    JOBS_CANCELLED,
    REPLICATED_BYTES,
    CHANGED_BYTES,
    REPLICATION_THROUGHPUT,
    REPOSITORY_BYTES_STORED,
    DEDUP_RATIO,
    RECOVERY_STAGE_SECONDS,
    RECOVERY_RTO_SECONDS,
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in CATALOGUE}
assert len(BY_NAME) == len(CATALOGUE), "metric names must be unique"


def spec(name: str) -> MetricSpec:
    """The catalogue entry of ``name``; ``KeyError`` for a name not in it."""
    return BY_NAME[name]


def check(name: str, kind: MetricKind, value: float, dimensions: Mapping[str, str]) -> MetricSpec:
    """Validate one emitted value against the catalogue; ``ValueError`` names what is wrong
    (an unknown name, another kind, other dimensions, a non-finite or negative count).
    Emitting a bad value is a programming error, so every adapter (the no-op one too) checks."""
    found = BY_NAME.get(name)
    if found is None:
        raise ValueError(f"metric {name!r} is not in the catalogue (shared/domain/metrics.py)")
    if found.kind is not kind:
        raise ValueError(f"metric {name} is a {found.kind}, not a {kind}")
    if set(dimensions) != set(found.dimensions):
        raise ValueError(f"metric {name} takes dimensions {list(found.dimensions)}, got {sorted(dimensions)}")
    if not math.isfinite(value) or (kind is MetricKind.COUNTER and value < 0):
        raise ValueError(f"metric {name}: {value!r} is not a valid {kind} value")
    return found
