"""Disks on Azure: a recovery point reconstructed into a fixed-VHD page blob (DiskTarget).

:meth:`AzureDisks.write_disk` reconstructs a point into the page blob
``<run_id>/<machine_id>/<disk_id>.vhd`` of the staging container
(:class:`~node_runtime.recovery.azure_vhd.AzurePageBlobVhdWriter`: only non-zero ranges
are sent, the footer last). The blob carries metadata ``lifeboat_run``,
``lifeboat_machine``, ``lifeboat_disk``, ``lifeboat_point`` (metadata names must be C#
identifiers, so no ``:``). A retried step replaces the blob of the same name.
:meth:`~AzureDisks.read_disk` / :meth:`~AzureDisks.patch_disk` work on that blob (ranged
reads; read-modify-write Put Page of the 512-byte pages a patch touches), so OS
preparation happens before the blob is imported as a managed disk.
"""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import AzureError

from node_runtime.recovery.azure_vhd import MAX_PAGE_WRITE, SECTOR, AzurePageBlobVhdWriter
from node_runtime.recovery.reconstruct import reconstruct
from node_runtime.recovery.targets.azure.context import KIND, AzureContext, log
from node_runtime.recovery.targets.base import DiskArtifact, InstanceSpec, Progress, Resource
from shared.errors import InvalidInputError, TargetError
from shared.repo.points import PointRecord
from shared.repo.repository import Repository


class AzureDisks:
    """DiskTarget on a staging container of page blobs."""

    kind = KIND

    def __init__(self, ctx: AzureContext) -> None:
        self.ctx = ctx
        self.container = ctx.container

    def write_disk(
        self, repo: Repository, point: PointRecord, spec: InstanceSpec, *, progress: Progress | None = None
    ) -> DiskArtifact:
        if point.disk_size <= 0:
            raise InvalidInputError(f"point {point.id} has an empty disk", point_id=point.id)
        self.ctx.tags(spec)  # refuse conflicting tags before writing anything
        name = f"{spec.run_id}/{spec.machine_id}/{point.disk_id}.vhd"
        blob = self.container.get_blob_client(name)
        metadata = {
            "lifeboat_run": spec.run_id,
            "lifeboat_machine": spec.machine_id,
            "lifeboat_disk": point.disk_id,
            "lifeboat_point": point.id,
        }
        writer = AzurePageBlobVhdWriter(
            blob, None, point.disk_size, threads=self.ctx.write_threads, overwrite=True, metadata=metadata
        )
        resource = Resource(
            type="page-blob",
            id=str(blob.url),
            detail={"container": str(self.container.container_name), "blob": name},
        )
        try:
            stats = reconstruct(repo, point, writer, threads=self.ctx.read_threads, progress=progress)
        except BaseException as exc:
            if _blob_exists(blob):  # the writer's abort could not delete it
                raise TargetError(
                    f"reconstructing {point.id} into {name} failed and the blob is left: {exc}",
                    resources=[resource.model_dump()],
                ) from exc
            raise
        resource.detail.update(
            virtual_size=str(writer.virtual_size),
            vhd_uuid=str(writer.uuid),
            pages_written=str(writer.pages_written),
            bytes_sent=str(writer.bytes_sent),
        )
        log.info(
            "disk written to page blob",
            extra={
                "disk_id": point.disk_id,
                "point_id": point.id,
                "blob": name,
                "bytes_sent": writer.bytes_sent,
            },
        )
        return DiskArtifact(
            disk_id=point.disk_id,
            point_id=point.id,
            disk_size=point.disk_size,
            format="vhd",
            location=str(blob.url),
            bytes_written=stats.bytes_written,
            resources=[resource],
        )

    def read_disk(self, artifact: DiskArtifact, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise InvalidInputError(f"bad range {offset}+{length}", offset=offset, length=length)
        length = max(0, min(length, artifact.disk_size - offset))
        if length == 0:
            return b""
        blob = artifact_blob(self.container, artifact)
        try:
            return bytes(blob.download_blob(offset=offset, length=length).readall())
        except AzureError as exc:
            raise TargetError(f"cannot read {blob.blob_name}: {exc}", blob=blob.blob_name) from exc

    def patch_disk(self, artifact: DiskArtifact, patches: list[tuple[int, bytes]]) -> DiskArtifact:
        """Write each patch, in order, by read-modify-write of the 512-byte pages it touches.

        Patches the page blob in place (same artifact); not atomic across patches. Only
        bytes of the disk may be patched, never the padding or the VHD footer.
        """
        for offset, data in patches:
            if offset < 0 or offset + len(data) > artifact.disk_size:
                raise InvalidInputError(
                    f"patch {offset}+{len(data)} is outside the disk ({artifact.disk_size} bytes)",
                    offset=offset,
                    length=len(data),
                )
        blob = artifact_blob(self.container, artifact)
        try:
            for offset, data in patches:
                if not data:
                    continue
                start = offset - offset % SECTOR
                end = -(-(offset + len(data)) // SECTOR) * SECTOR  # within the VHD: it is padded to 1 MiB
                for chunk in range(start, end, MAX_PAGE_WRITE):
                    chunk_end = min(end, chunk + MAX_PAGE_WRITE)
                    page = bytearray(blob.download_blob(offset=chunk, length=chunk_end - chunk).readall())
                    lo, hi = max(offset, chunk), min(offset + len(data), chunk_end)
                    page[lo - chunk : hi - chunk] = data[lo - offset : hi - offset]
                    blob.upload_page(bytes(page), offset=chunk, length=len(page))
        except AzureError as exc:
            raise TargetError(f"cannot patch {blob.blob_name}: {exc}", blob=blob.blob_name) from exc
        return artifact


def artifact_blob(container: Any, artifact: DiskArtifact) -> Any:
    """The page blob of ``artifact`` in ``container`` (refused if it names another container)."""
    for r in artifact.resources:
        if r.type == "page-blob" and r.detail.get("blob"):
            check_container(container, r)
            return container.get_blob_client(r.detail["blob"])
    raise InvalidInputError(f"disk {artifact.disk_id} has no page blob here", disk_id=artifact.disk_id)


def check_container(container: Any, resource: Resource) -> None:
    name = resource.detail.get("container")
    if name and name != container.container_name:
        raise InvalidInputError(
            f"{resource.id} is in container {name}, not {container.container_name}", resource=resource.id
        )


def _blob_exists(blob: Any) -> bool:
    try:
        return bool(blob.exists())
    except Exception:
        log.warning("cannot tell whether %s was deleted", blob.blob_name, exc_info=True)
        return True
