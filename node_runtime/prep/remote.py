"""Prepare disks that are only readable and patchable (an EBS snapshot, a page blob, a file).

Each disk is served read-only over NBD from its read function, a qcow2 overlay over the
export takes the guest's changes, and the overlay's clusters come back as byte patches per
disk for the target's ``patch_disk``. Nothing is copied first: libguestfs reads only the
blocks it needs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from node_runtime.prep.guest import DiskSource
from node_runtime.prep.models import GuestPrep
from node_runtime.prep.nbd_export import ReadAt, serve_nbd
from node_runtime.prep.overlay import create_overlay, overlay_patches
from node_runtime.prep.run import prepare_disks

Patches = dict[int, list[tuple[int, bytes]]]


def prepare_readable_disks(
    disks: list[tuple[ReadAt, int]],
    *,
    target: str,
    before_apply: Callable[[GuestPrep], None] = lambda _: None,
    workdir: str | None = None,
) -> tuple[GuestPrep, Patches]:
    """Prepare the machine on ``disks`` (``(read, size)``, boot disk first) for ``target``.

    Returns the preparation and, when changes were applied, the patches per disk index.
    Raises GuestPrepError when the appliance or qemu-img fails.
    """
    with tempfile.TemporaryDirectory(prefix="lifeboat-prep-", dir=workdir) as tmp, ExitStack() as stack:
        overlays: list[Path] = []
        for index, (read, size) in enumerate(disks):
            uri = stack.enter_context(serve_nbd(read, size, Path(tmp) / f"disk{index}.sock"))
            overlays.append(create_overlay(uri, Path(tmp) / f"disk{index}.qcow2", size))
        sources = [DiskSource(path=str(p), format="qcow2") for p in overlays]
        result = prepare_disks(sources, target=target, apply=True, before_apply=before_apply)
        patches: Patches = {}
        if result.applied:
            for index, overlay in enumerate(overlays):
                found = list(overlay_patches(overlay))
                if found:
                    patches[index] = found
        return result, patches
