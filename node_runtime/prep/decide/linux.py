"""What a Linux guest needs changed to boot on a target (pure: facts in, findings and changes out).

Checks, in order: the target's storage drivers in every kernel's initramfs (or built in),
fstab and kernel ``root=`` by UUID instead of bus-specific device names, a serial console on
the kernel command line, DHCP on whatever Ethernet NIC the target presents with MAC pinning
removed, VMware tools disabled, and the platform agents present. A change is decided only
when the facts differ from the desired state, so a prepared guest decides nothing.
"""

from __future__ import annotations

import re

from node_runtime.prep.decide.cmdline import (
    BUS_ROOT,
    add_serial_console,
    cmdlines,
    edit_cmdlines,
    replace_root,
)
from node_runtime.prep.models import Change, KernelFacts, LinuxFacts, PrepFinding
from node_runtime.prep.targets import VMWARE_LINUX_UNITS, TargetNeeds, needs

BUS_DEVICE = re.compile(r"^/dev/(?:[shv]d[a-z]+\d*|xvd[a-z]+\d*|nvme\d+n\d+(?:p\d+)?)$")
IFUPDOWN_FILE = "/etc/network/interfaces.d/lifeboat"
NETPLAN_FILE = "/etc/netplan/90-lifeboat.yaml"
NETPLAN_DHCP = (
    "# Lifeboat: DHCP on whichever Ethernet NIC the recovery target presents\n"
    'network:\n  version: 2\n  ethernets:\n    lifeboat:\n      match:\n        name: "e*"\n      dhcp4: true\n'
)
UDEV_NET_RULES = "/etc/udev/rules.d/70-persistent-net.rules"
MAC_LINE = re.compile(r"^\s*(HWADDR|MACADDR)=.*$|^\s*mac-address=.*$", re.MULTILINE)


def decide_linux(facts: LinuxFacts, target: str) -> tuple[list[PrepFinding], list[Change]]:
    need = needs(target)
    findings: list[PrepFinding] = []
    changes: list[Change] = []
    _initramfs(facts, need, findings, changes)
    _fstab(facts, changes, findings)
    _cmdlines(facts, changes, findings)
    _network(facts, need, findings, changes)
    _vmware(facts, changes)
    _agents(facts, need, findings)
    return findings, changes


def _finding(severity: str, code: str, message: str, refuses: bool = False) -> PrepFinding:
    return PrepFinding(severity=severity, code=code, message=message, refuses=refuses)  # type: ignore[arg-type]


# --- drivers ------------------------------------------------------------------------------
def _missing(kernel: KernelFacts, need: TargetNeeds) -> tuple[list[str], list[str]]:
    """(modules to add to the initramfs, bus groups the kernel has no driver for)."""
    present = set(kernel.builtin) | set(kernel.initramfs_modules or [])
    add: list[str] = []
    absent: list[str] = []
    for group in need.linux_storage:
        if present & set(group):
            continue
        available = [m for m in group if m in kernel.available]
        (add.append(available[0]) if available else absent.append(" or ".join(group)))
    return add, absent


def _initramfs(
    facts: LinuxFacts, need: TargetNeeds, findings: list[PrepFinding], changes: list[Change]
) -> None:
    if not facts.kernels:
        findings.append(
            _finding("error", "no_kernel", "no kernel was found under /lib/modules: nothing can boot")
        )
        return
    to_add: set[str] = set()
    rebuild: list[KernelFacts] = []
    for kernel in facts.kernels:
        if kernel.initramfs is None:
            findings.append(_finding("warning", "no_initramfs", f"kernel {kernel.version} has no initramfs"))
            continue
        if kernel.initramfs_modules is None:
            findings.append(_finding("warning", "initramfs_unreadable",
                                     f"{kernel.initramfs} could not be listed; its drivers are assumed missing"))  # fmt: skip
        add, absent = _missing(kernel, need)
        if absent:
            findings.append(_finding("error", "driver_not_in_kernel",
                                     f"kernel {kernel.version} has no {', '.join(absent)} driver for {need.name}: "
                                     "install a kernel that has it on the source before recovering"))  # fmt: skip
        if add:
            to_add |= set(add)
            rebuild.append(kernel)
        net_present = set(kernel.builtin) | set(kernel.available)
        if not net_present & set(need.linux_network):
            findings.append(_finding("warning", "network_driver_missing",
                                     f"kernel {kernel.version} has no {'/'.join(need.linux_network)} network driver "
                                     f"for {need.name}: the machine will have no network there"))  # fmt: skip
    if not rebuild:
        return
    if facts.initramfs_tool is None:
        findings.append(_finding("error", "no_initramfs_tool",
                                 f"the initramfs lacks {', '.join(sorted(to_add))} and no update-initramfs, "
                                 "dracut or mkinitrd was found to rebuild it"))  # fmt: skip
        return
    new = sorted(to_add - set(facts.requested_modules))
    if new:
        changes.append(_driver_config(facts, new))
    for kernel in rebuild:
        argv = {
            "update-initramfs": ["update-initramfs", "-u", "-k", kernel.version],
            "dracut": ["dracut", "-f", str(kernel.initramfs), kernel.version],
            "mkinitrd": ["mkinitrd", "-k", f"/boot/vmlinuz-{kernel.version}", "-i", str(kernel.initramfs)],
        }
        changes.append(Change(
            code="linux.initramfs_drivers", kind="command", where=str(kernel.initramfs),
            argv=argv[facts.initramfs_tool], before=f"without {', '.join(sorted(to_add))}",
            after=f"with {', '.join(sorted(to_add))}",
            reason=f"the initramfs of kernel {kernel.version} cannot find the root disk on {need.name}"))  # fmt: skip
    if facts.initramfs_modules_policy == "dep":
        findings.append(_finding("info", "initramfs_modules_dep",
                                 "initramfs-tools uses MODULES=dep; the added drivers are listed in "
                                 "/etc/initramfs-tools/modules so later rebuilds keep them"))  # fmt: skip


def _driver_config(facts: LinuxFacts, modules: list[str]) -> Change:
    if facts.initramfs_tool == "update-initramfs":
        existing = "".join(f"{m}\n" for m in facts.requested_modules)
        return Change(
            code="linux.initramfs_drivers", kind="write_file", where="/etc/initramfs-tools/modules",
            content=f"{existing}# added by Lifeboat for the recovery target\n" + "".join(f"{m}\n" for m in modules),
            before=" ".join(facts.requested_modules) or "(none)", after=" ".join(facts.requested_modules + modules),
            reason="initramfs-tools always includes the modules listed here")  # fmt: skip
    return Change(
        code="linux.initramfs_drivers", kind="write_file", where="/etc/dracut.conf.d/90-lifeboat.conf",
        content=f'# added by Lifeboat for the recovery target\nadd_drivers+=" {" ".join(modules)} "\n',
        before="(none)", after=" ".join(modules), reason="dracut adds these drivers to every initramfs it builds")  # fmt: skip


# --- names of disks -------------------------------------------------------------------------
def _fstab(facts: LinuxFacts, changes: list[Change], findings: list[PrepFinding]) -> None:
    replace = {e.spec: f"UUID={e.uuid}" for e in facts.fstab if BUS_DEVICE.match(e.spec) and e.uuid}
    for e in facts.fstab:
        if BUS_DEVICE.match(e.spec) and not e.uuid:
            findings.append(_finding("warning", "fstab_device_unresolved",
                                     f"/etc/fstab mounts {e.spec} on {e.mountpoint}, a device name that changes between "
                                     "platforms, and its file system was not found to name it by UUID"))  # fmt: skip
    if not replace:
        return
    text = facts.fstab_text or ""
    lines = []
    for line in text.split("\n"):
        fields = line.split()
        if fields and fields[0] in replace and not fields[0].startswith("#"):
            line = line.replace(fields[0], replace[fields[0]], 1)
        lines.append(line)
    changes.append(Change(
        code="linux.fstab_by_uuid", kind="write_file", where="/etc/fstab", content="\n".join(lines),
        before=", ".join(sorted(replace)), after=", ".join(replace[k] for k in sorted(replace)),
        reason="device names (/dev/sdX, /dev/xvdX, /dev/nvmeX) differ between platforms; UUIDs do not"))  # fmt: skip


def _cmdlines(facts: LinuxFacts, changes: list[Change], findings: list[PrepFinding]) -> None:
    seen_any = False
    for boot in facts.boot_files:
        lines = cmdlines(boot.path, boot.text)
        if not lines:
            continue
        seen_any = True
        text = boot.text
        if facts.root_uuid and any(BUS_ROOT.search(a) for a in lines):
            new = edit_cmdlines(boot.path, text, replace_root(facts.root_uuid))
            old_roots = sorted({m.group(1) for a in lines for m in [BUS_ROOT.search(a)] if m})
            changes.append(Change(
                code="linux.boot_root_by_uuid", kind="write_file", where=boot.path, content=new,
                before=f"root={', '.join(old_roots)}", after=f"root=UUID={facts.root_uuid}",
                reason="the kernel's root= names a device that changes between platforms"))  # fmt: skip
            text = new
        if not all(re.search(r"\bconsole=ttyS\d", a) for a in lines):
            new = edit_cmdlines(boot.path, text, add_serial_console)
            changes.append(Change(
                code="linux.serial_console", kind="write_file", where=boot.path, content=new,
                before="no serial console", after="console=tty0 console=ttyS0,115200",
                reason="boot validation and the platform's serial log read the first serial port"))  # fmt: skip
    if not seen_any:
        findings.append(_finding("warning", "no_kernel_cmdline",
                                 "no boot-loader configuration with a kernel command line was found: root= and the "
                                 "serial console were not checked"))  # fmt: skip


# --- network ------------------------------------------------------------------------------
def ifupdown_dhcp(need: TargetNeeds) -> str:
    """DHCP stanzas for every name the target gives its NICs. ``allow-hotplug``: udev brings
    each up when its driver registers it (the target's NIC driver is not in the initramfs, so
    it may appear after networking.service ran); a name the machine does not have is inert."""
    stanzas = "".join(f"\nallow-hotplug {n}\niface {n} inet dhcp\n" for n in need.linux_nic_names)
    return f"# Lifeboat: DHCP on the NIC names of {need.name}\n{stanzas}"


def _network(
    facts: LinuxFacts, need: TargetNeeds, findings: list[PrepFinding], changes: list[Change]
) -> None:
    files = facts.network_files
    if "netplan" in facts.network_stack:
        if files.get(NETPLAN_FILE) != NETPLAN_DHCP:
            changes.append(_dhcp_change(NETPLAN_FILE, NETPLAN_DHCP, "netplan", "e* (any Ethernet NIC)"))
        for path, text in files.items():
            if path.startswith("/etc/netplan/") and path != NETPLAN_FILE and "macaddress" in text:
                findings.append(_finding("info", "netplan_mac_match",
                                         f"{path} matches a NIC by MAC address; it will not apply on the target "
                                         f"(the Lifeboat DHCP configuration does)"))  # fmt: skip
    elif "ifupdown" in facts.network_stack:
        wanted = ifupdown_dhcp(need)
        if files.get(IFUPDOWN_FILE) != wanted:
            changes.append(_dhcp_change(IFUPDOWN_FILE, wanted, "ifupdown", ", ".join(need.linux_nic_names)))
            main = files.get("/etc/network/interfaces", "")
            if not re.search(r"^\s*source(?:-directory)?\s+/etc/network/interfaces\.d", main, re.MULTILINE):
                changes.append(Change(
                    code="linux.network_dhcp", kind="write_file", where="/etc/network/interfaces",
                    content=main.rstrip("\n") + "\n\nsource /etc/network/interfaces.d/*\n",
                    before="interfaces.d not sourced", after="source /etc/network/interfaces.d/*",
                    reason="ifupdown reads the Lifeboat DHCP stanza from interfaces.d"))  # fmt: skip
    elif not {"networkmanager", "systemd-networkd"} & set(facts.network_stack):
        findings.append(_finding("warning", "network_unmanaged",
                                 "no netplan, ifupdown, NetworkManager or systemd-networkd was found: the machine may "
                                 "have no network on the target"))  # fmt: skip
    for path, text in files.items():
        if path == UDEV_NET_RULES:
            changes.append(Change(
                code="linux.network_mac_unpinned", kind="remove_file", where=path, before=text.strip()[:200],
                after="(removed)", reason="persistent-net rules bind interface names to the source's MAC addresses"))  # fmt: skip
        elif (
            path.startswith("/etc/sysconfig/network-scripts/") or path.startswith("/etc/NetworkManager/")
        ) and (MAC_LINE.search(text)):
            pinned = [m.group(0).strip() for m in MAC_LINE.finditer(text)]
            changes.append(Change(
                code="linux.network_mac_unpinned", kind="write_file", where=path,
                content="".join(line for line in text.splitlines(keepends=True) if not MAC_LINE.match(line)),
                before=", ".join(pinned), after="(no MAC pinning)",
                reason="a connection pinned to the source NIC's MAC address never matches the target's NIC"))  # fmt: skip


def _dhcp_change(path: str, content: str, stack: str, names: str) -> Change:
    return Change(code="linux.network_dhcp", kind="write_file", where=path, content=content,
                  before="no configuration for the target's NIC names", after=f"DHCP on {names}",
                  reason=f"{stack} brings up only the interfaces it is configured for; the target's NIC has "
                         "another name than the source's")  # fmt: skip


# --- agents and tools ---------------------------------------------------------------------------
def _vmware(facts: LinuxFacts, changes: list[Change]) -> None:
    for link in facts.enabled_units:
        if link.rsplit("/", 1)[-1] in VMWARE_LINUX_UNITS:
            changes.append(Change(
                code="linux.vmware_tools_disabled", kind="remove_file", where=link, before="enabled",
                after="disabled", reason="VMware tools fail outside VMware; the unit is disabled (not removed)"))  # fmt: skip


def _agents(facts: LinuxFacts, need: TargetNeeds, findings: list[PrepFinding]) -> None:
    for agent in need.linux_agents:
        if agent in facts.agents:
            findings.append(
                _finding("info", "agent_present", f"{agent} is installed ({facts.agents[agent]})")
            )
        else:
            findings.append(_finding("warning", "agent_missing",
                                     f"{agent} is not installed: {need.name} features that rely on it (host name, "
                                     "SSH keys, readiness, remote management) will not work until it is"))  # fmt: skip
