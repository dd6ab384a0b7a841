"""Reconstructing a point onto other targets: a raw file, an Azure fixed-VHD page blob
(Azurite), an EBS snapshot through the EBS direct APIs (moto).

The source image is a make_disk.py image whose size is not a multiple of 1 MiB, nor of
512, with sub-block zero regions added (half a MiB unit, one 64 KiB unit), so holes,
zero EBS blocks inside data blocks, zero VHD units and the disk's tail are all exercised.
Two points are made of it: 1 MiB blocks (a block is cut into EBS blocks) and 64 KiB
blocks (EBS blocks are gathered from eight point blocks).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node_runtime.recovery.azure_vhd import AzurePageBlobVhdWriter, MiB, parse_vhd_footer
from node_runtime.recovery.ebs_direct import EBS_BLOCK_SIZE, EbsSnapshotWriter, volume_size_gib
from node_runtime.recovery.reconstruct import reconstruct
from node_runtime.recovery.writers import FileWriter
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.files import FileSource
from shared.adapters.local.folder_store import FolderStore
from shared.errors import TargetError
from shared.repo.keys import ZERO_ID, KdfParams
from shared.repo.points import PointRecord
from shared.repo.repository import Repository
from tests.servers import Azurite, find_tool
from tests.support.disks import create, sha256

KiB = 1 << 10
DISK_SIZE = 24 * MiB + 320 * KiB + 1000
UNIT = 64 * KiB  # the VHD writer's zero granularity (its default)


@dataclass
class Source:
    image: Path
    data: bytes
    repo: Repository
    points: dict[str, PointRecord]  # "1MiB" / "64KiB" -> point

    def nonzero(self, unit: int) -> set[int]:
        """Indexes of the ``unit``-sized pieces of the image that are not all zero."""
        return {
            i
            for i in range(-(-len(self.data) // unit))
            if self.data[i * unit : (i + 1) * unit].count(0) != len(self.data[i * unit : (i + 1) * unit])
        }


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    tmp = tmp_path_factory.mktemp("targets")
    image = create(tmp / "vm.img", DISK_SIZE, seed=11)
    data = bytearray(image.read_bytes())
    units = [off for off in range(0, 24 * MiB, MiB) if any(data[off : off + MiB])]
    assert len(units) >= 4 and len(units) < 24  # data and whole-MiB holes
    data[units[0] + 512 * KiB : units[0] + MiB] = bytes(512 * KiB)  # a zero EBS block inside data
    data[units[1] + 128 * KiB : units[1] + 192 * KiB] = bytes(64 * KiB)  # a zero VHD unit
    data[-5000:] = random.Random(5).randbytes(5000)  # data up to the very last (odd) byte
    image.write_bytes(data)

    store = FolderStore(tmp / "repo", fsync=False)
    Repository.init(store, "pw", kdf=KdfParams(iterations=1, memory_kib=8192, lanes=1))
    repo = Repository.open(store, lambda: "pw")
    points = {}
    for label, block_size in (("1MiB", MiB), ("64KiB", 64 * KiB)):
        with FileSource(image) as src:
            opts = ReplicationOptions(block_size=block_size, pack_target=4 * MiB, streams=2, workers=2)
            points[label] = replicate(repo, f"vm-{label.lower()}", src, opts)
        assert ZERO_ID in repo.block_map(points[label])
    return Source(image, bytes(data), repo, points)


POINTS = ["1MiB", "64KiB"]


# --- the generic path, onto a raw file ------------------------------------------------------
@pytest.mark.parametrize("label", POINTS)
def test_reconstruct_to_a_file_is_byte_identical(source: Source, label: str, tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    seen: list[tuple[int, int]] = []
    point = source.points[label]
    stats = reconstruct(
        source.repo,
        point,
        FileWriter(str(target), point.disk_size),
        threads=3,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert sha256(target) == sha256(source.image)
    assert stats.holes > 0 and stats.blocks + stats.holes == point.n_blocks
    assert seen[-1][0] == seen[-1][1] == stats.bytes_written


# --- Azure: a fixed VHD in a page blob ------------------------------------------------------------
class RecordingBlob:
    """A BlobClient that records Put Page calls and can be told to fail the n-th one."""

    def __init__(self, blob: Any, *, fail_at: int | None = None) -> None:
        self._blob = blob
        self.fail_at = fail_at
        self.pages: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def upload_page(self, page: bytes, offset: int, length: int, **kwargs: Any) -> Any:
        from azure.core.exceptions import HttpResponseError

        with self._lock:
            self.pages.append((offset, length))
            failing = self.fail_at is not None and len(self.pages) >= self.fail_at
        if failing:
            raise HttpResponseError(message="injected Put Page failure")
        assert len(page) == length
        return self._blob.upload_page(page, offset=offset, length=length, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._blob, name)


def merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) ranges merged where they touch."""
    out: list[list[int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]


@pytest.fixture
def container(azurite: Azurite) -> Any:
    return azurite.service().get_container_client(azurite.container)


@pytest.mark.parametrize("label", POINTS)
def test_azure_page_blob_is_a_fixed_vhd_of_the_point(
    source: Source, label: str, container: Any, tmp_path: Path
) -> None:
    point = source.points[label]
    name = f"vhd/{label}-{random.getrandbits(32):08x}.vhd"
    blob = RecordingBlob(container.get_blob_client(name))
    writer = AzurePageBlobVhdWriter(blob, None, point.disk_size, threads=4)
    reconstruct(source.repo, point, writer, threads=3)

    virtual = 25 * MiB  # round_up(disk size, 1 MiB)
    assert writer.virtual_size == virtual and writer.blob_size == virtual + 512
    body = blob.download_blob().readall()
    assert len(body) == virtual + 512
    assert hashlib.sha256(body[: point.disk_size]).hexdigest() == sha256(source.image)
    assert body[point.disk_size : virtual] == bytes(virtual - point.disk_size)
    footer = parse_vhd_footer(body[virtual:])
    assert footer.current_size == footer.original_size == virtual
    assert footer.disk_type == 2 and footer.uuid == writer.uuid

    # Only non-zero 64 KiB units were sent (the last one cut at the sector after the
    # disk's end), in Put Pages of at most 4 MiB, merged across writes; then the footer.
    *data_pages, footer_page = blob.pages
    assert footer_page == (virtual, 512)
    assert all(0 < n <= 4 * MiB and off % 512 == 0 and n % 512 == 0 for off, n in data_pages)
    end = -(-point.disk_size // 512) * 512
    expected = merged([(i * UNIT, min((i + 1) * UNIT, end)) for i in source.nonzero(UNIT)])
    assert merged([(off, off + n) for off, n in data_pages]) == expected
    fewest = sum(-(-(b - a) // (4 * MiB)) for a, b in expected)
    assert fewest <= len(data_pages) < len(source.nonzero(UNIT)) / 4  # merged, not one per unit
    assert writer.pages_written == len(blob.pages)

    # What the service reports as written (Azurite tracks page ranges for real here; it
    # is only page-range *diffs* it does not implement).
    reported = merged([(r.start, r.end + 1) for r in blob.list_page_ranges() if not r.cleared])
    assert reported == merged([*expected, (virtual, virtual + 512)])

    # qemu reads the blob as a fixed VHD of the right size with the image's content.
    qemu_img = find_tool("qemu-img", "LIFEBOAT_QEMU_IMG")
    vhd = tmp_path / "disk.vhd"
    vhd.write_bytes(body)
    info = json.loads(
        subprocess.run(
            [qemu_img, "info", "-f", "vpc", "--output", "json", str(vhd)],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    )
    assert info["virtual-size"] == virtual
    compare = subprocess.run(
        [qemu_img, "compare", "-f", "vpc", "-F", "raw", str(vhd), str(source.image)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr


def test_azure_failure_deletes_the_blob_and_existing_blobs_are_kept(source: Source, container: Any) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    point = source.points["1MiB"]
    name = f"vhd/fail-{random.getrandbits(32):08x}.vhd"
    blob = RecordingBlob(container.get_blob_client(name), fail_at=2)
    with pytest.raises(TargetError, match="injected Put Page failure"):
        reconstruct(source.repo, point, AzurePageBlobVhdWriter(blob, None, point.disk_size), threads=2)
    with pytest.raises(ResourceNotFoundError):
        blob.get_blob_properties()

    container.get_blob_client(name).upload_blob(b"precious")
    with pytest.raises(TargetError, match="already exists"):
        AzurePageBlobVhdWriter(container, name, point.disk_size)
    assert container.get_blob_client(name).download_blob().readall() == b"precious"


# --- AWS: an EBS snapshot through the EBS direct APIs ---------------------------------------------
@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """(ebs, ec2) clients on moto's in-process AWS."""
    import boto3
    from moto import mock_aws

    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("ebs", region_name="us-east-1"), boto3.client("ec2", region_name="us-east-1")


class RecordingEbs:
    """An EBS client that records PutSnapshotBlock / CompleteSnapshot and can fail the n-th put."""

    def __init__(self, ebs: Any, *, fail_at: int | None = None) -> None:
        self._ebs = ebs
        self.fail_at = fail_at
        self.puts: list[dict[str, Any]] = []
        self.completed: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def put_snapshot_block(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        with self._lock:
            self.puts.append({k: v for k, v in kwargs.items() if k != "BlockData"})
            failing = self.fail_at is not None and len(self.puts) >= self.fail_at
        if failing:
            raise ClientError({"Error": {"Code": "InternalServerException", "Message": "injected"}}, "Put")
        return self._ebs.put_snapshot_block(**kwargs)

    def complete_snapshot(self, **kwargs: Any) -> Any:
        self.completed.append(kwargs)
        return self._ebs.complete_snapshot(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ebs, name)


@pytest.mark.parametrize("label", POINTS)
def test_ebs_snapshot_holds_exactly_the_non_zero_blocks(
    source: Source, label: str, aws: tuple[Any, Any]
) -> None:
    ebs, ec2 = aws
    point = source.points[label]
    spy = RecordingEbs(ebs)
    tags = {"lifeboat:point": point.id, "lifeboat:disk": point.disk_id}
    writer = EbsSnapshotWriter(
        spy,
        volume_size_gib=volume_size_gib(point.disk_size),
        description=f"Lifeboat {point.disk_id} {point.id}",
        tags=tags,
        ec2_client=ec2,
        threads=4,
    )
    reconstruct(source.repo, point, writer, threads=3)
    snap = writer.snapshot_id

    expected = source.nonzero(EBS_BLOCK_SIZE)
    assert source.nonzero(EBS_BLOCK_SIZE) != set(range(-(-point.disk_size // EBS_BLOCK_SIZE)))
    assert sorted(p["BlockIndex"] for p in spy.puts) == sorted(expected)  # each block once, no zeros
    assert spy.completed == [{"SnapshotId": snap, "ChangedBlocksCount": len(expected)}]
    assert writer.blocks_written == len(expected)

    listed = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
    assert {int(b["BlockIndex"]) for b in listed} == expected
    for b in listed:
        i = int(b["BlockIndex"])
        got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockToken=b["BlockToken"])
        data = got["BlockData"].read()
        want = source.data[i * EBS_BLOCK_SIZE : (i + 1) * EBS_BLOCK_SIZE]
        want += bytes(EBS_BLOCK_SIZE - len(want))  # the tail block is zero-padded
        assert data == want, f"block {i}"
        assert got["Checksum"] == base64.b64encode(hashlib.sha256(want).digest()).decode()
        assert got["ChecksumAlgorithm"] == "SHA256" and int(got["DataLength"]) == EBS_BLOCK_SIZE

    (described,) = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"]
    assert {t["Key"]: t["Value"] for t in described["Tags"]} == tags
    assert described["Description"] == f"Lifeboat {point.disk_id} {point.id}"
    assert described["VolumeSize"] == 1


def test_ebs_failure_deletes_the_snapshot(source: Source, aws: tuple[Any, Any]) -> None:
    from botocore.exceptions import ClientError

    ebs, ec2 = aws
    spy = RecordingEbs(ebs, fail_at=3)
    writer = EbsSnapshotWriter(spy, volume_size_gib=1, tags={"t": "1"}, ec2_client=ec2, threads=2)
    with pytest.raises(TargetError, match="PutSnapshotBlock"):
        reconstruct(source.repo, source.points["1MiB"], writer, threads=2)
    assert spy.completed == []
    with pytest.raises(ClientError, match="NotFound"):
        ec2.describe_snapshots(SnapshotIds=[writer.snapshot_id])
