"""The replication engine end to end, in process, on a local-folder repository.

Round trips are checked by sha256 of the whole image; "what was sent" is measured with
CountingStore around the real folder store. The same flows run against S3 and Azure in
tests/e2e.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node_runtime.recovery.restore import restore
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.files import FileSource
from shared.adapters.local.folder_store import FolderStore
from shared.adapters.store_wrappers import CountingStore
from shared.errors import (
    CorruptObjectError,
    InvalidInputError,
    PointNotFoundError,
    RepositoryLockedError,
    StoreError,
    WrongPasswordError,
)
from shared.policies.retention import RetentionPolicy
from shared.repo.check import check
from shared.repo.keys import KdfParams
from shared.repo.prune import forget, prune
from shared.repo.repository import Repository
from tests.support.disks import MiB, create, mutate, sha256

FAST_KDF = KdfParams(iterations=1, memory_kib=8192, lanes=1)
SMALL = ReplicationOptions(pack_target=4 * MiB, streams=3, workers=2)


class PackCounting(CountingStore):
    """CountingStore that also sums the bytes of packs (``data/…``) written."""

    pack_bytes = 0

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data)
        if key.startswith("data/"):
            self.pack_bytes += len(data)


def open_repo(root: Path, password: str = "pw") -> tuple[Repository, PackCounting]:
    counting = PackCounting(FolderStore(root, fsync=False))
    return Repository.open(counting, lambda: password), counting


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    Repository.init(FolderStore(tmp_path / "repo", fsync=False), "pw", kdf=FAST_KDF)
    return tmp_path / "repo"


def run(repo: Repository, disk: str, image: Path, changed_extents=None, **opts) -> object:
    options = ReplicationOptions(**{**SMALL.__dict__, **opts})
    with FileSource(image, changed_extents=changed_extents) as src:
        return replicate(repo, disk, src, options)


def restored_sha(repo: Repository, disk: str, point: str, tmp_path: Path) -> str:
    target = tmp_path / f"restore-{point}.img"
    restore(repo, repo.resolve_point(disk, point), str(target))
    digest = sha256(target)
    target.unlink()
    return digest


def test_full_then_incremental_with_and_without_extents(repo_dir: Path, tmp_path: Path) -> None:
    img = create(tmp_path / "vm1.img", 48 * MiB, seed=1)
    repo, counting = open_repo(repo_dir)
    p1 = run(repo, "vm1", img)
    full_sent = counting.bytes_put
    sha1 = sha256(img)

    extents = mutate(img, 0.05, seed=7)
    before = counting.bytes_put
    p2 = run(repo, "vm1", img, changed_extents=extents)
    incremental_sent = counting.bytes_put - before
    sha2 = sha256(img)
    assert p2.parent == p1.id
    assert 0 < p2.stats.blocks_read < p1.stats.blocks_read / 2  # only touched blocks were read
    assert 0 < incremental_sent < full_sent / 3

    mutate(img, 0.05, seed=8)
    p3 = run(repo, "vm1", img)  # no extent list: reads everything, sends only changed blocks
    sha3 = sha256(img)
    assert p3.stats.blocks_read == p1.stats.blocks_read or p3.stats.blocks_read > p2.stats.blocks_read
    assert 0 < p3.stats.blocks_new < p1.stats.blocks_new / 2

    assert sha1 != sha2 != sha3
    assert restored_sha(repo, "vm1", p1.id, tmp_path) == sha1
    assert restored_sha(repo, "vm1", p2.id, tmp_path) == sha2
    assert restored_sha(repo, "vm1", p3.id, tmp_path) == sha3
    assert [p.id for p in repo.list_points("vm1")] == [p1.id, p2.id, p3.id]
    assert check(repo, read_data=True).ok


def test_unchanged_disk_sends_no_blocks(repo_dir: Path, tmp_path: Path) -> None:
    img = create(tmp_path / "vm1.img", 16 * MiB, seed=3)
    repo, _counting = open_repo(repo_dir)
    p1 = run(repo, "vm1", img)
    packs_before = len(list(repo.store.list("data/")))
    p2 = run(repo, "vm1", img)
    assert p2.stats.blocks_new == 0
    assert len(list(repo.store.list("data/"))) == packs_before
    assert p2.pages == p1.pages  # unchanged pages are shared, not rewritten


def test_cross_vm_dedup_stores_common_blocks_once(repo_dir: Path, tmp_path: Path) -> None:
    a = create(tmp_path / "a.img", 64 * MiB, seed=1)
    repo, _ = open_repo(repo_dir)
    run(repo, "vm-a", a)
    b = tmp_path / "b.img"
    b.write_bytes(a.read_bytes())  # a clone of vm-a (same template)
    pb = run(repo, "vm-b", b)
    assert pb.stats.blocks_new == 0
    assert restored_sha(repo, "vm-b", "latest", tmp_path) == sha256(a)


def test_holes_stay_holes_and_small_blocks(repo_dir: Path, tmp_path: Path) -> None:
    img = tmp_path / "sparse.img"
    with open(img, "wb") as f:
        f.truncate(40 * MiB + 12345)  # size not a multiple of the block size
        f.seek(3 * MiB)
        f.write(os.urandom(200_000))
        f.seek(40 * MiB)
        f.write(b"tail" * 3000)
    repo, _ = open_repo(repo_dir)
    p = run(repo, "sparse", img, block_size=64 << 10)
    assert p.block_size == 64 << 10 and p.disk_size == 40 * MiB + 12345
    assert p.stats.blocks_read <= 6  # only allocated ranges were read
    target = tmp_path / "out.img"
    restore(repo, p, str(target))
    assert sha256(target) == sha256(img)
    assert target.stat().st_blocks * 512 < 2 * MiB  # restored file is sparse too


def test_block_size_is_fixed_per_disk(repo_dir: Path, tmp_path: Path) -> None:
    img = create(tmp_path / "vm1.img", 4 * MiB, seed=1)
    repo, _ = open_repo(repo_dir)
    run(repo, "vm1", img)
    with pytest.raises(InvalidInputError, match="fixed per disk"):
        run(repo, "vm1", img, block_size=64 << 10)


def test_disk_that_grows_and_shrinks(repo_dir: Path, tmp_path: Path) -> None:
    img = create(tmp_path / "vm1.img", 8 * MiB, seed=1)
    repo, _ = open_repo(repo_dir)
    run(repo, "vm1", img)
    with open(img, "r+b") as f:
        f.truncate(12 * MiB)
        f.seek(11 * MiB)
        f.write(b"x" * 1000)
    grown = run(repo, "vm1", img, changed_extents=[(11 * MiB, 1000)])  # size changed: full read
    assert grown.disk_size == 12 * MiB
    assert restored_sha(repo, "vm1", grown.id, tmp_path) == sha256(img)
    with open(img, "r+b") as f:
        f.truncate(5 * MiB)
    shrunk = run(repo, "vm1", img)
    assert restored_sha(repo, "vm1", shrunk.id, tmp_path) == sha256(img)


def test_extent_past_disk_end_is_rejected(repo_dir: Path, tmp_path: Path) -> None:
    img = create(tmp_path / "vm1.img", 4 * MiB, seed=1)
    repo, _ = open_repo(repo_dir)
    run(repo, "vm1", img)
    with pytest.raises(InvalidInputError, match="past the disk end"):
        run(repo, "vm1", img, changed_extents=[(4 * MiB - 10, 20)])


class FailAfter(PackCounting):
    """Fails every pack upload after the first ``n`` (a crash of the uplink)."""

    def __init__(self, inner, n: int) -> None:
        super().__init__(inner)
        self.left = n

    def put(self, key: str, data: bytes) -> None:
        if key.startswith("data/"):
            if self.left <= 0:
                raise StoreError(f"injected failure writing {key}", key=key)
            self.left -= 1
        super().put(key, data)


def test_failed_run_resumes_without_resending_committed_packs(repo_dir: Path, tmp_path: Path) -> None:
    img = create(tmp_path / "vm1.img", 64 * MiB, seed=5)
    store = FailAfter(FolderStore(repo_dir, fsync=False), n=4)
    repo = Repository.open(store, lambda: "pw")
    with pytest.raises(StoreError, match="injected"):
        run(repo, "vm1", img, streams=1, checkpoint_bytes=1)
    assert repo.point_names() == []  # no point without all its data
    assert check(repo).ok  # the checkpointed index is consistent

    repo2, counting = open_repo(repo_dir)
    p = run(repo2, "vm1", img)
    reference_dir = tmp_path / "ref"
    Repository.init(FolderStore(reference_dir, fsync=False), "pw", kdf=FAST_KDF)
    ref_repo, ref_counting = open_repo(reference_dir)
    run(ref_repo, "vm1", img)
    # the 4 packs committed before the failure (>= 4 MiB each) were not sent again
    assert counting.pack_bytes < ref_counting.pack_bytes - 4 * 4 * MiB
    assert restored_sha(repo2, "vm1", p.id, tmp_path) == sha256(img)


def corrupt(path: Path, offset_from_end: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_or_truncated_pack_is_named_never_restored(repo_dir: Path, tmp_path: Path) -> None:
    img = create(tmp_path / "vm1.img", 16 * MiB, seed=1)
    repo, _ = open_repo(repo_dir)
    p = run(repo, "vm1", img)
    packs = sorted((repo_dir / "data").rglob("*"))
    packs = [x for x in packs if x.is_file()]
    victim = packs[0]
    data = bytearray(victim.read_bytes())
    data[20] ^= 0x01  # inside the first blob
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError, match=victim.name):
        restore(repo, p, str(tmp_path / "out.img"))
    assert check(repo).ok  # structure is intact...
    report = check(repo, read_data=True)  # ...but reading the data finds it
    assert not report.ok and any(victim.name in problem for problem in report.problems)

    victim.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(CorruptObjectError, match=victim.name):
        restore(repo, p, str(tmp_path / "out.img"))
    assert not check(repo).ok


def test_corrupt_point_and_page_are_named(repo_dir: Path, tmp_path: Path) -> None:
    img = create(tmp_path / "vm1.img", 8 * MiB, seed=1)
    repo, _ = open_repo(repo_dir)
    p = run(repo, "vm1", img)
    page = next(x for x in (repo_dir / "pages").rglob("*") if x.is_file())
    corrupt(page)
    with pytest.raises(CorruptObjectError, match=page.name):
        repo.block_map(repo.read_point("vm1", p.id))
    point_file = repo_dir / "points" / "vm1" / p.id
    corrupt(point_file, 5)
    with pytest.raises(CorruptObjectError, match=p.id):
        repo.read_point("vm1", p.id)
    report = check(repo)
    assert not report.ok and any(p.id in problem for problem in report.problems)


def test_wrong_passphrase_is_refused(repo_dir: Path) -> None:
    with pytest.raises(WrongPasswordError):
        open_repo(repo_dir, password="not-it")


def test_unencrypted_repository_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    Repository.init(FolderStore(root, fsync=False), None)
    repo = Repository.open(FolderStore(root, fsync=False), lambda: pytest.fail("no passphrase needed"))
    img = create(tmp_path / "vm1.img", 8 * MiB, seed=2)
    p = run(repo, "vm1", img)
    assert restored_sha(repo, "vm1", p.id, tmp_path) == sha256(img)


def test_forget_and_prune_free_space_and_keep_points_restorable(repo_dir: Path, tmp_path: Path) -> None:
    img = create(tmp_path / "vm1.img", 32 * MiB, seed=1)
    repo, _ = open_repo(repo_dir)
    shas = []
    for seed in range(4):
        if seed:
            mutate(img, 0.2, seed=seed)
        run(repo, "vm1", img)
        shas.append(sha256(img))
    other = create(tmp_path / "vm2.img", 8 * MiB, seed=9)
    run(repo, "vm2", other)

    def stored() -> int:
        return sum(f.stat().st_size for f in repo_dir.rglob("*") if f.is_file())

    before = stored()
    decisions = forget(repo, "vm1", RetentionPolicy(keep_last=2), now=repo.list_points("vm1")[-1].time)
    assert [d.keep for d in decisions] == [True, True, False, False]
    report = prune(repo)
    assert report.packs_deleted > 0 and stored() < before
    kept = repo.list_points("vm1")
    assert len(kept) == 2
    assert restored_sha(repo, "vm1", kept[0].id, tmp_path) == shas[2]
    assert restored_sha(repo, "vm1", kept[1].id, tmp_path) == shas[3]
    assert restored_sha(repo, "vm2", "latest", tmp_path) == sha256(other)
    assert check(repo, read_data=True).ok
    again = prune(repo)  # idempotent: nothing left to free
    assert again.packs_deleted == 0 and again.packs_repacked == 0


def test_forget_refuses_empty_policy(repo_dir: Path) -> None:
    repo, _ = open_repo(repo_dir)
    with pytest.raises(InvalidInputError, match="empty policy"):
        forget(repo, "vm1", RetentionPolicy(), now=__import__("datetime").datetime.now().astimezone())


def test_prune_refuses_while_a_replication_holds_the_lock(repo_dir: Path) -> None:
    repo, _ = open_repo(repo_dir)
    with repo.lock(exclusive=False), pytest.raises(RepositoryLockedError):
        prune(repo)
    assert prune(repo).points == 0  # the lock is released afterwards


def test_unknown_point_and_disk(repo_dir: Path) -> None:
    repo, _ = open_repo(repo_dir)
    with pytest.raises(PointNotFoundError):
        repo.resolve_point("nope", "latest")
    with pytest.raises(InvalidInputError):
        repo.resolve_point("../etc", "latest")


def test_stale_locks_are_ignored_and_can_be_removed(repo_dir: Path) -> None:
    import json

    repo, _ = open_repo(repo_dir)
    dead = {"exclusive": False, "host": "gone", "pid": 1}
    repo.store.put("locks/" + "a" * 32, json.dumps({**dead, "time": "2020-01-01T00:00:00Z"}).encode())
    assert prune(repo).points == 0  # a lock not refreshed for 30 minutes does not block
    repo.store.put("locks/" + "b" * 32, json.dumps({**dead, "time": "2999-01-01T00:00:00Z"}).encode())
    with pytest.raises(RepositoryLockedError, match="gone"):
        prune(repo)
    assert repo.remove_locks() == ["locks/" + "a" * 32]
    assert repo.remove_locks(stale_only=False) == ["locks/" + "b" * 32]
    assert prune(repo).points == 0
