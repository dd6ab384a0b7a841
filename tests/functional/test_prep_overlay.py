"""The NBD export and the overlay patches against real clients: libnbd (python3-libnbd) reads
the export; qemu-img builds and maps a qcow2 overlay over it, whose writes (by qemu-io)
come back as patches that turn the original into the changed disk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbd
import pytest

from node_runtime.prep.nbd_export import serve_nbd
from node_runtime.prep.overlay import create_overlay, overlay_patches

MiB = 1 << 20


def _reader(data: bytes, fail_at: int | None = None):  # type: ignore[no-untyped-def]
    def read(offset: int, length: int) -> bytes:
        if fail_at is not None and offset <= fail_at < offset + length:
            raise OSError("the target's read failed")
        return data[offset : offset + length]

    return read


def test_libnbd_reads_the_export_and_writes_are_refused(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB)
    with serve_nbd(_reader(data, fail_at=2 * MiB + 5), len(data), tmp_path / "d.sock") as uri:
        h = nbd.NBD()
        h.connect_uri(uri)
        assert h.get_size() == len(data) and h.is_read_only()
        assert h.pread(4096, MiB - 100) == data[MiB - 100 : MiB + 3996]
        with pytest.raises(nbd.Error):  # the reader's failure is the client's EIO; the server goes on
            h.pread(4096, 2 * MiB)
        assert h.pread(512, 0) == data[:512]
        h.shutdown()
    assert not (tmp_path / "d.sock").exists()


def test_overlay_writes_come_back_as_patches(tmp_path: Path) -> None:
    data = bytearray(os.urandom(4 * MiB))
    with serve_nbd(_reader(bytes(data)), len(data), tmp_path / "d.sock") as uri:
        overlay = create_overlay(uri, tmp_path / "o.qcow2", len(data))
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1000000 300", "-c",
                        "write -z 3145728 65536", str(overlay)], check=True, capture_output=True)  # fmt: skip
        patches = list(overlay_patches(overlay))
    assert patches and all(len(p) <= 4 * MiB for _, p in patches)
    expected = bytearray(data)
    expected[1000000:1000300] = b"\xab" * 300
    expected[3145728 : 3145728 + 65536] = bytes(65536)
    for offset, patch in patches:
        data[offset : offset + len(patch)] = patch
    assert data == expected
    changed = sum(len(p) for _, p in patches)
    assert changed <= 2 * 65536 + 65536  # cluster-sized: the 300 bytes may straddle two clusters
