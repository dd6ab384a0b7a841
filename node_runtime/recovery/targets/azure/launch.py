"""Instances on Azure (InstanceLauncher): managed disks imported from the page blobs, then the VM.

Azure has no "defined but never started" VM, so :meth:`AzureLauncher.create_instance`
imports each blob as a managed disk (the first is the OS disk, with the Hyper-V
generation the captured firmware needs: V1 for BIOS, V2 for UEFI, and the OS type OS
preparation found, else the site's ``os_type``) and returns an
instance in state ``defined`` whose ``instance_id`` is the id the VM *will* have.
:meth:`~AzureLauncher.power_on` creates the VM over the disks and the NICs that
:mod:`.network` attached (the first NIC is primary), with boot diagnostics on, and waits
until it runs. ARM names are ``lb-<name>-<hash of run and machine>`` (plus ``-diskN``),
so a retried step addresses the same resources (creates are idempotent PUTs).
The seconds each import and the VM create took go into ``Instance.detail["timings"]``.
"""

from __future__ import annotations

from node_runtime.recovery.targets.azure.compute import DISK, VM, VmView
from node_runtime.recovery.targets.azure.context import VM_SIZE, AzureContext, arm_name, merge
from node_runtime.recovery.targets.base import DiskArtifact, Instance, InstanceSpec, Resource
from shared.domain.hardware import Firmware
from shared.errors import InvalidInputError, TargetError

#: the OS type an OS disk is imported with, from the OS family OS preparation found
OS_TYPES = {"linux": "Linux", "windows": "Windows"}


def hyper_v_generation(firmware: Firmware | str | None) -> str:
    """The Hyper-V generation that boots a machine captured with ``firmware``."""
    return "V2" if firmware == Firmware.EFI else "V1"


class AzureLauncher:
    def __init__(self, ctx: AzureContext) -> None:
        self.ctx = ctx

    def create_instance(self, spec: InstanceSpec, disks: list[DiskArtifact]) -> Instance:
        """Import each disk's VHD as a managed disk (boot disk first); the VM comes with :meth:`power_on`."""
        ctx = self.ctx
        if not disks:
            raise InvalidInputError(f"machine {spec.machine_id} has no disks", machine_id=spec.machine_id)
        for disk in disks:
            if disk.format != "vhd":
                raise InvalidInputError(
                    f"Azure imports VHDs, not {disk.format} ({disk.disk_id})", disk_id=disk.disk_id
                )
        size = spec.instance_type or ctx.default_vm_size
        if not VM_SIZE.match(size):
            raise InvalidInputError(f"{size!r} is not an Azure VM size", vm_size=size)
        tags = ctx.tags(spec)
        base = ctx.base_name(spec)
        generation = hyper_v_generation(spec.firmware)
        os_type = OS_TYPES.get(spec.os_family, ctx.os_type)  # what OS preparation found wins
        created: list[Resource] = []
        disk_ids: list[str] = []
        timings: dict[str, float] = {}
        for i, disk in enumerate(disks):
            name = arm_name([base, f"disk{i}"], 80)
            created.append(Resource(
                type="managed-disk", id=ctx.compute.resource_id(DISK, ctx.resource_group, name),
                detail={"name": name, "source": disk.location, "disk_id": disk.disk_id},
            ))  # fmt: skip
            started = ctx.clock()
            try:
                disk_ids.append(ctx.compute.create_disk_from_vhd(
                    ctx.resource_group, name, location=ctx.location, blob_url=disk.location, size_gib=None,
                    os_type=os_type if i == 0 else None, tags={**tags, "lifeboat:disk": disk.disk_id},
                    hyper_v_generation=generation,
                ))  # fmt: skip
            except Exception as exc:
                ctx.fail(f"cannot create managed disk {name} from {disk.location}", exc, created)
            timings[f"disk_import_{i}"] = round(ctx.clock() - started, 3)
        return Instance(
            instance_id=ctx.compute.resource_id(VM, ctx.resource_group, arm_name([base], 64)),
            machine_id=spec.machine_id,
            state="defined",
            resources=created,
            detail={
                "vm_name": arm_name([base], 64), "base_name": base, "vm_size": size,
                "resource_group": ctx.resource_group, "location": ctx.location, "hyper_v_generation": generation,
                "os_type": os_type,
                "os_disk_id": disk_ids[0], "data_disk_ids": disk_ids[1:], "nic_ids": [], "tags": tags,
                "timings": timings,
            },
        )  # fmt: skip

    def power_on(self, instance: Instance) -> Instance:
        """Create the VM (boot diagnostics on) over the instance's disks and NICs; wait until it runs."""
        ctx = self.ctx
        d = instance.detail
        if not d.get("nic_ids"):
            raise InvalidInputError(
                f"{d.get('vm_name')}: an Azure VM needs at least one NIC; attach networks first",
                machine_id=instance.machine_id,
            )
        vm = Resource(type="azure-vm", id=instance.instance_id, detail={"name": str(d["vm_name"])})
        started = ctx.clock()
        try:
            ctx.compute.create_vm(
                ctx.resource_group, d["vm_name"], location=ctx.location, size=d["vm_size"],
                os_disk_id=d["os_disk_id"], data_disk_ids=list(d["data_disk_ids"]), nic_ids=list(d["nic_ids"]),
                tags=dict(d["tags"]), boot_diagnostics=True,
            )  # fmt: skip
            created = ctx.clock()
            view = self._wait_running(instance.instance_id)
        except Exception as exc:
            ctx.fail(f"cannot start VM {d['vm_name']}", exc, [vm])
        timings = {**d.get("timings", {}), "vm_create": round(created - started, 3),
                   "vm_running": round(ctx.clock() - started, 3)}  # fmt: skip
        return instance.model_copy(update={
            "state": "running",
            "resources": merge(instance.resources, vm),
            "detail": {**d, "power_state": view.power_state, "provisioning_state": view.provisioning_state,
                       "timings": timings},
        })  # fmt: skip

    def _wait_running(self, vm_id: str) -> VmView:
        ctx = self.ctx
        view = ctx.poll(lambda: ctx.compute.instance_view(vm_id), ctx.clock() + ctx.power_on_timeout, settled)
        if not healthy(view):
            raise TargetError(
                f"VM {vm_id} is {view.power_state or 'not started'} (provisioning {view.provisioning_state})",
                code="VMNotRunning",
                statuses=list(view.statuses),
            )
        return view


def settled(view: VmView) -> bool:
    return (
        healthy(view) or view.provisioning_state == "failed" or view.power_state in ("stopped", "deallocated")
    )


def healthy(view: VmView) -> bool:
    return view.provisioning_state == "succeeded" and view.power_state == "running"
