"""QEMU disks: recovery points reconstructed into image files, read and patched in place.

* ``write_disk``: the point is reconstructed into a sparse raw file through
  :class:`~node_runtime.recovery.writers.FileWriter`; with ``image_format="qcow2"`` it is
  converted with ``qemu-img convert`` and the raw file removed. A failure removes what
  was written. Resource ``file``.
* ``read_disk`` reads either format (qcow2 through ``qemu-io -r -U``, meant for
  OS-preparation-sized reads); ``patch_disk`` writes in place, raw with ``pwrite``, qcow2
  with ``qemu-io write -s`` (which refuses an image a running QEMU has locked).

Debian package ``qemu-utils`` (``qemu-img``, ``qemu-io``).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from node_runtime.recovery.qemu import QEMU_IO, convert_image, find_tool
from node_runtime.recovery.reconstruct import reconstruct
from node_runtime.recovery.targets.base import DiskArtifact, InstanceSpec, Progress, Resource
from node_runtime.recovery.targets.qemu.common import (
    KIND,
    READ_CHUNK,
    QemuContext,
    machine_tags,
    run_tool,
    safe_id,
)
from node_runtime.recovery.writers import FileWriter
from shared.errors import InvalidInputError, TargetError
from shared.repo.points import PointRecord
from shared.repo.repository import Repository

_HEX_LINE = re.compile(r"^[0-9a-f]{8,}:  ((?:[0-9a-f]{2} )+)")


def _qemu_io() -> str:
    return find_tool(QEMU_IO)


class QemuDisks:
    """The :class:`~node_runtime.recovery.targets.base.DiskTarget` of the QEMU target: image files."""

    kind = KIND

    def __init__(self, context: QemuContext) -> None:
        self.context = context

    def write_disk(
        self, repo: Repository, point: PointRecord, spec: InstanceSpec, *, progress: Progress | None = None
    ) -> DiskArtifact:
        """Reconstruct ``point`` into ``<run>/<machine>/<disk_id>.raw`` (then .qcow2 if configured).

        On failure the files written so far are removed and the error re-raised
        (repository errors as they are, file-system and ``qemu-img`` errors as TargetError).
        """
        ctx = self.context
        machine_dir = ctx.machine_dir(spec.run_id, spec.machine_id)
        disk_id = safe_id(point.disk_id, "disk id")
        tags = machine_tags(spec)
        raw = machine_dir / f"{disk_id}.raw"
        final = raw if ctx.image_format == "raw" else machine_dir / f"{disk_id}.qcow2"
        try:
            machine_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TargetError(f"cannot create {machine_dir}: {exc.strerror}", path=str(machine_dir)) from exc
        try:
            stats = reconstruct(
                repo, point, FileWriter(str(raw), point.disk_size), threads=ctx.threads, progress=progress
            )
            if final != raw:
                convert_image(raw, final, "qcow2", timeout=ctx.tool_timeout)
                raw.unlink()
        except BaseException:
            for path in {raw, final}:
                with contextlib.suppress(OSError):
                    path.unlink()
            ctx.prune(raw)
            raise
        resource = Resource(
            type="file",
            id=str(final),
            detail={"format": ctx.image_format, "disk_id": disk_id, "point_id": point.id, **tags},
        )
        return DiskArtifact(
            disk_id=disk_id,
            point_id=point.id,
            disk_size=point.disk_size,
            format=ctx.image_format,
            location=str(final),
            bytes_written=stats.bytes_written,
            resources=[resource],
        )

    def read_disk(self, artifact: DiskArtifact, offset: int, length: int) -> bytes:
        """Bytes of the disk image (short only at its end); qcow2 through ``qemu-io``."""
        if offset < 0 or length < 0:
            raise InvalidInputError(f"bad range: offset {offset}, length {length}")
        path = self.context.image(artifact)
        length = max(0, min(length, artifact.disk_size - offset))
        if length == 0:
            return b""
        if artifact.format == "raw":
            try:
                with open(path, "rb") as f:
                    return os.pread(f.fileno(), length, offset)
            except OSError as exc:
                raise TargetError(f"cannot read {path}: {exc.strerror}", path=str(path)) from exc
        return self._qemu_io_read(path, offset, length)

    def _qemu_io_read(self, path: Path, offset: int, length: int) -> bytes:
        cmd = [_qemu_io(), "-r", "-U", "-f", "qcow2"]  # -U: readable while a VM runs on it
        for start in range(offset, offset + length, READ_CHUNK):
            cmd += ["-c", f"read -v {start} {min(READ_CHUNK, offset + length - start)}"]
        timeout = self.context.tool_timeout
        out = run_tool([*cmd, os.fspath(path)], timeout=timeout, what=f"reading {path}", path=str(path))
        data = bytearray()
        for line in out.decode("ascii", errors="replace").splitlines():
            m = _HEX_LINE.match(line)
            if m:
                data += bytes.fromhex(m.group(1))
        if len(data) != length:
            raise TargetError(
                f"qemu-io returned {len(data)} bytes of {path}, expected {length}", path=str(path)
            )
        return bytes(data)

    def patch_disk(self, artifact: DiskArtifact, patches: list[tuple[int, bytes]]) -> DiskArtifact:
        """Write ``patches`` into the image in place and return ``artifact`` unchanged.

        Raw images are written with ``pwrite`` and fsynced; qcow2 images with ``qemu-io``,
        which fails (TargetError) while a running QEMU holds the image. Do it before
        ``power_on``: a raw image is not protected against a running guest.
        """
        path = self.context.image(artifact)
        for offset, data in patches:
            if offset < 0 or offset + len(data) > artifact.disk_size:
                raise InvalidInputError(
                    f"patch at {offset} (+{len(data)}) is outside the disk ({artifact.disk_size} bytes)",
                    offset=offset,
                )
        patches = [(o, bytes(d)) for o, d in patches if d]
        if not patches:
            return artifact
        if artifact.format == "raw":
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    for offset, data in patches:
                        view = memoryview(data)
                        while view:
                            n = os.pwrite(fd, view, offset)
                            view, offset = view[n:], offset + n
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise TargetError(f"cannot patch {path}: {exc.strerror}", path=str(path)) from exc
            return artifact
        with tempfile.TemporaryDirectory(prefix="lifeboat-patch-") as tmp:
            if re.search(r"\s", tmp):  # qemu-io splits its commands on white space
                raise TargetError(f"temporary directory {tmp!r} contains white space; set TMPDIR")
            cmd = [_qemu_io(), "-f", "qcow2"]
            for i, (offset, data) in enumerate(patches):
                src = Path(tmp) / f"patch{i}"
                src.write_bytes(data)
                cmd += ["-c", f"write -q -s {src} {offset} {len(data)}"]
            timeout = self.context.tool_timeout
            run_tool([*cmd, os.fspath(path)], timeout=timeout, what=f"patching {path}", path=str(path))
        return artifact
