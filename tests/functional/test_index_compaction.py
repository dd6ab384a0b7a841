"""Index generations and compaction (FORMAT.md §6.2), in process, on local-folder repositories.

Every test ends with the same proof: each point restores sha256-identical and
``check --read-data`` finds no problem. Crashes are injected with ``compact(crash_after=)``,
which returns where a killed process would have stopped.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from shared.adapters.local.folder_store import FolderStore
from shared.errors import CorruptObjectError, RepositoryLockedError
from shared.repo import codec
from shared.repo.check import check
from shared.repo.codec import ObjectType
from shared.repo.compact import choose_prefix_bits, compact
from shared.repo.index import IndexView, generation_ids, read_generation
from shared.repo.object_cache import ObjectCache
from shared.repo.prune import prune
from shared.repo.repository import Repository, shard_key
from tests.functional.test_engine import FAST_KDF, restored_sha, run
from tests.support.disks import MiB, create, mutate, sha256

SMALL_BLOCKS = {"block_size": 64 * 1024, "checkpoint_bytes": 1 * MiB, "auto_compact": False}


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    store = FolderStore(tmp_path / "repo", fsync=False)
    Repository.init(store, "pw", kdf=FAST_KDF)
    return Repository.open(store, lambda: "pw")


def fill(repo: Repository, tmp_path: Path, disks: int = 2, size: int = 6 * MiB) -> dict[tuple[str, str], str]:
    """Replicate ``disks`` images (full, then a 10% incremental each); sha256 of every point."""
    points = {}
    for n in range(disks):
        img = create(tmp_path / f"vm{n}.img", size, seed=10 + n)
        p = run(repo, f"vm{n}", img, **SMALL_BLOCKS)
        points[(f"vm{n}", p.id)] = sha256(img)
        extents = mutate(img, 0.1, seed=20 + n)
        p = run(repo, f"vm{n}", img, changed_extents=extents, **SMALL_BLOCKS)
        points[(f"vm{n}", p.id)] = sha256(img)
    return points


def assert_intact(repo: Repository, points: dict[tuple[str, str], str], tmp_path: Path) -> None:
    for (disk, point), digest in points.items():
        assert restored_sha(repo, disk, point, tmp_path) == digest, (disk, point)
    report = check(repo, read_data=True)
    assert report.problems == []


def test_compaction_merges_deltas_and_keeps_every_point(repo: Repository, tmp_path: Path) -> None:
    points = fill(repo, tmp_path)
    deltas = repo.index_names()
    assert len(deltas) >= 4  # checkpoints and commits each wrote one
    before = repo.load_index()

    report = compact(repo)

    assert report.deltas_merged == len(deltas) and report.deltas_deleted == len(deltas)
    assert repo.index_names() == []
    assert generation_ids(repo) == [report.generation]
    assert repo.config["version"] == 2
    view = IndexView.open(repo)
    assert view.delta_names == [] and view.generation is not None
    assert view.generation.entries == len(before)
    assert sum(view.generation.raw_bytes) == sum(e.raw_length for e in before.values())
    assert view.load_all() == before
    assert_intact(repo, points, tmp_path)
    assert compact(repo).skipped == "no uncovered deltas"


def test_lookups_fetch_only_the_shards_they_touch(repo: Repository, tmp_path: Path) -> None:
    fill(repo, tmp_path, disks=1, size=8 * MiB)
    gen_report = compact(repo, target=4)  # many small shards
    assert gen_report.prefix_bits >= 4
    view = IndexView.open(repo)
    some = sorted(repo.load_index())[:3]
    assert all(i in view for i in some)
    assert view.stats.shards_loaded <= 3
    assert bytes(32) not in view  # an id no shard holds is a miss, not an error


def test_cross_disk_dedup_goes_through_the_shards(repo: Repository, tmp_path: Path) -> None:
    img = create(tmp_path / "template.img", 6 * MiB, seed=3)
    run(repo, "template", img, **SMALL_BLOCKS)
    compact(repo)
    assert repo.index_names() == []
    packs_before = {i.key for i in repo.store.list("data/")}
    clone = run(repo, "clone", img, **SMALL_BLOCKS)  # same content, another disk
    assert {i.key for i in repo.store.list("data/")} == packs_before  # nothing stored again
    assert restored_sha(repo, "clone", clone.id, tmp_path) == sha256(img)


@pytest.mark.parametrize("crash_after", ["shards", "generation", "deltas"])
def test_a_compaction_killed_at_any_step_loses_nothing(
    repo: Repository, tmp_path: Path, crash_after: str
) -> None:
    points = fill(repo, tmp_path)
    compact(repo)  # a first generation, so the crash hits an incremental compaction
    more = create(tmp_path / "late.img", 4 * MiB, seed=99)
    late = run(repo, "late", more, **SMALL_BLOCKS)
    points[("late", late.id)] = sha256(more)

    compact(repo, crash_after=crash_after)

    assert_intact(repo, points, tmp_path)  # readers are fine in the half-done state
    report = compact(repo)  # and the next compaction finishes the job
    assert repo.index_names() == []
    if crash_after == "shards":  # nothing was committed: the deltas are merged now
        assert report.deltas_merged > 0 and report.generation is not None
    else:  # the generation was committed: only its leftovers remain to delete
        assert report.skipped and report.deltas_merged == 0
        assert (report.deltas_deleted > 0) == (crash_after == "generation")
    assert_intact(repo, points, tmp_path)
    leftover = check(repo)
    assert not any("covered" in n for n in leftover.notes), leftover.notes


def test_the_shard_count_grows_with_the_index(repo: Repository, tmp_path: Path) -> None:
    img = create(tmp_path / "a.img", 4 * MiB, seed=1)
    points = {("a", run(repo, "a", img, **SMALL_BLOCKS).id): sha256(img)}
    first = compact(repo, target=8)
    for n in range(3):
        extra = create(tmp_path / f"b{n}.img", 4 * MiB, seed=40 + n)
        points[(f"b{n}", run(repo, f"b{n}", extra, **SMALL_BLOCKS).id)] = sha256(extra)
    grown = compact(repo, target=8)
    assert grown.prefix_bits > first.prefix_bits
    gen = read_generation(repo, grown.generation or "")
    assert gen.entries == len(repo.load_index()) == sum(gen.counts)
    assert gen.prefix_bits == choose_prefix_bits(gen.entries, target=8)
    assert_intact(repo, points, tmp_path)


def test_only_touched_shards_are_rewritten(repo: Repository, tmp_path: Path) -> None:
    fill(repo, tmp_path, disks=1, size=8 * MiB)
    first = compact(repo, target=4)
    img = tmp_path / "vm0.img"
    extents = mutate(img, 0.01, seed=77)
    run(repo, "vm0", img, changed_extents=extents, **SMALL_BLOCKS)
    second = compact(repo, target=4)
    assert second.prefix_bits == first.prefix_bits
    assert 0 < second.shards_written < second.shards_total / 2


def test_a_second_compactor_is_refused_and_writers_are_not(repo: Repository, tmp_path: Path) -> None:
    points = fill(repo, tmp_path, disks=1)
    with repo.lock(compact=True):
        with pytest.raises(RepositoryLockedError, match="compact"):
            compact(repo)
        img = create(tmp_path / "w.img", 2 * MiB, seed=5)
        points[("w", run(repo, "w", img, **SMALL_BLOCKS).id)] = sha256(img)  # shared lock: no conflict
        with pytest.raises(RepositoryLockedError):
            prune(repo)
    with repo.lock(exclusive=True), pytest.raises(RepositoryLockedError, match="exclusive"):
        compact(repo)
    assert compact(repo).generation is not None
    assert_intact(repo, points, tmp_path)


def test_a_view_follows_a_newer_generation_when_its_shards_go(repo: Repository, tmp_path: Path) -> None:
    img = create(tmp_path / "a.img", 4 * MiB, seed=1)
    run(repo, "a", img, **SMALL_BLOCKS)
    compact(repo, target=1 << 20)  # one shard: every later compaction rewrites it
    view = IndexView.open(repo)
    known = next(iter(repo.load_index()))
    for n in range(2):  # two more generations: the view's generation and its shard are deleted
        extra = tmp_path / f"x{n}.img"
        extra.write_bytes(os.urandom(1 * MiB))  # unique blocks: every run adds a delta
        run(repo, f"x{n}", extra, **SMALL_BLOCKS)
        compact(repo, target=1 << 20)
    assert view.generation is not None and view.generation.id not in generation_ids(repo)
    assert view.get(known) is not None
    assert view.stats.refreshes == 1


def test_compaction_while_writers_checkpoint(repo: Repository, tmp_path: Path) -> None:
    """Compactions run in a loop while two writers replicate (each checkpoint a new delta):
    no entry is lost whatever the interleaving."""
    images = [create(tmp_path / f"c{n}.img", 8 * MiB, seed=70 + n) for n in range(2)]
    points: dict[tuple[str, str], str] = {}
    stop = threading.Event()
    errors: list[BaseException] = []

    def compactor() -> None:
        while not stop.is_set():
            try:
                compact(repo)
            except RepositoryLockedError:
                pass
            except BaseException as exc:  # surfaced below
                errors.append(exc)
                return

    def writer(n: int) -> None:
        try:
            p = run(repo, f"c{n}", images[n], **{**SMALL_BLOCKS, "checkpoint_bytes": 256 * 1024})
            points[(f"c{n}", p.id)] = sha256(images[n])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=compactor)] + [
        threading.Thread(target=writer, args=(n,)) for n in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    stop.set()
    threads[0].join()
    assert errors == []
    compact(repo)
    assert_intact(repo, points, tmp_path)


def test_check_reports_a_missing_shard_and_prune_rebuilds(repo: Repository, tmp_path: Path) -> None:
    points = fill(repo, tmp_path, disks=1)
    report = compact(repo, target=64)
    gen = read_generation(repo, report.generation or "")
    victim = next(s for s in gen.shards if s)
    data = repo.store.get(shard_key(victim))
    repo.store.delete(shard_key(victim))
    problems = check(repo).problems
    assert any(victim in p for p in problems), problems
    repo.store.put(shard_key(victim), data[:-1] + bytes([data[-1] ^ 1]))  # corrupt instead
    assert any(victim in p for p in check(repo).problems)
    repo.store.put(shard_key(victim), data)
    assert check(repo).problems == []
    prune(repo)  # prune writes a generation of its own from the whole index
    assert len(generation_ids(repo)) == 1 and repo.index_names() == []
    assert_intact(repo, points, tmp_path)


def test_a_corrupt_cached_object_is_fetched_again(repo: Repository, tmp_path: Path) -> None:
    fill(repo, tmp_path, disks=1)
    compact(repo)
    cache = ObjectCache(tmp_path / "cache", max_bytes=64 * MiB)
    repo.cache = cache
    first = IndexView.open(repo).load_all()
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "shards" in p.parts]
    assert files
    for path in files:
        path.write_bytes(b"garbage" + path.read_bytes()[7:])
    again = IndexView.open(repo).load_all()
    assert again == first
    assert all(not p.read_bytes().startswith(b"garbage") for p in files)


def test_a_shard_under_a_wrong_name_is_refused(repo: Repository, tmp_path: Path) -> None:
    fill(repo, tmp_path, disks=1)
    report = compact(repo, target=64)
    gen = read_generation(repo, report.generation or "")
    a, b = [s for s in gen.shards if s][:2]
    repo.store.put(shard_key(a), repo.store.get(shard_key(b)))  # sealed fine, wrong content
    with pytest.raises(CorruptObjectError):
        IndexView.open(repo).load_all()


def test_a_version_1_repository_is_upgraded_before_version_2_objects(
    repo: Repository, tmp_path: Path
) -> None:
    import json

    repo.store.put("config", json.dumps({**repo.config, "version": 1}).encode())
    v1 = Repository.open(repo.store, lambda: "pw")
    assert v1.config["version"] == 1
    img = create(tmp_path / "a.img", 4 * MiB, seed=1)
    points = {("a", run(v1, "a", img, **SMALL_BLOCKS).id): sha256(img)}  # a full run: deltas only
    assert Repository.read_config(v1.store)["version"] == 1 and generation_ids(v1) == []
    compact(v1)
    assert Repository.read_config(v1.store)["version"] == 2
    assert_intact(Repository.open(v1.store, lambda: "pw"), points, tmp_path)

    v1.store.put("config", json.dumps({**v1.config, "version": 1}).encode())
    again = Repository.open(repo.store, lambda: "pw")
    extents = mutate(img, 0.2, seed=2)
    assert extents
    run(again, "a", img, changed_extents=extents, **SMALL_BLOCKS)  # may write patches (§5.1)
    assert Repository.read_config(v1.store)["version"] == 2


def test_a_generation_payload_that_is_not_a_generation_is_corrupt(repo: Repository, tmp_path: Path) -> None:
    fill(repo, tmp_path, disks=1)
    report = compact(repo)
    name = f"generations/{report.generation}"
    repo.store.put(name, codec.seal(repo.key, ObjectType.GENERATION, b'{"id": "x"}'))
    with pytest.raises(CorruptObjectError, match="invalid generation"):
        IndexView.open(repo)


def test_check_during_a_compaction_reports_nothing_missing(repo: Repository, tmp_path: Path) -> None:
    """A compaction that commits and deletes deltas while check reads them is no problem."""
    points = fill(repo, tmp_path, disks=1)
    real_read = Repository.read_index_object
    fired = []

    def racing(self: Repository, name: str) -> list:
        if not fired:
            fired.append(name)
            compact(repo)  # merges and deletes every delta, this one included
        return real_read(self, name)

    try:
        Repository.read_index_object = racing  # type: ignore[method-assign]
        report = check(repo)
    finally:
        Repository.read_index_object = real_read  # type: ignore[method-assign]
    assert fired and report.problems == [], report.problems
    assert_intact(repo, points, tmp_path)


def test_a_long_backlog_is_merged_a_bounded_batch_at_a_time(repo: Repository, tmp_path: Path) -> None:
    points = fill(repo, tmp_path, disks=3)
    deltas = repo.index_names()
    before = repo.load_index()
    report = compact(repo, max_entries=40)  # a few deltas per generation
    assert report.deltas_merged == len(deltas) and repo.index_names() == []
    assert len(generation_ids(repo)) == 2  # the newest and its base; older ones are gone
    assert IndexView.open(repo).load_all() == before
    assert_intact(repo, points, tmp_path)


def test_the_node_cache_holds_what_this_node_wrote_and_drops_what_it_deleted(
    repo: Repository, tmp_path: Path
) -> None:
    cache_root = tmp_path / "cache"
    repo.cache = ObjectCache(cache_root, max_bytes=64 * MiB)
    fill(repo, tmp_path, disks=1)
    deltas = set(repo.index_names())
    report = compact(repo)

    cached = {
        str(p.relative_to(cache_root / repo.config["id"])) for p in cache_root.rglob("*") if p.is_file()
    }
    stored = {i.key for prefix in ("index/", "generations/", "shards/") for i in repo.store.list(prefix)}
    assert deltas and not deltas & cached  # the merged deltas left the cache with the store
    assert f"generations/{report.generation}" in cached
    assert {k for k in stored if k.startswith("shards/")} <= cached
    assert cached <= stored


def test_the_node_cache_never_writes_outside_its_folder(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "cache", max_bytes=MiB)
    good = "0123456789abcdef0123456789abcdef"
    for repo_id, key in [
        ("../../x", "shards/ab/cd"),
        (good, "../escape"),
        (good, "shards/../../x"),
        (good, "/abs"),
    ]:
        cache.put(repo_id, key, b"data")
        assert cache.get(repo_id, key) is None
    cache.put(good, "shards/ab/abcd", b"data")
    assert cache.get(good, "shards/ab/abcd") == b"data"
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["abcd"]


def test_deltas_are_read_in_place_and_unsorted_ones_still_count(repo: Repository, tmp_path: Path) -> None:
    """Writers sort a delta's rows so readers bisect it without decoding; a delta of an
    older writer (unsorted) is decoded and answers the same."""
    from shared.repo.codec import IndexEntry

    points = fill(repo, tmp_path, disks=1)
    for name in repo.index_names():
        assert repo.open_index_object(name).is_sorted()
    rows = [(os.urandom(32), IndexEntry(os.urandom(32), 8, 10, 100)) for _ in range(50)]
    rows.sort(key=lambda r: r[0], reverse=True)
    repo.store.put("index/" + "f" * 32, codec.encode_index(repo.key, rows))  # as an older writer did
    view = IndexView.open(repo)
    assert len(view.snapshot.tables) == len(view.delta_names) - 1 and len(view.snapshot.unsorted) == 50
    every = repo.load_index()
    assert all(view.get(block_id) == entry for block_id, entry in every.items())
    assert view.stats.delta_entries == len(every)
    repo.store.delete("index/" + "f" * 32)  # its fake packs do not exist
    assert_intact(repo, points, tmp_path)
