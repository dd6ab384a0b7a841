"""What the recovery-flow handlers receive: the composition root of each process builds one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from node_runtime.prep.models import GuestPrep
from node_runtime.recovery.targets.base import Target
from shared.domain.recovery import TargetConfig
from shared.repo.repository import Repository


class RunCancelled(Exception):
    """Raised by :attr:`RecoveryPorts.checkpoint` when the run's job is being cancelled."""


#: (disks as (read, size), platform, called with the planned changes before they are made)
#: -> (the preparation, byte patches per disk index)
GuestPrepare = Callable[
    [list[tuple[Callable[[int, int], bytes], int]], str, Callable[[GuestPrep], None]],
    tuple[GuestPrep, dict[int, list[tuple[int, bytes]]]],
]


def _now() -> datetime:
    return datetime.now(UTC)


def _nothing(*_: object) -> None:
    return None


@dataclass
class RecoveryPorts:
    #: the target for a site's recovery configuration (the composition root caches them)
    target_for: Callable[[TargetConfig], Target]
    #: open a repository from its URL and credentials reference
    open_repository: Callable[[str, str | None], Repository]
    now: Callable[[], datetime] = _now
    #: called at the start of every state; raises RunCancelled to stop the run
    checkpoint: Callable[[], None] = _nothing
    #: bytes reconstructed: (key, done, total)
    progress: Callable[[str, int, int], None] = _nothing
    #: one line of what the flow is doing, for the job's progress message
    notify: Callable[[str], None] = _nothing
    #: guest preparation (libguestfs, nodes only); None in Lambda, which the report says
    guest_prep: GuestPrepare | None = None
