"""Recovery reads onto a raw file or block device: :func:`reconstruct` with a FileWriter.

Holes stay holes in a file and are zeroed on a block device; every block is verified
before it is written; the target is fsynced at the end (see ``writers.FileWriter``).
"""

from __future__ import annotations

from node_runtime.recovery.reconstruct import Progress, RestoreStats, reconstruct
from node_runtime.recovery.writers import FileWriter
from shared.repo.points import PointRecord
from shared.repo.repository import Repository

__all__ = ["RestoreStats", "restore"]


def restore(
    repo: Repository,
    point: PointRecord,
    target: str,
    *,
    threads: int = 4,
    progress: Progress | None = None,
) -> RestoreStats:
    """Write ``point`` to ``target`` byte for byte; every block is verified before it is written."""
    return reconstruct(repo, point, FileWriter(target, point.disk_size), threads=threads, progress=progress)
