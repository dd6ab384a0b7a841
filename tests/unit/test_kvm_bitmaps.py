"""The dirty-bitmap generation policy (pure): what a freeze keeps, and how a run reads."""

from __future__ import annotations

from node_runtime.sources.kvm import bitmaps
from node_runtime.sources.kvm.qmp import Bitmap


def bm(name: str, *, inconsistent: bool = False, busy: bool = False) -> Bitmap:
    return Bitmap(name=name, recording=True, persistent=True, inconsistent=inconsistent, busy=busy, granularity=65536)


def test_first_freeze_starts_generation_one_and_reads_everything() -> None:
    freeze = bitmaps.plan_freeze("d0", [bm("someone-elses")], persistent=True)
    assert (freeze.next_generation, freeze.frozen, freeze.dropped) == (1, (), ())
    assert bitmaps.choose_read("d0", None, freeze, has_parent=False) == bitmaps.ReadChoice(None, "")


def test_incremental_reads_the_frozen_copy_of_the_parents_generation() -> None:
    freeze = bitmaps.plan_freeze("d0", [bm("lifeboat.d0.3"), bm("lifeboat.d0.4"), bm("lifeboat.d1.9")], persistent=True)
    assert freeze.next_generation == 5 and freeze.frozen == (3, 4)
    choice = bitmaps.choose_read("d0", "qemu-bitmap:lifeboat.d0.3", freeze, has_parent=True)
    assert choice == bitmaps.ReadChoice("lifeboat-frozen.d0.3")  # a killed run's generation 4 is a subset of 3


def test_missing_inconsistent_or_foreign_tokens_fall_back_to_a_full_read_with_a_reason() -> None:
    freeze = bitmaps.plan_freeze("d0", [bm("lifeboat.d0.2", inconsistent=True), bm("lifeboat.d0.3")], persistent=True)
    assert freeze.frozen == (3,) and freeze.dropped == (2,)
    missing = bitmaps.choose_read("d0", "qemu-bitmap:lifeboat.d0.2", freeze, has_parent=True)
    assert missing.bitmap is None and "lifeboat.d0.2 is missing or inconsistent" in missing.note
    foreign = bitmaps.choose_read("d0", "52 aa/7", freeze, has_parent=True)  # a vSphere changeId
    assert foreign.bitmap is None and "not a bitmap of this disk" in foreign.note
    other_disk = bitmaps.choose_read("d0.r1", "qemu-bitmap:lifeboat.d0.3", freeze, has_parent=True)
    assert other_disk.bitmap is None  # a reverse lineage's seed point names the origin's bitmap


def test_generations_beyond_the_cap_are_dropped_and_stale_frozen_copies_removed() -> None:
    names = [bm(f"lifeboat.d0.{g}") for g in range(1, 12)] + [bm("lifeboat-frozen.d0.4")]
    freeze = bitmaps.plan_freeze("d0", names, persistent=False)
    assert freeze.frozen == tuple(range(4, 12)) and freeze.dropped == (1, 2, 3)
    assert freeze.stale_frozen == ("lifeboat-frozen.d0.4",) and freeze.persistent is False


def test_token_round_trip_and_prefix_safety() -> None:
    assert bitmaps.generation_of("d0", bitmaps.token("d0", 7)) == 7
    assert bitmaps.generation_of("d", bitmaps.token("d0", 7)) is None
    assert bitmaps.generation_of("d0", None) is None
