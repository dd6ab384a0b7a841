"""What each target platform's virtual hardware needs from a guest: drivers and NIC naming.

Pure data. Linux names are kernel modules that must be in the initramfs (or built into the
kernel) for the root disk to be found; Windows names are driver services that must start at
boot (``Start=0``) with the PCI ids the CriticalDeviceDatabase binds them to.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WindowsDriver:
    service: str
    #: the driver file under System32\drivers
    file: str
    #: device ids (CriticalDeviceDatabase key names, lower case, ``#`` for ``\``)
    device_ids: tuple[str, ...] = ()
    class_guid: str = "{4d36e97b-e325-11ce-bfc1-08002be10318}"  # SCSI adapter
    #: one of these drivers is enough (e.g. viostor or vioscsi)
    group: str = ""


@dataclass(frozen=True)
class TargetNeeds:
    name: str
    #: Linux modules needed to find the root disk; each inner tuple is "any of" (a module
    #: per bus the platform may present), all outer entries are needed
    linux_storage: tuple[tuple[str, ...], ...]
    linux_network: tuple[str, ...]
    #: Windows boot storage drivers: at least one must be present and boot-start
    windows_storage: tuple[WindowsDriver, ...]
    windows_network: tuple[str, ...]
    #: the names Linux gives the platform's NICs (predictable names by slot, or eth* for
    #: VMBus/net.ifnames=0), for network configurations that need names (ifupdown)
    linux_nic_names: tuple[str, ...] = ("eth0", "eth1")
    #: agents the platform expects in a guest (reported, never installed)
    linux_agents: tuple[str, ...] = field(default_factory=tuple)


VIRTIO_PCI = "virtio_pci"
NEEDS: dict[str, TargetNeeds] = {
    "qemu": TargetNeeds(
        name="QEMU/KVM (virtio)",
        linux_storage=((VIRTIO_PCI,), ("virtio_blk", "virtio_scsi")),
        linux_network=("virtio_net",),
        windows_storage=(
            WindowsDriver(
                "viostor", "viostor.sys", ("pci#ven_1af4&dev_1001", "pci#ven_1af4&dev_1042"), group="virtio"
            ),
            WindowsDriver(
                "vioscsi", "vioscsi.sys", ("pci#ven_1af4&dev_1004", "pci#ven_1af4&dev_1048"), group="virtio"
            ),
        ),
        windows_network=("netkvm",),
        # i440fx: ens3, ens4… (slot); q35: enp1s0… (PCIe root ports)
        linux_nic_names=(
            "ens3",
            "ens4",
            "ens5",
            "ens6",
            "enp0s3",
            "enp0s4",
            "enp1s0",
            "enp2s0",
            "enp3s0",
            "eth0",
            "eth1",
        ),
    ),
    "aws": TargetNeeds(
        name="AWS Nitro (NVMe, ENA)",
        linux_storage=(("nvme",),),
        linux_network=("ena",),
        windows_storage=(
            WindowsDriver("stornvme", "stornvme.sys", ("pci#cc_010802",), group="nvme"),
            WindowsDriver(
                "AWSNVMe", "AWSNVMe.sys", ("pci#ven_1d0f&dev_8061", "pci#ven_1d0f&dev_0061"), group="nvme"
            ),
        ),
        windows_network=("ena",),
        linux_nic_names=("ens5", "ens6", "ens7", "ens8", "eth0", "eth1"),  # Nitro: ENA in slots 5+
        linux_agents=("cloud-init", "amazon-ssm-agent"),
    ),
    "azure": TargetNeeds(
        name="Azure Hyper-V (VMBus storvsc, netvsc)",
        linux_storage=(("hv_vmbus",), ("hv_storvsc",)),
        linux_network=("hv_netvsc",),
        windows_storage=(
            WindowsDriver(
                "storvsc", "storvsc.sys", ("vmbus#{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}",), group="vmbus"
            ),
        ),
        windows_network=("netvsc",),
        linux_agents=("cloud-init", "waagent"),
    ),
}

#: services VMware Tools installs in Windows (disabled on another platform: they fail at boot)
VMWARE_WINDOWS_SERVICES = ("VMTools", "VGAuthService", "vm3dservice", "vmvss", "VMwareCAFManagementAgentHost")
#: systemd units of open-vm-tools / VMware Tools in Linux
VMWARE_LINUX_UNITS = ("open-vm-tools.service", "vmtoolsd.service", "vgauth.service", "vmware-tools.service")


def needs(target: str) -> TargetNeeds:
    """The needs of ``target`` (qemu, aws or azure); ValueError names the valid ones."""
    try:
        return NEEDS[target]
    except KeyError:
        raise ValueError(f"target must be one of {', '.join(NEEDS)}, not {target!r}") from None
