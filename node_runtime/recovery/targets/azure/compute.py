"""The Azure compute port: the few Azure Resource Manager (ARM) operations a recovery needs.

:mod:`node_runtime.recovery.targets.azure` decides *what* to create; an adapter of this
port only translates to ARM: :class:`~node_runtime.recovery.targets.azure.arm.ArmCompute`
on ``azure-mgmt-compute`` / ``azure-mgmt-network``. Tests use the in-memory fake in
``tests/support/fake_azure_compute.py``, which checks what ARM checks, and the project's
ARM server (``tests/support/arm_server.py``), which serves that fake's rules over ARM's
REST to the real SDKs.

Contract (every adapter, the fake included):

* **Addressing.** A resource is addressed by its ARM id,
  ``/subscriptions/{sub}/resourceGroups/{rg}/providers/{type}/{name}``, where ``type`` is
  one of :data:`DISK`, :data:`NIC`, :data:`VM`, :data:`VNET`. :meth:`AzureCompute.resource_id` computes
  it without any I/O, so a caller can record a resource *before* creating it. Ids compare
  case-insensitively (as in ARM); adapters return them in ARM's casing.
* **Creates are PUTs.** ``create_*`` is idempotent by name: calling it again with the
  same parameters returns the same id and changes nothing. Calling it with parameters
  ARM cannot change in place (another source blob, another subnet) raises
  :class:`~shared.errors.InvalidInputError` (``code="PropertyChangeNotAllowed"``).
* **Long-running operations are waited on.** A call returns only once ARM reports the
  operation finished (``poller.result()``); ``create_vm`` returns once the VM is
  provisioned (``ProvisioningState/succeeded``), which for a VM attached to an existing
  OS disk means it was started.
* **A failed create may leave the resource behind.** When ARM accepted the PUT but the
  operation then failed (allocation failure, provisioning timeout), the resource exists
  in state ``failed``; the caller must delete it (it knows the id from ``resource_id``).
* **Errors.** Invalid requests (bad name or tag, unknown subnet, NSG or VM size, a VHD
  ARM would refuse, a location mismatch, a resource group that does not exist) raise
  :class:`~shared.errors.InvalidInputError`; everything else raises
  :class:`~shared.errors.TargetError`. Both carry ``code`` (ARM's error code) and
  ``transient`` (``True`` for throttling, 5xx, timeouts: worth retrying the same call)
  as fields, with the SDK error chained as ``__cause__``. Reading a resource that does
  not exist raises ``TargetError`` with ``code="NotFound"``.
* **Deletes are idempotent.** :meth:`AzureCompute.delete` returns ``False`` when the
  resource was already gone and never raises for "not found". Deleting a VM deletes
  neither its disks nor its NICs (ARM's ``deleteOption`` default, ``Detach``); deleting a
  NIC or disk still attached to a VM raises ``TargetError`` (``NicInUse``,
  ``OperationNotAllowed``), and deleting a virtual network whose subnets still hold NICs
  raises ``TargetError`` (``InUseSubnetCannotBeDeleted``), so cleanup runs in reverse
  creation order.
* **Tags** are ARM tags: at most 50, names up to 512 characters without ``<>%&\\?/``,
  values up to 256 characters.

Retries and throttling are wrappers around this port, stacked in the composition root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

DISK = "Microsoft.Compute/disks"
NIC = "Microsoft.Network/networkInterfaces"
VM = "Microsoft.Compute/virtualMachines"
VNET = "Microsoft.Network/virtualNetworks"
RESOURCE_TYPES = (DISK, NIC, VM, VNET)

OS_TYPES = ("Linux", "Windows")
HYPER_V_GENERATIONS = ("V1", "V2")


@dataclass(frozen=True)
class VmView:
    """A VM's instance view, reduced to what validation needs.

    ``provisioning_state`` and ``power_state`` are the lower-cased suffixes of ARM's
    ``ProvisioningState/...`` and ``PowerState/...`` status codes (``succeeded``,
    ``failed``, ``creating``; ``running``, ``starting``, ``stopped``, ``deallocated``);
    ``power_state`` is ``None`` while ARM reports none. ``statuses`` are all status codes
    with their messages, as ARM returned them.
    """

    provisioning_state: str
    power_state: str | None
    statuses: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NicInfo:
    """A NIC as created: its id and the private IPv4 address ARM assigned or kept."""

    id: str
    private_ip: str


@dataclass(frozen=True)
class SubnetInfo:
    """An existing subnet: its id, IPv4 prefix, location and the NICs' ids it holds."""

    id: str
    address_prefix: str
    location: str
    nic_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VmSize:
    """A VM size offered in a location."""

    name: str
    cpus: int
    memory_mb: int
    max_data_disks: int


class AzureCompute(Protocol):
    """Managed disks, NICs and VMs in one subscription (see the module docstring for the contract)."""

    def resource_id(self, resource_type: str, resource_group: str, name: str) -> str:
        """The ARM id ``name`` of ``resource_type`` in ``resource_group`` has or would have. No I/O."""
        ...

    def create_disk_from_vhd(
        self,
        resource_group: str,
        name: str,
        *,
        location: str,
        blob_url: str,
        size_gib: int | None,
        os_type: str | None,
        tags: dict[str, str],
        hyper_v_generation: str = "V1",
    ) -> str:
        """Import the fixed-VHD page blob at ``blob_url`` as a managed disk; its id.

        ARM checks the blob: it must exist in the adapter's storage account, be a page
        blob, end with a valid fixed-VHD footer and have a virtual size that is a multiple
        of 1 MiB. ``size_gib`` ``None`` keeps the VHD's size; otherwise it must hold it.
        ``os_type`` (``Linux``/``Windows``) marks an OS disk; ``None`` a data disk.
        ``hyper_v_generation`` is ``V1`` (BIOS) or ``V2`` (UEFI): the VM boots the OS disk
        with that firmware. The blob may be deleted once this returns (the data was copied).
        """
        ...

    def create_nic(
        self,
        resource_group: str,
        name: str,
        *,
        location: str,
        subnet_id: str,
        nsg_id: str | None,
        private_ip: str | None,
        tags: dict[str, str],
    ) -> NicInfo:
        """Create a NIC in ``subnet_id`` (same location), with one NSG or none.

        ``private_ip`` is allocated statically; it must lie in the subnet's prefix, not be
        one of the five addresses Azure reserves, and be free. ``None`` allocates the next
        free address dynamically. No public IP is ever attached.
        """
        ...

    def create_vm(
        self,
        resource_group: str,
        name: str,
        *,
        location: str,
        size: str,
        os_disk_id: str,
        data_disk_ids: list[str],
        nic_ids: list[str],
        tags: dict[str, str],
        boot_diagnostics: bool = True,
    ) -> str:
        """Create and start a VM over existing disks (OS disk attached, data disks at LUN 0..)
        and NICs (the first is primary; all in one virtual network); its id.

        The disks and NICs must exist in ``location`` and be attached to no other VM; the
        OS disk must have an OS type. ``boot_diagnostics`` enables boot diagnostics with
        managed storage, which :meth:`serial_log` reads.
        """
        ...

    def create_vnet(
        self,
        resource_group: str,
        name: str,
        *,
        location: str,
        subnets: dict[str, str],
        tags: dict[str, str],
    ) -> dict[str, str]:
        """Create a virtual network with ``subnets`` (name -> IPv4 prefix), no peering and no
        gateway; its address space is the subnets' prefixes. Returns subnet name -> id."""
        ...

    def get_subnet(self, subnet_id: str) -> SubnetInfo:
        """An existing subnet; ``TargetError`` ``NotFound`` when it (or its network) does not exist."""
        ...

    def vm_sizes(self, location: str) -> list[VmSize]:
        """The VM sizes ``location`` offers to this subscription."""
        ...

    def instance_view(self, vm_id: str) -> VmView:
        """The VM's current provisioning and power state."""
        ...

    def serial_log(self, vm_id: str) -> str:
        """The VM's serial console log from boot diagnostics (``""`` while there is none yet).

        ARM refreshes it every few minutes, not live. Raises ``InvalidInputError``
        (``code="BootDiagnosticsDisabled"``) when boot diagnostics are off.
        """
        ...

    def delete(self, resource_id: str) -> bool:
        """Delete a disk, NIC, VM or virtual network and wait for it to be gone; ``False`` if it already was."""
        ...

    def list_tagged(self, resource_group: str, tags: dict[str, str]) -> list[str]:
        """Ids of the disks, NICs, VMs and virtual networks in ``resource_group`` carrying all of ``tags``."""
        ...
