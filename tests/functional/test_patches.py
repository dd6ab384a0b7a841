"""Sub-block increments (FORMAT.md §5.1): a block whose change tracking says few chunks
changed is stored as a patch of its parent block. In process, local-folder repositories;
every point is restored and compared by sha256, and ``check --read-data`` must be clean.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

from node_runtime.recovery.restore import restore
from shared.adapters.local.folder_store import FolderStore
from shared.adapters.store_wrappers import CountingStore
from shared.errors import CorruptObjectError
from shared.policies.retention import RetentionPolicy
from shared.repo import blobs, codec
from shared.repo.check import check
from shared.repo.compact import compact
from shared.repo.prune import forget, prune
from shared.repo.repository import Repository, pack_key
from tests.functional.test_engine import FAST_KDF, restored_sha, run
from tests.support.disks import MiB, sha256

BLOCK = 1 * MiB
CHUNK = BLOCK // 64


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    store = FolderStore(tmp_path / "repo", fsync=False)
    Repository.init(store, "pw", kdf=FAST_KDF)
    return Repository.open(store, lambda: "pw")


def random_image(path: Path, size: int, seed: int) -> Path:
    """Incompressible data, so stored bytes measure what was sent."""
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def scribble(path: Path, writes: list[tuple[int, int]], seed: int) -> list[tuple[int, int]]:
    """Overwrite each (offset, length) with random bytes; return them as the changed extents."""
    rnd = random.Random(seed)
    with open(path, "r+b") as f:
        for offset, length in writes:
            f.seek(offset)
            f.write(rnd.randbytes(length))
    return writes


def pack_bytes(repo: Repository) -> int:
    return sum(i.size for i in repo.store.list("data/"))


def assert_all_restore(repo: Repository, points: dict[str, str], tmp_path: Path, disk: str = "vm") -> None:
    for point, digest in points.items():
        assert restored_sha(repo, disk, point, tmp_path) == digest, point
    assert check(repo, read_data=True).problems == []


def test_a_small_write_costs_a_patch_not_a_block(repo: Repository, tmp_path: Path) -> None:
    img = random_image(tmp_path / "vm.img", 16 * MiB, seed=1)
    first = run(repo, "vm", img)
    first_sha = sha256(img)
    twin = tmp_path / "twin"
    shutil.copytree(tmp_path / "repo", twin)
    whole = Repository.open(FolderStore(twin, fsync=False), lambda: "pw")
    writes = [(b * BLOCK + 5 * CHUNK + 100, 4096) for b in range(0, 16, 2)]  # 8 x 4 KiB, 8 blocks
    scribble(img, writes, seed=2)

    before = pack_bytes(repo)
    patched = run(repo, "vm", img, changed_extents=writes)
    added = pack_bytes(repo) - before
    before_whole = pack_bytes(whole)
    run(whole, "vm", img, changed_extents=writes, max_patch_chunks=0)
    added_whole = pack_bytes(whole) - before_whole

    assert patched.stats.blocks_patched == patched.stats.blocks_new == 8
    # each write straddles one chunk boundary at most: <= 2 chunks of 16 KiB per block
    assert added <= 8 * 2 * CHUNK + 64 * 1024  # plus pack headers and trailers
    assert added_whole >= 8 * BLOCK
    assert added * 10 < added_whole
    assert_all_restore(repo, {first.id: first_sha, patched.id: sha256(img)}, tmp_path)


def test_repeated_changes_merge_masks_and_keep_one_base(repo: Repository, tmp_path: Path) -> None:
    img = random_image(tmp_path / "vm.img", 8 * MiB, seed=3)
    points = {run(repo, "vm", img).id: sha256(img)}
    rnd = random.Random(4)
    for round_ in range(8):
        writes = [(rnd.randrange(0, 8 * MiB - 4096), 4096) for _ in range(6)]
        scribble(img, writes, seed=100 + round_)
        p = run(repo, "vm", img, changed_extents=writes)
        points[p.id] = sha256(img)
    index = repo.load_index()
    patches = [e for e in index.values() if e.base is not None]
    assert patches, "no block was stored as a patch"
    for e in patches:  # depth one: a base is always a whole block
        assert e.base is not None and index[e.base].base is None
        assert e.mask and e.mask.bit_count() <= 32
    assert_all_restore(repo, points, tmp_path)


def test_a_block_changed_too_much_is_stored_whole(repo: Repository, tmp_path: Path) -> None:
    img = random_image(tmp_path / "vm.img", 4 * MiB, seed=5)
    run(repo, "vm", img)
    writes = [(BLOCK, 33 * CHUNK), (2 * BLOCK + 7, 10)]  # 33 chunks of block 1; 1 chunk of block 2
    scribble(img, writes, seed=6)
    p = run(repo, "vm", img, changed_extents=writes)
    assert p.stats.blocks_new == 2 and p.stats.blocks_patched == 1
    assert_all_restore(repo, {p.id: sha256(img)}, tmp_path)


def test_the_last_partial_block_and_full_reads_are_never_patched(repo: Repository, tmp_path: Path) -> None:
    img = random_image(tmp_path / "vm.img", 3 * MiB + 4096, seed=7)
    run(repo, "vm", img)
    writes = [(3 * MiB + 10, 100)]
    scribble(img, writes, seed=8)
    p = run(repo, "vm", img, changed_extents=writes)
    p_sha = sha256(img)
    assert p.stats.blocks_new == 1 and p.stats.blocks_patched == 0
    scribble(img, [(10, 100)], seed=9)
    full = run(repo, "vm", img)  # no extent list: a full read has no chunk masks
    assert full.stats.blocks_new == 1 and full.stats.blocks_patched == 0
    assert_all_restore(repo, {p.id: p_sha, full.id: sha256(img)}, tmp_path)


def test_prune_keeps_the_bases_of_live_patches(repo: Repository, tmp_path: Path) -> None:
    img = random_image(tmp_path / "vm.img", 8 * MiB, seed=10)
    run(repo, "vm", img)
    writes = [(b * BLOCK + 300, 2000) for b in range(8)]
    scribble(img, writes, seed=11)
    second = run(repo, "vm", img, changed_extents=writes)
    assert second.stats.blocks_patched == 8
    again = writes[:4]
    scribble(img, again, seed=12)
    latest = run(repo, "vm", img, changed_extents=again)
    assert latest.stats.blocks_patched == 4
    compact(repo)
    # the bases' only point goes; half of the second point's patch pack is dead
    forget(repo, "vm", RetentionPolicy(keep_last=1), now=latest.time)
    report = prune(repo)
    assert report.packs_repacked == 1
    index = repo.load_index()
    live = set(repo.block_map(latest))
    assert sum(1 for b in live if index[b].base is not None) == 4  # the repacked four are whole now
    assert_all_restore(repo, {latest.id: sha256(img)}, tmp_path)


def test_a_damaged_base_is_named_by_restore_and_check(repo: Repository, tmp_path: Path) -> None:
    img = random_image(tmp_path / "vm.img", 2 * MiB, seed=12)
    run(repo, "vm", img)
    writes = [(BLOCK + 10, 10)]
    scribble(img, writes, seed=13)
    p = run(repo, "vm", img, changed_extents=writes)
    index = repo.load_index()
    patch = next(e for e in index.values() if e.base is not None)
    assert patch.base is not None
    base = index[patch.base]
    path = tmp_path / "repo" / pack_key(base.pack_id)
    data = bytearray(path.read_bytes())
    data[base.offset + 20] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError, match=pack_key(base.pack_id)):
        restore(repo, p, str(tmp_path / "out.img"))
    assert any(
        patch.base.hex() in problem or pack_key(base.pack_id) in problem
        for problem in check(repo, read_data=True).problems
    )


def test_a_lying_change_list_is_caught_by_check(repo: Repository, tmp_path: Path) -> None:
    """Change tracking that misses a write inside a patched block makes that block fail its
    id at restore and in ``check --read-data``: loud, never silently wrong data."""
    img = random_image(tmp_path / "vm.img", 2 * MiB, seed=14)
    run(repo, "vm", img)
    scribble(img, [(10, 10), (40 * CHUNK, 10)], seed=15)
    run(repo, "vm", img, changed_extents=[(10, 10)])  # the second write is not reported
    problems = check(repo, read_data=True).problems
    assert any("does not match its id" in p for p in problems), problems


def test_patch_blobs_and_index_rows_round_trip(repo: Repository) -> None:
    data = os.urandom(BLOCK)
    base = os.urandom(BLOCK)
    mask = 1 | 1 << 63
    merged = bytearray(base)
    merged[:CHUNK] = data[:CHUNK]
    merged[-CHUNK:] = data[-CHUNK:]
    block_id, base_id = repo.key.block_id(bytes(merged)), repo.key.block_id(base)
    blob = blobs.encode_patch(repo.key, block_id, blobs.patch_of(bytes(merged), base_id, mask))
    got = blobs.decode_blob(repo.key, block_id, blob, BLOCK, name="t", base=lambda i: base)
    assert got == bytes(merged)
    with pytest.raises(CorruptObjectError, match="patch"):
        blobs.decode_blob(repo.key, block_id, blob, BLOCK, name="t")
    with pytest.raises(CorruptObjectError, match="does not match its id"):
        blobs.decode_blob(repo.key, block_id, blob, BLOCK, name="t", base=lambda i: os.urandom(BLOCK))
    entry = codec.IndexEntry(bytes(32), 8, len(blob), BLOCK, base_id, mask)
    plain = codec.IndexEntry(bytes(32), 8 + len(blob), 10, BLOCK)
    rows = codec.decode_index(
        repo.key, codec.encode_index(repo.key, [(block_id, entry), (base_id, plain)]), name="i"
    )
    assert rows == [(block_id, entry), (base_id, plain)]
    bad = codec.index_payload([(base_id, plain)]) + (1).to_bytes(4, "little") + bytes(44)
    with pytest.raises(CorruptObjectError, match="patch row"):
        codec.decode_index(repo.key, codec.seal(repo.key, codec.ObjectType.INDEX, bad), name="i")


def test_restoring_many_patches_reads_their_bases_in_few_requests(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    Repository.init(FolderStore(root, fsync=False), "pw", kdf=FAST_KDF)
    counting = CountingStore(FolderStore(root, fsync=False))
    repo = Repository.open(counting, lambda: "pw")
    img = random_image(tmp_path / "vm.img", 16 * MiB, seed=20)
    run(repo, "vm", img)
    writes = [(b * BLOCK + 999, 3000) for b in range(16)]
    scribble(img, writes, seed=21)
    latest = run(repo, "vm", img, changed_extents=writes)
    assert latest.stats.blocks_patched == 16
    index = repo.load_index()
    base_packs = {index[e.base].pack_id for e in index.values() if e.base is not None}
    counting.reset()
    assert restored_sha(repo, "vm", latest.id, tmp_path) == sha256(img)
    small = 4  # the point, its page and the two index deltas
    # one read for the 16 patches, one per pack holding bases (16 one-by-one without coalescing)
    assert counting.gets - small == 1 + len(base_packs) < 16
