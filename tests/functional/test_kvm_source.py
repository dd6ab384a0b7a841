"""The KVM source against real QEMU: dirty bitmaps, fleecing and NBD reads (marker ``kvm``).

Each test runs ``qemu-system-x86_64 -accel tcg`` with qcow2 data disks, writes into the
running drives through QMP while replication runs, and restores every point to compare it
with the byte model frozen at the run's instant. Offline qcow2 images go through
``qemu-storage-daemon``. The repository is a local folder.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node_runtime.recovery.restore import restore
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.kvm.offline import OfflineMachine
from node_runtime.sources.kvm.source import DiskRef, KvmMachine
from shared.adapters.local.folder_store import FolderStore
from shared.errors import SourceError
from shared.repo.keys import KdfParams
from shared.repo.points import PointRecord
from shared.repo.repository import Repository
from tests.support.kvm import KvmVm, MiB, make_qcow2, qemu_img

pytestmark = pytest.mark.kvm

OPTS = ReplicationOptions(pack_target=4 * MiB, streams=2, workers=2, block_size=256 * 1024)
REFS = [DiskRef("web-d0", "device:0"), DiskRef("web-d1", "device:1")]


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    store = FolderStore(tmp_path / "repo", fsync=False)
    Repository.init(store, "pw", kdf=KdfParams(iterations=1, memory_kib=8192, lanes=1))
    return Repository.open(store, lambda: "pw")


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[KvmVm]:
    machine = KvmVm(tmp_path / "vm", "web", [40 * MiB, 24 * MiB]).start()
    try:
        yield machine
    finally:
        machine.stop()


def run(repo: Repository, source: KvmMachine | OfflineMachine, *, during: Callable[[], None] | None = None,
        ) -> dict[str, PointRecord]:  # fmt: skip
    """One replication run like the node agent's: open (freeze), read every disk, commit, close."""
    snap = source.open()
    points: dict[str, PointRecord] = {}
    try:
        if during is not None:
            during()  # the guest keeps writing after the freeze: none of it may reach this point
        for ref in source.refs:
            disk = snap.disks[ref.source]
            points[ref.disk_id] = replicate(repo, ref.disk_id, disk, OPTS)
            disk.committed(points[ref.disk_id])
    finally:
        snap.close()
    return points


def restored(repo: Repository, point: PointRecord, tmp_path: Path) -> bytes:
    target = tmp_path / f"restore-{point.id}.img"
    restore(repo, point, str(target))
    data = target.read_bytes()
    target.unlink()
    return data


def check_points(repo: Repository, points: dict[str, PointRecord], frozen: list[bytes], tmp_path: Path) -> None:
    for i, ref in enumerate(REFS):
        assert restored(repo, points[ref.disk_id], tmp_path) == frozen[i], f"{ref.disk_id} differs from the frozen copy"


def test_running_vm_full_then_three_incrementals_restore_the_frozen_instant(
    vm: KvmVm, repo: Repository, tmp_path: Path
) -> None:
    source = KvmMachine(str(vm.qmp_socket), REFS, scratch_dir=tmp_path / "scratch", vm_id="web")

    def guest_writes(round_: int) -> Callable[[], None]:
        def write() -> None:  # overwrite ranges the run is about to read: copy-before-write keeps the old data
            vm.write(0, (round_ * 3 + 1) * MiB, 2 * MiB, 0x40 + round_)
            vm.write(1, 5 * MiB + 4096 * round_, 8192, 0x60 + round_)
        return write

    frozen = vm.snapshot_model()
    points = run(repo, source, during=guest_writes(0))
    check_points(repo, points, frozen, tmp_path)
    assert {p.tags["read"] for p in points.values()} == {"full"}
    assert points["web-d0"].change_token == "qemu-bitmap:lifeboat.web-d0.1"

    for round_ in (1, 2, 3):
        vm.write(0, round_ * 7 * MiB + 512, 4096, 0x10 + round_)  # sub-block, unaligned
        vm.zero(1, (round_ + 10) * MiB, 300 * 1024)  # zeroes over data must come through as zeros
        frozen = vm.snapshot_model()
        previous = points
        points = run(repo, source, during=guest_writes(round_))
        check_points(repo, points, frozen, tmp_path)
        for disk_id, point in points.items():
            assert point.tags["read"] == "changed", point.tags
            assert point.parent == previous[disk_id].id
            assert point.change_token == f"qemu-bitmap:lifeboat.{disk_id}.{round_ + 1}"
        # only the dirty ranges were read: the writes since the last freeze, never the whole disk
        assert points["web-d0"].stats.bytes_read <= 4 * MiB, points["web-d0"].stats
        assert points["web-d1"].stats.bytes_read <= 2 * MiB, points["web-d1"].stats
    # committed runs keep one generation per disk and leave nothing else in QEMU
    assert vm.bitmaps(0) == ["lifeboat.web-d0.4"]
    assert vm.leftovers() == {"exports": [], "jobs": [], "nodes": [], "frozen": []}


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from node_runtime.sources.kvm.source import DiskRef, KvmMachine
    refs = [DiskRef("web-d0", "device:0"), DiskRef("web-d1", "device:1")]
    snap = KvmMachine(sys.argv[1], refs, scratch_dir=Path(sys.argv[2]), vm_id="web").open()
    snap.disks["device:0"].read(0, 65536)  # mid-read
    os.kill(os.getpid(), signal.SIGKILL)  # killed after the bitmap rotation, before any commit
""")


def test_a_run_killed_after_the_rotation_loses_no_change(vm: KvmVm, repo: Repository, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    source = KvmMachine(str(vm.qmp_socket), REFS, scratch_dir=scratch, vm_id="web")
    first = run(repo, source)
    vm.write(0, 3 * MiB, 64 * 1024, 0x21)  # before the killed run's freeze
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, str(vm.qmp_socket), str(scratch)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    assert vm.leftovers()["exports"], "the killed run should have left its export behind"
    vm.write(1, 9 * MiB, 128 * 1024, 0x22)  # after it
    frozen = vm.snapshot_model()
    points = run(repo, source)
    check_points(repo, points, frozen, tmp_path)
    for disk_id, point in points.items():
        assert point.tags["read"] == "changed" and point.parent == first[disk_id].id
    assert vm.leftovers() == {"exports": [], "jobs": [], "nodes": [], "frozen": []}
    assert vm.bitmaps(0) == ["lifeboat.web-d0.3"]  # 1 (committed), 2 (killed run's), 3 (this one)


def test_bitmap_removed_behind_our_back_falls_back_to_a_deduplicated_full_read(
    vm: KvmVm, repo: Repository, tmp_path: Path
) -> None:
    source = KvmMachine(str(vm.qmp_socket), REFS, scratch_dir=tmp_path / "scratch", vm_id="web")
    run(repo, source)
    vm.remove_bitmap(0, "lifeboat.web-d0.1")
    vm.write(0, 2 * MiB, 4096, 0x33)
    frozen = vm.snapshot_model()
    points = run(repo, source)
    check_points(repo, points, frozen, tmp_path)
    d0, d1 = points["web-d0"], points["web-d1"]
    assert d0.tags["read"] == "full" and "lifeboat.web-d0.1 is missing" in d0.tags["read_note"]
    assert d1.tags["read"] == "changed"
    assert d0.stats.bytes_new_raw <= 256 * 1024, "the full read should store only the changed block"
    follow_up = run(repo, source)  # the fallback re-established the bitmap: incremental again
    assert follow_up["web-d0"].tags["read"] == "changed" and follow_up["web-d0"].stats.bytes_read == 0


def test_offline_qcow2_images_are_read_through_their_persistent_bitmaps(repo: Repository, tmp_path: Path) -> None:
    images = [tmp_path / "db-disk0.qcow2", tmp_path / "db-disk1.qcow2"]
    for i, image in enumerate(images):
        make_qcow2(image, 16 * MiB, seed=7 + i)
    refs = [DiskRef("db-d0", str(images[0])), DiskRef("db-d1", str(images[1]))]
    source = OfflineMachine(refs, scratch_dir=tmp_path / "scratch")
    first = {r.disk_id: p for r, p in zip(refs, run(repo, source).values(), strict=True)}
    assert {p.tags["read"] for p in first.values()} == {"full"}
    qemu_img("info", str(images[0]))  # the daemon is gone: the image is free again
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1048576 65536", str(images[0])],
                   check=True, capture_output=True)  # fmt: skip
    second = run(repo, source)
    assert second["db-d0"].tags["read"] == "changed" and second["db-d0"].stats.bytes_read == 256 * 1024  # one block
    assert second["db-d1"].stats.bytes_read == 0
    for ref, image in zip(refs, images, strict=True):
        qemu_img("convert", "-O", "raw", str(image), str(tmp_path / "expected.raw"))
        assert restored(repo, second[ref.disk_id], tmp_path) == (tmp_path / "expected.raw").read_bytes()


def test_offline_image_in_use_by_a_running_vm_is_refused_clearly(vm: KvmVm, tmp_path: Path) -> None:
    source = OfflineMachine([DiskRef("web-d0", str(vm.images[0]))], scratch_dir=tmp_path / "scratch")
    with pytest.raises(SourceError, match="is the VM running"):
        source.open()


def test_unknown_disk_and_unreachable_socket_are_clear_errors(vm: KvmVm, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="has no disk device:5"):
        KvmMachine(str(vm.qmp_socket), [DiskRef("x", "device:5")], scratch_dir=tmp_path).open()
    with pytest.raises(SourceError, match="cannot reach QEMU's QMP socket"):
        KvmMachine(str(tmp_path / "nope.qmp"), REFS, scratch_dir=tmp_path).open()
    assert vm.leftovers() == {"exports": [], "jobs": [], "nodes": [], "frozen": []}
