"""Inventory discovery through the PropertyCollector: one container view per datacenter,
one ``RetrievePropertiesEx`` (paged) for every object of interest in it — never an
object-by-object walk, which costs a round trip per property on a large vCenter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyVmomi import vim, vmodl

from node_runtime.sources.vsphere.connection import Session, fault_message
from shared.domain.hardware import Firmware
from shared.domain.vsphere import (
    InventoryDisk,
    InventoryNic,
    InventoryObject,
    InventoryObjectType,
    InventoryVm,
    inventory_id,
)
from shared.errors import SourceError

VM_PROPS = [
    "name", "config.instanceUuid", "config.guestId", "config.hardware.numCPU", "config.hardware.memoryMB",
    "config.hardware.device", "config.firmware", "config.changeTrackingEnabled", "config.template",
    "runtime.powerState", "runtime.host", "guest.toolsRunningStatus",
]  # fmt: skip
TYPE_PROPS: dict[type, list[str]] = {
    vim.ClusterComputeResource: ["name", "parent"],
    vim.HostSystem: ["name", "parent", "runtime.connectionState", "summary.config.product.version"],
    vim.Datastore: ["name", "summary.capacity", "summary.freeSpace", "summary.type"],
    vim.Network: ["name"],
    vim.dvs.DistributedVirtualPortgroup: ["name", "key"],
    vim.VirtualMachine: VM_PROPS,
}
PAGE = 500

CONTROLLERS: list[tuple[type, str, str]] = [  # (device class, bus, controller name), most specific first
    (vim.vm.device.ParaVirtualSCSIController, "scsi", "pvscsi"),
    (vim.vm.device.VirtualLsiLogicSASController, "scsi", "lsilogic-sas"),
    (vim.vm.device.VirtualLsiLogicController, "scsi", "lsilogic"),
    (vim.vm.device.VirtualBusLogicController, "scsi", "buslogic"),
    (vim.vm.device.VirtualAHCIController, "sata", "ahci"),
    (vim.vm.device.VirtualNVMEController, "nvme", "nvme"),
    (vim.vm.device.VirtualIDEController, "ide", "ide"),
]
NIC_ADAPTERS: list[tuple[type, str]] = [
    (vim.vm.device.VirtualVmxnet3, "vmxnet3"),
    (vim.vm.device.VirtualE1000e, "e1000e"),
    (vim.vm.device.VirtualE1000, "e1000"),
    (vim.vm.device.VirtualPCNet32, "pcnet32"),
]


@dataclass
class Discovery:
    """One sync's view of a site: every VM and every other object, ready to store."""

    vms: list[InventoryVm] = field(default_factory=list)
    objects: list[InventoryObject] = field(default_factory=list)


def discover(session: Session, *, site_id: str, now: datetime) -> Discovery:
    """Everything the site's vCenter shows, or SourceError (nothing partial is returned)."""
    content = session.content
    out = Discovery()
    try:
        datacenters = list(_retrieve(content, content.rootFolder, [vim.Datacenter], {vim.Datacenter: ["name"]}))
        for dc_ref, dc_props in datacenters:
            dc_name = str(dc_props.get("name", dc_ref._moId))
            out.objects.append(_object(site_id, InventoryObjectType.DATACENTER, dc_ref, dc_name, "", {}, now))
            _discover_datacenter(content, dc_ref, dc_name, site_id, now, out)
    except vmodl.MethodFault as exc:
        raise SourceError(
            f"site {site_id}: inventory query failed: {fault_message(exc)}", site_id=site_id
        ) from exc
    return out


def _discover_datacenter(
    content: Any, dc: Any, dc_name: str, site_id: str, now: datetime, out: Discovery
) -> None:
    rows = list(_retrieve(content, dc, list(TYPE_PROPS), TYPE_PROPS))
    by_ref = {ref._moId: (ref, props) for ref, props in rows}
    clusters = {m: str(p.get("name", "")) for m, (r, p) in by_ref.items() if isinstance(r, vim.ClusterComputeResource)}
    hosts: dict[str, tuple[str, str]] = {}  # host moref -> (name, cluster name)
    networks: dict[str, str] = {}  # network moref / portgroup key -> name
    datastores: dict[str, str] = {}
    for moref, (ref, props) in by_ref.items():
        name = str(props.get("name", moref))
        if isinstance(ref, vim.ClusterComputeResource):
            out.objects.append(_object(site_id, InventoryObjectType.CLUSTER, ref, name, dc_name, {}, now))
        elif isinstance(ref, vim.HostSystem):
            parent = props.get("parent")
            cluster = clusters.get(parent._moId, "") if parent is not None else ""
            hosts[moref] = (name, cluster)
            details: dict[str, Any] = {"connection": str(props.get("runtime.connectionState", "")),
                       "version": str(props.get("summary.config.product.version", ""))}  # fmt: skip
            out.objects.append(_object(site_id, InventoryObjectType.HOST, ref, name, cluster or dc_name, details, now))
        elif isinstance(ref, vim.Datastore):
            datastores[moref] = name
            details = {"capacity_bytes": int(props.get("summary.capacity") or 0),
                       "free_bytes": int(props.get("summary.freeSpace") or 0),
                       "type": str(props.get("summary.type", ""))}  # fmt: skip
            out.objects.append(_object(site_id, InventoryObjectType.DATASTORE, ref, name, dc_name, details, now))
        elif isinstance(ref, vim.Network):
            networks[moref] = name
            if props.get("key"):
                networks.setdefault(str(props["key"]), name)  # what a distributed port backing names
            kind = "distributed" if isinstance(ref, vim.dvs.DistributedVirtualPortgroup) else "standard"
            out.objects.append(_object(site_id, InventoryObjectType.NETWORK, ref, name, dc_name, {"type": kind}, now))
    for ref, props in by_ref.values():
        if isinstance(ref, vim.VirtualMachine) and not props.get("config.template"):
            out.vms.append(vm_record(site_id, ref, props, dc_name, hosts, networks, datastores, now))


def vm_record(
    site_id: str, ref: Any, props: dict[str, Any], dc_name: str, hosts: dict[str, tuple[str, str]],
    networks: dict[str, str], datastores: dict[str, str], now: datetime,
) -> InventoryVm:  # fmt: skip
    """One VM's record from its collected properties (pure: no calls to the server)."""
    devices = list(props.get("config.hardware.device") or [])
    host_ref = props.get("runtime.host")
    host_name, cluster = hosts.get(host_ref._moId, ("", "")) if host_ref is not None else ("", "")
    firmware = Firmware.EFI if str(props.get("config.firmware", "bios")) == "efi" else Firmware.BIOS
    return InventoryVm(
        id=inventory_id(site_id, ref._moId), site_id=site_id, moref=ref._moId,
        instance_uuid=str(props.get("config.instanceUuid") or ""), name=str(props.get("name", ref._moId)),
        datacenter=dc_name, cluster=cluster, host=host_name, guest_id=str(props.get("config.guestId") or ""),
        power_state=str(props.get("runtime.powerState") or ""),
        tools_status=str(props.get("guest.toolsRunningStatus") or ""),
        cpus=int(props.get("config.hardware.numCPU") or 1), memory_mb=int(props.get("config.hardware.memoryMB") or 0),
        firmware=firmware, cbt_enabled=bool(props.get("config.changeTrackingEnabled")),
        nics=list(nics_of(devices, networks)), disks=disks_of(devices, datastores),
        last_seen_at=now,
    )  # fmt: skip


def disks_of(devices: Iterable[Any], datastores: dict[str, str] | None = None) -> list[InventoryDisk]:
    """The VM's virtual disks in boot order (controller bus, then unit number)."""
    devices = list(devices)
    controllers = {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualController)}
    rows = []
    for d in devices:
        if not isinstance(d, vim.vm.device.VirtualDisk):
            continue
        ctrl = controllers.get(d.controllerKey if d.controllerKey is not None else -1)
        bus, name = next(((b, n) for cls, b, n in CONTROLLERS if isinstance(ctrl, cls)), ("", ""))
        backing = d.backing
        ds = getattr(backing, "datastore", None)
        capacity = int(getattr(d, "capacityInBytes", 0) or 0) or int(d.capacityInKB or 0) * 1024
        rows.append((
            (getattr(ctrl, "busNumber", 0) if ctrl else 0, int(d.unitNumber or 0)),
            InventoryDisk(
                key=d.key, label=getattr(d.deviceInfo, "label", "") or "", capacity_bytes=capacity,
                file=str(getattr(backing, "fileName", "") or ""),
                datastore=(datastores or {}).get(ds._moId, "") if ds is not None else "",
                controller=name, bus=bus, unit=int(d.unitNumber or 0),
                change_id=getattr(backing, "changeId", None) or None,
            ),
        ))  # fmt: skip
    return [disk for _, disk in sorted(rows, key=lambda r: (_BUS_ORDER.get(r[1].bus, 9), r[0]))]


_BUS_ORDER = {"ide": 0, "scsi": 1, "sata": 2, "nvme": 3}


def nics_of(devices: Iterable[Any], networks: dict[str, str]) -> Iterator[InventoryNic]:
    for d in devices:
        if not isinstance(d, vim.vm.device.VirtualEthernetCard):
            continue
        backing = d.backing
        if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
            network = networks.get(str(backing.port.portgroupKey), str(backing.port.portgroupKey))
        else:
            net = getattr(backing, "network", None)
            network = networks.get(net._moId, "") if net is not None else ""
            network = network or str(getattr(backing, "deviceName", "") or "")
        adapter = next((n for cls, n in NIC_ADAPTERS if isinstance(d, cls)), type(d).__name__)
        yield InventoryNic(key=d.key, label=getattr(d.deviceInfo, "label", "") or "", network=network,
                           mac=str(d.macAddress or ""), adapter=adapter)  # fmt: skip


def _object(
    site_id: str, kind: InventoryObjectType, ref: Any, name: str, parent: str,
    details: dict[str, Any], now: datetime,
) -> InventoryObject:  # fmt: skip
    return InventoryObject(id=inventory_id(site_id, ref._moId), site_id=site_id, object_type=kind,
                           moref=ref._moId, name=name, parent=parent, details=details, last_seen_at=now)  # fmt: skip


def _retrieve(
    content: Any, root: Any, types: list[type], props: dict[type, list[str]]
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(object, {property path: value}) for every object of ``types`` under ``root``, paged."""
    view = content.viewManager.CreateContainerView(root, types, True)
    try:
        pc = content.propertyCollector
        traversal = vmodl.query.PropertyCollector.TraversalSpec(
            name="view", path="view", skip=False, type=vim.view.ContainerView
        )
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=t, pathSet=p) for t, p in props.items()],
        )
        result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=PAGE))
        while result is not None:
            for obj in result.objects:
                yield obj.obj, {p.name: p.val for p in (obj.propSet or [])}
            if not result.token:
                break
            result = pc.ContinueRetrievePropertiesEx(result.token)
    finally:
        view.Destroy()
