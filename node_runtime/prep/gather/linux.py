"""Read a Linux guest's boot-relevant facts: distro, kernels and initramfs contents, fstab,
boot-loader command lines, network configuration, agents and enabled units.

Reads only (the root is mounted read-only for a dry run). Module names are normalised with
``_`` (``virtio-blk`` and ``virtio_blk`` are one module).
"""

from __future__ import annotations

import re

from node_runtime.prep.guest import Guest
from node_runtime.prep.models import (
    BootEntryFile,
    FstabEntry,
    InitramfsTool,
    KernelFacts,
    LinuxFacts,
    NetworkStack,
)
from shared.errors import GuestPrepError

FAMILIES = {
    "debian": "debian", "ubuntu": "debian", "linuxmint": "debian",
    "rhel": "rhel", "centos": "rhel", "rocky": "rhel", "almalinux": "rhel", "fedora": "rhel",
    "oraclelinux": "rhel", "scientificlinux": "rhel", "amazonlinux": "rhel", "circle": "rhel",
    "sles": "suse", "opensuse": "suse", "suse-based": "suse",
}  # fmt: skip
BOOT_FILES = (
    "/etc/default/grub", "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/boot/grub2/grubenv",
    "/boot/extlinux/extlinux.conf", "/boot/syslinux/syslinux.cfg", "/extlinux.conf", "/etc/kernel/cmdline",
)  # fmt: skip
NETWORK_GLOBS = (
    "/etc/network/interfaces", "/etc/network/interfaces.d/*", "/etc/netplan/*.yaml",
    "/etc/sysconfig/network-scripts/ifcfg-*", "/etc/NetworkManager/system-connections/*",
    "/etc/systemd/network/*.network", "/etc/udev/rules.d/70-persistent-net.rules",
)  # fmt: skip
AGENTS = {
    "cloud-init": ("/usr/bin/cloud-init",),
    "waagent": ("/usr/sbin/waagent", "/usr/bin/waagent"),
    "amazon-ssm-agent": ("/usr/bin/amazon-ssm-agent", "/snap/amazon-ssm-agent"),
    "open-vm-tools": ("/usr/bin/vmtoolsd",),
    "vmware-tools": ("/etc/vmware-tools/locations", "/usr/sbin/vmware-guestd"),
}
MODULE_FILE = re.compile(r"([^/]+)\.ko(?:\.(?:xz|zst|gz))?$")


def module_name(path: str) -> str | None:
    """``kernel/drivers/block/virtio_blk.ko.zst`` -> ``virtio_blk``; None for non-module paths."""
    m = MODULE_FILE.search(path.strip())
    return m.group(1).replace("-", "_") if m else None


def _config_value(text: str, key: str) -> str | None:
    value = None
    for line in text.splitlines():
        m = re.match(rf"\s*{key}\s*=\s*['\"]?([^'\"#\s]*)", line)
        if m:
            value = m.group(1)
    return value


def gather_linux(guest: Guest, root: str) -> LinuxFacts:
    """Facts of the Linux guest whose root is mounted; unreadable items are left empty."""
    distro = guest.root_info(root, "distro")
    family = FAMILIES.get(distro, "other")
    mounts = dict(guest.call("reading mount points", "inspect_get_mountpoints", root))
    root_device = mounts.get("/", root)
    facts = LinuxFacts(
        distro=distro, family=family,  # type: ignore[arg-type]
        version=f"{guest.root_info(root, 'major_version')}.{guest.root_info(root, 'minor_version')}",
        product=guest.root_info(root, "product_name"), root_device=root_device,
        root_uuid=_uuid(guest, root_device),
    )  # fmt: skip
    facts.initramfs_tool = _initramfs_tool(guest, family)
    _initramfs_config(guest, facts)
    facts.kernels = [_kernel(guest, facts, version) for version in _kernel_versions(guest)]
    facts.fstab_text = guest.read_optional("/etc/fstab")
    facts.fstab = _fstab(guest, mounts, facts.fstab_text or "")
    facts.device_uuids = {dev: u for dev in guest.call("listing file systems", "list_filesystems")
                          if (u := _uuid(guest, dev))}  # fmt: skip
    facts.boot_files = [
        BootEntryFile(path=p, text=t) for p in _boot_paths(guest) if (t := guest.read_optional(p))
    ]
    facts.network_files = {p: t for pattern in NETWORK_GLOBS for p in guest.glob(pattern)
                           if (t := guest.read_optional(p)) is not None}  # fmt: skip
    facts.network_stack = _network_stack(guest, facts.network_files)
    facts.agents = {name: path for name, paths in AGENTS.items() for path in paths
                    if guest.exists(path)}  # fmt: skip
    facts.enabled_units = guest.glob("/etc/systemd/system/*.wants/*")
    return facts


def _uuid(guest: Guest, device: str) -> str | None:
    try:
        return str(guest.g.vfs_uuid(device)) or None
    except RuntimeError:
        return None


def _initramfs_tool(guest: Guest, family: str) -> InitramfsTool | None:
    candidates: dict[InitramfsTool, tuple[str, ...]] = {
        "update-initramfs": ("/usr/sbin/update-initramfs", "/sbin/update-initramfs"),
        "dracut": ("/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut"),
        "mkinitrd": ("/sbin/mkinitrd", "/usr/sbin/mkinitrd"),
    }
    order: list[InitramfsTool] = (
        ["update-initramfs", "dracut", "mkinitrd"]
        if family == "debian"
        else ["dracut", "mkinitrd", "update-initramfs"]
    )
    return next((tool for tool in order if any(guest.exists(p) for p in candidates[tool])), None)


def _initramfs_config(guest: Guest, facts: LinuxFacts) -> None:
    if facts.initramfs_tool == "update-initramfs":
        confs = ["/etc/initramfs-tools/initramfs.conf", *guest.glob("/etc/initramfs-tools/conf.d/*")]
        for path in confs:
            value = _config_value(guest.read_optional(path) or "", "MODULES")
            facts.initramfs_modules_policy = value or facts.initramfs_modules_policy
        text = guest.read_optional("/etc/initramfs-tools/modules") or ""
        facts.requested_modules = [line.split()[0].replace("-", "_") for line in text.splitlines()
                                   if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
    elif facts.initramfs_tool == "dracut":
        for path in ["/etc/dracut.conf", *guest.glob("/etc/dracut.conf.d/*.conf")]:
            for m in re.finditer(
                r"(?:add_drivers|force_drivers)\+?=\s*['\"]([^'\"]*)", guest.read_optional(path) or ""
            ):
                facts.requested_modules += [n.replace("-", "_") for n in m.group(1).split()]


def _kernel_versions(guest: Guest) -> list[str]:
    found: set[str] = set()
    for base in ("/lib/modules", "/usr/lib/modules"):
        found |= {
            v
            for v in guest.ls(base)
            if guest.exists(f"{base}/{v}/modules.dep") or guest.exists(f"/boot/vmlinuz-{v}")
        }
    return sorted(found)


def _modules_dir(guest: Guest, version: str) -> str:
    return next((f"{b}/{version}" for b in ("/lib/modules", "/usr/lib/modules") if guest.exists(f"{b}/{version}")),
                f"/lib/modules/{version}")  # fmt: skip


def _kernel(guest: Guest, facts: LinuxFacts, version: str) -> KernelFacts:
    moddir = _modules_dir(guest, version)
    builtin = guest.read_optional(f"{moddir}/modules.builtin") or ""
    deps = guest.read_optional(f"{moddir}/modules.dep") or ""
    kernel = KernelFacts(
        version=version,
        builtin=sorted({n for line in builtin.splitlines() if (n := module_name(line))}),
        available=sorted({n for line in deps.splitlines() if (n := module_name(line.split(":", 1)[0]))}),
    )
    for path in (f"/boot/initrd.img-{version}", f"/boot/initramfs-{version}.img", f"/boot/initrd-{version}"):
        if guest.exists(path):
            kernel.initramfs = path
            kernel.initramfs_modules = _initramfs_modules(guest, facts, path)
            break
    return kernel


def _initramfs_modules(guest: Guest, facts: LinuxFacts, path: str) -> list[str] | None:
    """The modules in an initramfs: the guest's own lister (handles zstd/xz and early cpio),
    else libguestfs' (gzip only); None when neither can read it."""
    lister = {"update-initramfs": "lsinitramfs", "dracut": "lsinitrd"}.get(facts.initramfs_tool or "")
    listing: list[str] | None = None
    if lister:
        try:
            listing = guest.sh(f"{lister} {path} 2>/dev/null").splitlines()
        except GuestPrepError:
            listing = None
    if not listing:
        try:
            listing = list(guest.g.initrd_list(path))
        except RuntimeError:
            return None
    return sorted({n for line in listing if (n := module_name(line))})


def _fstab(guest: Guest, resolved: dict[str, str], text: str) -> list[FstabEntry]:
    """fstab entries with the UUID of the device each names (``resolved``: libguestfs' mount
    point -> appliance device map)."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#"):
            continue
        device = resolved.get(fields[1]) if fields[1] != "none" else None
        if device is None and fields[2] == "swap" and fields[0].startswith("/dev/"):
            device = _appliance_device(guest, fields[0])
        entries.append(FstabEntry(spec=fields[0], mountpoint=fields[1], fstype=fields[2],
                                  uuid=_uuid(guest, device) if device else None))  # fmt: skip
    return entries


def _appliance_device(guest: Guest, spec: str) -> str | None:
    """The appliance's name for a guest's /dev/[shvx]d?N device (libguestfs presents sdX)."""
    m = re.match(r"/dev/(?:x?v|s|h)d([a-z]+)(\d+)$", spec)
    if not m:
        return None
    device = f"/dev/sd{m.group(1)}{m.group(2)}"
    return device if device in guest.call("listing partitions", "list_partitions") else None


def _boot_paths(guest: Guest) -> list[str]:
    paths = [p for p in BOOT_FILES if guest.exists(p)]
    paths += guest.glob("/boot/loader/entries/*.conf") + guest.glob("/boot/efi/EFI/*/grub.cfg")
    return paths


def _network_stack(guest: Guest, files: dict[str, str]) -> list[NetworkStack]:
    stack: list[NetworkStack] = []
    if any(p.startswith("/etc/netplan/") for p in files):
        stack.append("netplan")
    if guest.exists("/sbin/ifup") or guest.exists("/usr/sbin/ifup"):
        stack.append("ifupdown")
    if guest.exists("/usr/sbin/NetworkManager"):
        stack.append("networkmanager")
    if any(p.startswith("/etc/sysconfig/network-scripts/ifcfg-") for p in files):
        stack.append("network-scripts")
    if guest.exists("/lib/systemd/systemd-networkd") and any(
        p.startswith("/etc/systemd/network/") for p in files
    ):
        stack.append("systemd-networkd")
    return stack
