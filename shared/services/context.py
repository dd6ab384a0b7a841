"""What every control-plane use case receives: the ports and the clock (the composition
root of each process builds one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.ports.job_queue import JobQueue
from shared.ports.metadata_store import MetadataStore


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Control:
    store: MetadataStore
    queue: JobQueue
    jwt_secret: str = field(repr=False)
    now: Callable[[], datetime] = _now
    #: how long a running job stays with its node without a progress report
    lease: timedelta = timedelta(minutes=5)
