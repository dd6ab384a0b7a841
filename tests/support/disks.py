"""Disk images for tests, made by make_disk.py (the same generator the benchmarks use)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.support import make_disk

MiB = 1 << 20


def create(path: Path, size: int, seed: int) -> Path:
    make_disk.create(str(path), size, seed)
    return path


def mutate(path: Path, fraction: float, seed: int) -> list[tuple[int, int]]:
    """Mutate in place; return the changed extents make_disk reports."""
    extents = path.with_suffix(f".changed-{seed}.json")
    make_disk.mutate(str(path), fraction, seed, str(extents))
    return [tuple(e) for e in json.loads(extents.read_text())]  # type: ignore[misc]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()
