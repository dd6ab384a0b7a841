"""Failback of one disk into its origin image (real qemu-storage-daemon, NBD, qcow2 bitmaps).

The plan-level cycle (failover into QEMU, reverse protection, failback through the API)
is in test_failback.py; this file pins the block arithmetic: only the blocks that differ
are written, untracked origins are refused unless verified, and forward protection
resumes incrementally from the failback point.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from node_runtime.recovery.failback import failback_disk
from node_runtime.recovery.restore import restore
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.kvm.offline import OfflineMachine
from node_runtime.sources.kvm.source import DiskRef
from shared.adapters.local.folder_store import FolderStore
from shared.errors import InvalidStateError, SourceError
from shared.repo.keys import KdfParams
from shared.repo.points import PointRecord
from shared.repo.repository import Repository
from tests.support.kvm import MiB, make_qcow2, qemu_img

pytestmark = pytest.mark.failback
BLOCK = 256 * 1024


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    store = FolderStore(tmp_path / "repo", fsync=False)
    Repository.init(store, "pw", kdf=KdfParams(iterations=1, memory_kib=8192, lanes=1))
    return Repository.open(store, lambda: "pw")


def replicate_image(repo: Repository, disk_id: str, image: Path, scratch: Path, seed: tuple[str, str] | None = None,
                    ) -> PointRecord:  # fmt: skip
    source = OfflineMachine([DiskRef(disk_id, str(image))], scratch_dir=scratch)
    snap = source.open()
    try:
        disk = snap.disks[str(image)]
        point = replicate(repo, disk_id, disk, ReplicationOptions(block_size=BLOCK, seed_parent=seed))
        disk.committed(point)
    finally:
        snap.close()
    return point


def qemu_io(image: Path, command: str) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(image)], check=True, capture_output=True)


def raw(image: Path, tmp_path: Path) -> bytes:
    out = tmp_path / f"{image.stem}.raw"
    qemu_img("convert", "-O", "raw", str(image), str(out))
    return out.read_bytes()


def failed_over(repo: Repository, tmp_path: Path) -> tuple[Path, Path, PointRecord, PointRecord]:
    """Protect an origin, 'fail over' (restore its point into a recovered image), then the
    origin gets writes the failover lost and the recovered machine writes its own."""
    origin = tmp_path / "origin.qcow2"
    make_qcow2(origin, 32 * MiB, seed=3)
    scratch = tmp_path / "scratch"
    forward = replicate_image(repo, "app-d0", origin, scratch)
    recovered_raw = tmp_path / "recovered.raw"
    restore(repo, forward, str(recovered_raw))
    recovered = tmp_path / "recovered.qcow2"
    qemu_img("convert", "-O", "qcow2", str(recovered_raw), str(recovered))
    qemu_io(origin, "write -P 0x77 20971520 4096")  # on the origin after its last point: lost in the failover
    qemu_io(recovered, "write -P 0x11 1048576 8192")  # the recovered machine's own work
    qemu_io(recovered, "write -P 0x12 9437184 300000")
    reverse = replicate_image(repo, "app-d0.r1", recovered, scratch, seed=("app-d0", forward.id))
    return origin, recovered, forward, reverse


def test_failback_writes_only_the_blocks_that_differ_and_forward_protection_resumes(
    repo: Repository, tmp_path: Path
) -> None:
    origin, recovered, forward, reverse = failed_over(repo, tmp_path)
    assert reverse.parent == forward.id and reverse.tags["read"] == "full"
    assert reverse.stats.bytes_new_raw <= 4 * BLOCK, "the reverse lineage stores only the recovered machine's changes"

    result = failback_disk(repo, disk_id="app-d0", reverse=reverse, origin=str(origin), verify=False,
                           scratch_dir=tmp_path / "scratch")  # fmt: skip
    assert raw(origin, tmp_path) == raw(recovered, tmp_path)
    # 1 block (8 KiB at 1 MiB) + 2 blocks (300 KB at 9 MiB) changed, 1 block dirty on the origin
    assert (result.changed_blocks, result.dirty_blocks, result.written_blocks) == (3, 1, 4)
    assert result.written_bytes <= 4 * BLOCK  # holes among them are zeroed, not counted as data
    assert result.point.parent == forward.id and result.point.pages == reverse.pages

    qemu_io(origin, "write -P 0x33 4194304 4096")  # the origin runs again
    resumed = replicate_image(repo, "app-d0", origin, tmp_path / "scratch")
    assert resumed.parent == result.point.id and resumed.tags["read"] == "changed"
    assert resumed.stats.bytes_read == BLOCK
    target = tmp_path / "check.raw"
    restore(repo, resumed, str(target))
    assert target.read_bytes() == raw(origin, tmp_path)


def test_untracked_origin_is_refused_unless_verified_and_verification_finds_divergence(
    repo: Repository, tmp_path: Path
) -> None:
    origin, recovered, _forward, reverse = failed_over(repo, tmp_path)
    subprocess.run(["qemu-img", "bitmap", "--remove", str(origin), "lifeboat.app-d0.1"], check=True)
    qemu_io(origin, "write -P 0x55 27262976 4096")  # untracked divergence
    with pytest.raises(InvalidStateError, match="run a verified failback"):
        failback_disk(repo, disk_id="app-d0", reverse=reverse, origin=str(origin), verify=False,
                      scratch_dir=tmp_path / "scratch")  # fmt: skip
    result = failback_disk(repo, disk_id="app-d0", reverse=reverse, origin=str(origin), verify=True,
                           scratch_dir=tmp_path / "scratch")  # fmt: skip
    assert result.diverged_blocks == 2  # the write lost in the failover and the untracked one
    assert raw(origin, tmp_path) == raw(recovered, tmp_path)


def test_missing_origin_is_refused(repo: Repository, tmp_path: Path) -> None:
    origin, _recovered, _forward, reverse = failed_over(repo, tmp_path)
    origin.unlink()
    with pytest.raises(SourceError, match="not reachable"):
        failback_disk(repo, disk_id="app-d0", reverse=reverse, origin=str(origin), verify=False,
                      scratch_dir=tmp_path / "scratch")  # fmt: skip
