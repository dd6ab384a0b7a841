"""Cleanup on Azure (Cleaner): page blobs, managed disks, NICs, VMs and isolated test networks.

Deletes are idempotent (``False`` when already gone) and run in reverse creation order
(a VM before its NICs and disks). A run's isolated test network is shared by the run's
machines on the same production subnet: deleting it while another machine's NIC is still
in it leaves it to that machine's cleanup and returns ``False`` (nothing of *this*
machine is left in Azure); the last machine's cleanup deletes it.
:meth:`AzureCleaner.find_tagged` finds what a run left behind by its ``lifeboat:run`` tag.
"""

from __future__ import annotations

import re

from azure.core.exceptions import AzureError, ResourceNotFoundError

from node_runtime.recovery.targets.azure.compute import DISK, NIC, VM, VNET
from node_runtime.recovery.targets.azure.context import RUN_TAG, AzureContext, fields_of, log
from node_runtime.recovery.targets.azure.disks import check_container
from node_runtime.recovery.targets.base import Resource
from shared.errors import InvalidInputError, TargetError

RESOURCE_TYPES = {DISK.lower(): "managed-disk", NIC.lower(): "azure-nic", VM.lower(): "azure-vm",
                  VNET.lower(): "azure-vnet"}  # fmt: skip
_ARM_TYPES = frozenset(RESOURCE_TYPES.values())


class AzureCleaner:
    def __init__(self, ctx: AzureContext) -> None:
        self.ctx = ctx
        ctx.delete = self.delete

    def delete(self, resource: Resource) -> bool:
        if resource.type == "page-blob":
            return self._delete_blob(resource)
        if resource.type not in _ARM_TYPES:
            raise InvalidInputError(
                f"the Azure target does not create {resource.type!r}", resource_type=resource.type
            )
        try:
            return self.ctx.compute.delete(resource.id)
        except TargetError as exc:
            if resource.type == "azure-vnet" and fields_of(exc).get("code") == "InUseSubnetCannotBeDeleted":
                log.info(
                    "test network %s is still used by another machine of the run; kept for it", resource.id
                )
                return False
            raise
        except InvalidInputError:
            raise
        except Exception as exc:
            raise TargetError(
                f"cannot delete {resource.type} {resource.id}: {exc}", resource=resource.id
            ) from exc

    def find_tagged(self, run_id: str) -> list[Resource]:
        """What run ``run_id`` still has here: ARM resources tagged with it and its page blobs."""
        ctx = self.ctx
        found = []
        for resource_id in ctx.compute.list_tagged(ctx.resource_group, {RUN_TAG: run_id}):
            m = re.search(r"/providers/([^/]+/[^/]+)/[^/]+$", resource_id)
            kind = RESOURCE_TYPES.get(m.group(1).lower(), "azure-resource") if m else "azure-resource"
            found.append(Resource(type=kind, id=resource_id))
        try:
            for item in ctx.container.list_blobs(name_starts_with=f"{run_id}/", include=["metadata"]):
                if (item.metadata or {}).get("lifeboat_run") == run_id:
                    url = str(ctx.container.get_blob_client(item.name).url)
                    found.append(Resource(type="page-blob", id=url,
                                          detail={"container": str(ctx.container.container_name), "blob": item.name}))  # fmt: skip
        except AzureError as exc:
            raise TargetError(f"cannot list the blobs of run {run_id}: {exc}", run_id=run_id) from exc
        return found

    def _delete_blob(self, resource: Resource) -> bool:
        container = self.ctx.container
        check_container(container, resource)
        name = resource.detail.get("blob")
        if not name:
            raise InvalidInputError(f"page-blob resource {resource.id} names no blob", resource=resource.id)
        try:
            container.get_blob_client(name).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise TargetError(f"cannot delete blob {name}: {exc}", resource=resource.id) from exc
        return True
