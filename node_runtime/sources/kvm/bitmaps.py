"""Which dirty bitmaps a run freezes, reads and forgets: a pure policy, no QEMU in here.

Every disk carries persistent bitmaps named ``lifeboat.<disk_id>.<generation>``. Each run:

1. **freeze** (one QMP ``transaction`` for all the machine's disks, together with the
   fleecing backup that pins the point in time): add generation ``next`` (empty, recording
   from this instant) and, for every existing generation ``g``, a disabled, non-persistent
   copy ``lifeboat-frozen.<disk_id>.<g>`` — "every write since generation g began", frozen.
   Older generations keep recording: nothing is disabled or dropped at freeze.
2. **read**: the parent point's change token names generation ``p``; its frozen copy lists
   exactly the blocks written since that point. No ``p`` (removed, QEMU restarted with a
   non-persistent bitmap, first run), or an inconsistent one: a full read, deduplicated
   against the parent, with a note.
3. **forget**: only once the new point is committed, generations older than ``next`` are
   removed. A run that fails or is killed anywhere leaves ``p`` in place, so the next run
   still sees every write since the last committed point.

The new point's change token is ``qemu-bitmap:lifeboat.<disk_id>.<next>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from node_runtime.sources.kvm.qmp import Bitmap

TOKEN_PREFIX = "qemu-bitmap:"
PREFIX = "lifeboat."
FROZEN_PREFIX = "lifeboat-frozen."
#: more live generations than this (runs that kept failing) and the oldest are dropped at freeze
MAX_GENERATIONS = 8


def bitmap_name(disk_id: str, generation: int) -> str:
    return f"{PREFIX}{disk_id}.{generation}"


def frozen_name(disk_id: str, generation: int) -> str:
    return f"{FROZEN_PREFIX}{disk_id}.{generation}"


def token(disk_id: str, generation: int) -> str:
    return TOKEN_PREFIX + bitmap_name(disk_id, generation)


def generation_of(disk_id: str, change_token: str | None) -> int | None:
    """The generation a point's change token names for this disk, or ``None``."""
    if not change_token or not change_token.startswith(TOKEN_PREFIX):
        return None
    m = re.fullmatch(re.escape(PREFIX + disk_id) + r"\.(\d+)", change_token[len(TOKEN_PREFIX) :])
    return int(m.group(1)) if m else None


def generations(disk_id: str, bitmaps: Iterable[Bitmap]) -> dict[int, Bitmap]:
    """This disk's live generations by number."""
    pattern = re.compile(re.escape(PREFIX + disk_id) + r"\.(\d+)")
    out: dict[int, Bitmap] = {}
    for b in bitmaps:
        m = pattern.fullmatch(b.name)
        if m:
            out[int(m.group(1))] = b
    return out


@dataclass(frozen=True)
class Freeze:
    """What the freeze transaction does for one disk."""

    next_generation: int
    frozen: tuple[int, ...]  # generations that get a frozen copy
    dropped: tuple[int, ...]  # too old to keep (beyond MAX_GENERATIONS)
    stale_frozen: tuple[str, ...]  # frozen copies a killed run left behind
    persistent: bool


def plan_freeze(disk_id: str, bitmaps: Iterable[Bitmap], *, persistent: bool) -> Freeze:
    bitmaps = list(bitmaps)
    live = generations(disk_id, bitmaps)
    ordered = sorted(g for g, b in live.items() if not b.inconsistent and not b.busy)
    keep = ordered[-MAX_GENERATIONS:]
    stale = tuple(b.name for b in bitmaps if b.name.startswith(FROZEN_PREFIX + disk_id + "."))
    return Freeze(
        next_generation=max(live, default=0) + 1,
        frozen=tuple(keep),
        dropped=tuple(g for g in sorted(live) if g not in keep and not live[g].busy),
        stale_frozen=stale,
        persistent=persistent,
    )


@dataclass(frozen=True)
class ReadChoice:
    """How to read one disk given its parent point: the frozen bitmap, or a full read and why."""

    bitmap: str | None
    note: str = ""


def choose_read(disk_id: str, parent_token: str | None, freeze: Freeze, *, has_parent: bool) -> ReadChoice:
    if not has_parent:
        return ReadChoice(None)
    generation = generation_of(disk_id, parent_token)
    if generation is None:
        why = "its parent point has no QEMU dirty-bitmap token" if parent_token is None else (
            f"its parent point's change token ({parent_token}) is not a bitmap of this disk"
        )  # fmt: skip
        return ReadChoice(None, f"full read (deduplicated against the parent): {why}")
    if generation not in freeze.frozen:
        return ReadChoice(None, (
            f"full read (deduplicated against the parent): dirty bitmap {bitmap_name(disk_id, generation)} "
            "is missing or inconsistent (removed, or QEMU restarted without a persistent bitmap)"
        ))  # fmt: skip
    return ReadChoice(frozen_name(disk_id, generation))
