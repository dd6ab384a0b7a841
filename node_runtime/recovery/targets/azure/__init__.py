"""Recovery into Azure, one module per capability over a shared :class:`.context.AzureContext`.

1. :mod:`.disks` reconstructs each point into a fixed-VHD page blob (OS preparation
   patches it there);
2. :mod:`.launch` imports the blobs as managed disks (``create_instance``) and creates
   the VM over them (``power_on``);
3. :mod:`.network` creates the NICs in the mapped subnets, test NICs isolated;
4. :mod:`.validation` proves the boot from the boot-diagnostics serial log;
5. :mod:`.cleanup` deletes what a run created; :mod:`.preflight` refuses a recovery ARM
   would refuse before anything is created.

Every step lists what it creates before creating the next; a call that fails deletes
what it created itself (best effort, reverse order) and raises with ``resources`` naming
whatever it could not delete. ARM calls go through the :mod:`.compute` port
(:mod:`.arm` on the real SDKs).
"""

from __future__ import annotations

from typing import Any

from node_runtime.recovery.targets.azure.cleanup import AzureCleaner
from node_runtime.recovery.targets.azure.compute import AzureCompute
from node_runtime.recovery.targets.azure.context import KIND, AzureContext, arm_name
from node_runtime.recovery.targets.azure.disks import AzureDisks
from node_runtime.recovery.targets.azure.launch import AzureLauncher
from node_runtime.recovery.targets.azure.network import AzureNetworks
from node_runtime.recovery.targets.azure.preflight import AzurePreflight
from node_runtime.recovery.targets.azure.validation import AzureValidator
from node_runtime.recovery.targets.base import Target

__all__ = ["AzureCleaner", "AzureContext", "arm_name", "azure_target"]


def azure_target(
    container: Any, compute: AzureCompute, *, location: str, resource_group: str, **options: Any
) -> Target:
    """The Azure :class:`Target`; ``options`` are :class:`AzureContext`'s other fields."""
    ctx = AzureContext(container, compute, location, resource_group, **options)
    cleaner = AzureCleaner(ctx)  # first: the others undo failures through it
    return Target(kind=KIND, disks=AzureDisks(ctx), launcher=AzureLauncher(ctx), networks=AzureNetworks(ctx),
                  validator=AzureValidator(ctx), cleaner=cleaner, preflight=AzurePreflight(ctx))  # fmt: skip
