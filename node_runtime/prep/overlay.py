"""Copy-on-write overlays for preparing a disk that only accepts patches.

The guest is changed in a qcow2 overlay over the read-only disk; afterwards the overlay's
own clusters (``qemu-img map``, depth 0) are the bytes that changed, returned as
``(offset, data)`` patches for :meth:`DiskTarget.patch_disk`. Cluster-sized (64 KiB) at
worst: a cluster holds the guest's new bytes and the untouched bytes around them.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

from shared.errors import GuestPrepError

MAX_PATCH = 4 << 20


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise GuestPrepError("qemu-img is not installed (apt-get install qemu-utils)") from exc
    except subprocess.CalledProcessError as exc:
        raise GuestPrepError(f"{argv[0]} {argv[1]} failed: {exc.stderr.strip()[-500:]}") from exc
    return done.stdout


def create_overlay(backing: str, path: Path, size: int) -> Path:
    """A qcow2 ``path`` whose reads fall through to ``backing`` (a file or ``nbd+unix://`` URI)."""
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing, str(path), str(size)])
    return path


def overlay_patches(path: Path) -> Iterator[tuple[int, bytes]]:
    """The overlay's own data as ``(guest offset, bytes)``, each at most 4 MiB, in disk order.

    Ranges the guest zeroed (zero clusters) come back as zero bytes.
    """
    extents = json.loads(_run(["qemu-img", "map", "--output=json", "-f", "qcow2", str(path)]))
    with open(path, "rb") as f:
        for extent in extents:
            if extent.get("depth") != 0 or not (extent.get("data") or extent.get("zero")):
                continue
            start, length = int(extent["start"]), int(extent["length"])
            for at in range(0, length, MAX_PATCH):
                n = min(MAX_PATCH, length - at)
                if extent.get("data"):
                    if "offset" not in extent:  # compressed clusters: never written by a guest
                        raise GuestPrepError(f"overlay {path} has unmapped data at {start}")
                    f.seek(int(extent["offset"]) + at)
                    data = f.read(n)
                else:
                    data = bytes(n)
                yield start + at, data
