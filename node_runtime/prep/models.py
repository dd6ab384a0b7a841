"""What guest preparation reports: facts read from a guest, findings, and the changes it makes.

A :class:`Change` is decided before anything is written (status ``planned``), listed in the
recovery report, then applied (``applied`` or ``failed``). Decisions are pure functions of
:class:`GuestFacts` and the target, so applying the same changes twice changes nothing the
second time: the second inspection sees the desired state and decides nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PrepTarget = Literal["qemu", "aws", "azure"]
PREP_TARGETS: tuple[str, ...] = ("qemu", "aws", "azure")
Severity = Literal["info", "warning", "error"]
ChangeKind = Literal["write_file", "remove_file", "command", "registry_set", "registry_delete"]
ChangeStatus = Literal["planned", "applied", "failed", "skipped"]
RegistryType = Literal["dword", "sz", "expand_sz", "multi_sz"]
InitramfsTool = Literal["update-initramfs", "dracut", "mkinitrd"]
NetworkStack = Literal["netplan", "ifupdown", "networkmanager", "network-scripts", "systemd-networkd"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrepFinding(_Model):
    """One observation. ``error`` means the machine will not boot (or must not be touched) as it is."""

    severity: Severity
    code: str
    message: str
    #: the guest must not be changed at all (BitLocker, hibernated or dirty volume…)
    refuses: bool = False


class Change(_Model):
    """One modification of the guest, decided from facts, with what it replaces.

    ``code`` is stable for UIs (``linux.initramfs_drivers``, ``windows.san_policy``…); ``where``
    names the file (``/etc/fstab``) or registry value (``HKLM\\SYSTEM\\…\\Start``). The payload
    fields the kind needs are set: ``content`` (write_file), ``argv`` (command, run in the guest),
    ``hive``/``key``/``name``/``value_type``/``value`` (registry_*).
    """

    code: str
    kind: ChangeKind
    where: str
    reason: str
    before: str | None = None
    after: str | None = None
    content: str | None = None
    argv: list[str] | None = None
    hive: Literal["SYSTEM", "SOFTWARE"] | None = None
    key: str | None = None
    name: str | None = None
    value_type: RegistryType | None = None
    value: int | str | list[str] | None = None
    status: ChangeStatus = "planned"
    error: str | None = None


class FstabEntry(_Model):
    spec: str
    mountpoint: str
    fstype: str
    #: UUID of the file system the spec names now (resolved through the guest's devices), if known
    uuid: str | None = None


class KernelFacts(_Model):
    version: str
    initramfs: str | None = None
    #: module names (``virtio_blk``) in the initramfs; None when it could not be listed
    initramfs_modules: list[str] | None = None
    #: modules compiled into the kernel (``modules.builtin``)
    builtin: list[str] = Field(default_factory=list)
    #: modules the kernel ships as files under /lib/modules/<version>
    available: list[str] = Field(default_factory=list)


class BootEntryFile(_Model):
    """A file holding kernel command lines (grub.cfg, /etc/default/grub, extlinux.conf, BLS entries)."""

    path: str
    text: str


class LinuxFacts(_Model):
    distro: str
    #: debian (update-initramfs), rhel (dracut), suse (dracut/mkinitrd), other
    family: Literal["debian", "rhel", "suse", "other"]
    version: str
    product: str
    root_device: str
    root_uuid: str | None = None
    initramfs_tool: InitramfsTool | None = None
    #: ``MODULES=`` of initramfs-tools (most, dep, netboot, list), Debian family only
    initramfs_modules_policy: str | None = None
    #: extra modules already requested (/etc/initramfs-tools/modules or dracut add_drivers)
    requested_modules: list[str] = Field(default_factory=list)
    kernels: list[KernelFacts] = Field(default_factory=list)
    fstab: list[FstabEntry] = Field(default_factory=list)
    fstab_text: str | None = None
    #: device (``/dev/sda1``) -> file-system UUID, for the block devices of the disks
    device_uuids: dict[str, str] = Field(default_factory=dict)
    boot_files: list[BootEntryFile] = Field(default_factory=list)
    #: network configuration files by path, with their text
    network_files: dict[str, str] = Field(default_factory=dict)
    network_stack: list[NetworkStack] = Field(default_factory=list)
    #: cloud-init, waagent, amazon-ssm-agent, open-vm-tools, vmware-tools… -> where it was seen
    agents: dict[str, str] = Field(default_factory=dict)
    #: enabled systemd units' symlinks (``/etc/systemd/system/multi-user.target.wants/x.service``)
    enabled_units: list[str] = Field(default_factory=list)


class WindowsService(_Model):
    name: str
    #: the service's key exists under ``<ControlSet>\Services``
    key_present: bool = False
    start: int | None = None
    #: ``Type`` (1 kernel driver, 0x10 own process…), ``ErrorControl``, load order ``Group``
    type: int | None = None
    error_control: int | None = None
    group: str | None = None
    image_path: str | None = None
    #: whether the driver or program file the service names exists on the volume
    file_present: bool = False


class CriticalDevice(_Model):
    """A CriticalDeviceDatabase entry: which service a boot device id binds to, in which class."""

    service: str | None = None
    class_guid: str | None = None


class WindowsFacts(_Model):
    product: str
    edition: str | None = None
    major: int
    minor: int
    build: str | None = None
    systemroot: str
    control_set: str
    services: dict[str, WindowsService] = Field(default_factory=dict)
    #: CriticalDeviceDatabase entries of the targets' boot device ids (key names lower case,
    #: e.g. ``pci#ven_1af4&dev_1001``); ids without an entry are absent
    critical_devices: dict[str, CriticalDevice] = Field(default_factory=dict)
    san_policy: int | None = None
    rdp_denied: int | None = None
    hiberboot_enabled: int | None = None
    hibernated: bool = False
    dirty: bool = False
    pending_reboot: list[str] = Field(default_factory=list)
    #: interfaces with a static address: interface GUID -> address
    static_addresses: dict[str, str] = Field(default_factory=dict)
    #: the Lifeboat first-boot service and script are both installed
    first_boot_present: bool = False
    #: values of the first-boot service's key (empty when it is absent)
    first_boot_service: dict[str, int | str | list[str]] = Field(default_factory=dict)
    #: the first-boot script's text, None when it is absent
    first_boot_script: str | None = None


class OsFacts(_Model):
    """What libguestfs inspection found on the machine's disks (one operating system)."""

    type: Literal["linux", "windows", "unknown"]
    root: str | None = None
    arch: str | None = None
    hostname: str | None = None
    #: file systems that could not be read (BitLocker, corrupt, hibernated…) -> why
    unreadable: dict[str, str] = Field(default_factory=dict)
    linux: LinuxFacts | None = None
    windows: WindowsFacts | None = None


class GuestPrep(_Model):
    """One machine's preparation: facts, findings and changes, before or after applying them.

    ``refused`` is True when a finding of severity ``error`` forbids changing the guest
    (BitLocker, an unreadable root, a dirty or hibernated volume); nothing is written then.
    """

    target: PrepTarget
    facts: OsFacts
    findings: list[PrepFinding] = Field(default_factory=list)
    changes: list[Change] = Field(default_factory=list)
    refused: bool = False
    applied: bool = False
    seconds: dict[str, float] = Field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """What a recovery report keeps: the OS, findings and changes (without file contents or
        the facts' bulky lists), small enough for a flow state."""
        facts = self.facts
        os: dict[str, object] = {"type": facts.type, "hostname": facts.hostname, "arch": facts.arch}
        if facts.linux is not None:
            os |= {"distro": facts.linux.distro, "product": facts.linux.product, "version": facts.linux.version,
                   "kernels": [k.version for k in facts.linux.kernels]}  # fmt: skip
        if facts.windows is not None:
            os |= {"product": facts.windows.product, "edition": facts.windows.edition,
                   "version": f"{facts.windows.major}.{facts.windows.minor}", "build": facts.windows.build}  # fmt: skip
        return {
            "target": self.target, "os": os, "refused": self.refused, "applied": self.applied,
            "findings": [f.model_dump(mode="json") for f in self.findings],
            "changes": [c.model_dump(mode="json", exclude={"content"}, exclude_none=True) for c in self.changes],
            "seconds": self.seconds,
        }  # fmt: skip
