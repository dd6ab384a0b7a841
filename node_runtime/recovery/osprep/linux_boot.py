"""Linux boot-loader configuration on FAT partitions: find it, read kernel command lines, and
check and fix what a recovered machine needs (a serial console, a ``root=`` that still resolves).

Covered: syslinux/extlinux (``APPEND`` of entries that load a kernel), GRUB (``linux``,
``linuxefi``, ``linux16`` lines) and systemd-boot entries (``options``), when the file is on a
FAT partition (a BIOS ``/boot`` or an ESP). Configuration on ext4/XFS is not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from node_runtime.recovery.osprep.fat_files import FatVolume
from node_runtime.recovery.osprep.models import BootConfig, DiskInspection, Finding, Patch
from node_runtime.recovery.osprep.reader import ReadAt

SERIAL_CONSOLE = "console=ttyS0,115200n8"
CONSOLE_RE = re.compile(r"(?:^|\s)console=ttyS0(?:[,\s]|$)")
ROOT_RE = re.compile(r"(?:^|\s)root=(\S+)")
DEVICE_RE = re.compile(r"^/dev/(sd[a-z]+|hd[a-z]+|vd[a-z]+|xvd[a-z]+|nvme\d+n\d+)(p?\d+)?$")
NON_KERNEL_SUFFIXES = (".c32", ".com", ".cbt", ".bin", ".0", ".bss")
CONFIG_LIMIT = 256 * 1024

SYSLINUX_PATHS = (
    ("syslinux.cfg", "syslinux"),
    ("syslinux/syslinux.cfg", "syslinux"),
    ("boot/syslinux/syslinux.cfg", "syslinux"),
    ("extlinux.conf", "extlinux"),
    ("extlinux/extlinux.conf", "extlinux"),
    ("boot/extlinux/extlinux.conf", "extlinux"),
)
GRUB_PATHS = (
    "grub/grub.cfg",
    "grub2/grub.cfg",
    "boot/grub/grub.cfg",
    "boot/grub2/grub.cfg",
    "EFI/BOOT/grub.cfg",
)

_SYSLINUX_KW = re.compile(r"^\s*(\w+)\s*(.*?)\s*$")
_GRUB_LINUX = re.compile(r"^\s*(?:linux|linuxefi|linux16)\s+\S+(.*?)\s*$")
_SDBOOT_OPTIONS = re.compile(r"^\s*options\s+(.*?)\s*$")


def find_boot_configs(volume: FatVolume, partition: int) -> list[BootConfig]:
    """Every boot-loader configuration file this module understands on ``volume``."""
    found: list[tuple[str, str]] = list(SYSLINUX_PATHS)
    found += [(p, "grub") for p in GRUB_PATHS]
    found += [(f"EFI/{d}/grub.cfg", "grub") for d in volume.listdir("EFI") if d.upper() != "BOOT"]
    found += [
        (f"loader/entries/{n}", "systemd-boot")
        for n in volume.listdir("loader/entries")
        if n.endswith(".conf")
    ]
    configs = []
    for path, loader in found:
        info = volume.stat(path)
        if info is None:
            continue
        raw = volume.read_file(path, CONFIG_LIMIT) or b""
        text = raw.decode("latin-1")  # byte-for-byte round trip for patches
        configs.append(
            BootConfig(
                partition=partition,
                path="/" + path,
                loader=loader,  # type: ignore[arg-type]
                text=text,
                cmdlines=[text_line.strip() for _, text_line in cmdline_lines(loader, text)],
                size=info.size,
                allocated=info.allocated,
                extents=list(info.extents),
                dirent_offset=info.dirent_offset,
            )
        )
    return configs


def cmdline_lines(loader: str, text: str) -> list[tuple[int, str]]:
    """``(line index, kernel command line)`` for each line of ``text`` that carries one."""
    lines = text.splitlines()
    if loader == "grub":
        return [(i, m.group(1)) for i, line in enumerate(lines) if (m := _GRUB_LINUX.match(line))]
    if loader == "systemd-boot":
        return [(i, m.group(1)) for i, line in enumerate(lines) if (m := _SDBOOT_OPTIONS.match(line))]
    return _syslinux_cmdlines(lines)


@dataclass
class _Entry:
    kernel: str | None = None
    append: tuple[int, str] | None = None
    linux: bool = True


def _syslinux_cmdlines(lines: list[str]) -> list[tuple[int, str]]:
    global_append: tuple[int, str] | None = None
    entries: list[_Entry] = []
    for i, line in enumerate(lines):
        m = _SYSLINUX_KW.match(line)
        if not m:
            continue
        keyword, value = m.group(1).lower(), m.group(2)
        if keyword == "label":
            entries.append(_Entry())
        elif keyword in ("kernel", "linux") and entries:
            entries[-1].kernel = value
            entries[-1].linux = keyword == "linux" or not value.lower().endswith(NON_KERNEL_SUFFIXES)
        elif (
            keyword in ("com32", "localboot", "config", "boot", "bss", "pxe", "fdimage", "comboot")
            and entries
        ):
            entries[-1].linux = False
        elif keyword == "append":
            if value == "-":
                value = ""
            if entries:
                entries[-1].append = (i, value)
            else:
                global_append = (i, value)
    out: list[tuple[int, str]] = []
    for entry in entries:
        if not (entry.linux and entry.kernel):
            continue
        chosen = entry.append or global_append
        if chosen and chosen not in out:
            out.append(chosen)
    return sorted(out)


# --- checks --------------------------------------------------------------------------------------
def check_serial_console(
    read: ReadAt, disk_index: int, config: BootConfig, platform: str
) -> tuple[list[Finding], list[Patch]]:
    """A finding per command line without ``console=ttyS0``, and patches that add it in place if they can."""
    missing = [(i, c) for i, c in cmdline_lines(config.loader, config.text) if not CONSOLE_RE.search(c)]
    where = f"{config.path} on partition {config.partition}"
    if not missing:
        return [
            Finding(
                severity="info",
                code="serial_console_ok",
                message=f"{where}: every kernel command line has console=ttyS0",
                disk_index=disk_index,
                partition=config.partition,
            )
        ], []
    patches, problem = _append_console_patches(read, disk_index, config, {i for i, _ in missing})
    need = "the serial log is the only way to watch the boot" + (
        " and to validate it" if platform == "qemu" else f" on {platform}"
    )
    if patches:
        return [
            Finding(
                severity="warning",
                code="serial_console_added",
                message=f"{where}: {len(missing)} kernel command line(s) lacked console=ttyS0 ({need}); "
                f"a patch appends {SERIAL_CONSOLE}",
                disk_index=disk_index,
                partition=config.partition,
            )
        ], patches
    return [
        Finding(
            severity="warning",
            code="serial_console_missing",
            message=f"{where}: {len(missing)} kernel command line(s) lack console=ttyS0 ({need}) and the "
            f"file cannot be edited in place ({problem}); add {SERIAL_CONSOLE} to the boot entry on the source",
            disk_index=disk_index,
            partition=config.partition,
        )
    ], []


def _append_console_patches(
    read: ReadAt, disk_index: int, config: BootConfig, line_numbers: set[int]
) -> tuple[list[Patch], str]:
    old = config.text.encode("latin-1")
    lines = config.text.splitlines(keepends=True)
    for i in line_numbers:
        body = lines[i].rstrip("\r\n")
        lines[i] = body + " " + SERIAL_CONSOLE + lines[i][len(body) :]
    new = "".join(lines).encode("latin-1")
    if len(old) != config.size:
        return [], "the file is larger than this tool reads"
    if len(new) > config.allocated:
        return [], f"it would grow to {len(new)} bytes, beyond its {config.allocated} allocated bytes"
    if config.dirent_offset is None:
        return [], "its directory entry was not found"
    first = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), len(old))
    reason = (
        f"append {SERIAL_CONSOLE} to the kernel command line in {config.path} (partition {config.partition})"
    )
    patches: list[Patch] = []
    position = 0
    for offset, length in config.extents:
        lo, hi = max(first, position), min(len(new), position + length)
        if lo < hi:
            patches.append(
                Patch(
                    disk_index=disk_index,
                    offset=offset + lo - position,
                    data_hex=new[lo:hi].hex(),
                    original_hex=read(offset + lo - position, hi - lo).hex(),
                    reason=reason,
                )
            )
        position += length
    patches.append(
        Patch(
            disk_index=disk_index,
            offset=config.dirent_offset + 28,
            data_hex=len(new).to_bytes(4, "little").hex(),
            original_hex=len(old).to_bytes(4, "little").hex(),
            reason=f"{reason}: the file size in its directory entry, {len(old)} -> {len(new)} bytes "
            "(still inside its allocated clusters)",
        )
    )
    return patches, ""


def check_root(
    disk_index: int, config: BootConfig, platform: str, disks: list[DiskInspection]
) -> list[Finding]:
    """Whether each ``root=`` names something the recovered disks hold, in a form that survives the move."""
    uuids, labels, partuuids, has_lvm = set(), set(), set(), False
    for disk in disks:
        filesystems = [p.filesystem for p in disk.partitions] + [disk.whole_disk_filesystem]
        for fs in filesystems:
            if fs is None:
                continue
            has_lvm |= fs.type == "lvm2_pv"
            if fs.uuid:
                uuids.add(fs.uuid.lower())
            if fs.label:
                labels.add(fs.label)
        partuuids |= {p.partuuid.lower() for p in disk.partitions if p.partuuid}
    findings: list[Finding] = []
    where = f"{config.path} on partition {config.partition}"

    def add(severity: str, code: str, message: str) -> None:
        findings.append(
            Finding(
                severity=severity,  # type: ignore[arg-type]
                code=code,
                message=f"{where}: {message}",
                disk_index=disk_index,
                partition=config.partition,
            )
        )

    for cmdline in config.cmdlines:
        m = ROOT_RE.search(cmdline)
        if not m:
            add("info", "root_not_set", "no root= on the kernel command line; the initramfs decides the root")
            continue
        root = m.group(1)
        kind, _, value = root.partition("=")
        if root.startswith("/dev/disk/by-uuid/"):
            kind, value = "UUID", root.rsplit("/", 1)[1]
        hidden = " (it may live inside LVM, which is not opened)" if has_lvm else ""
        if kind == "UUID":
            if value.lower() in uuids:
                add("info", "root_found", f"root=UUID={value} is a filesystem on the recovered disks")
            else:
                add(
                    "info" if has_lvm else "warning",
                    "root_not_found",
                    f"root=UUID={value} matches no filesystem on the recovered disks{hidden}",
                )
        elif kind == "PARTUUID":
            if value.lower() in partuuids:
                add("info", "root_found", f"root=PARTUUID={value} is a partition on the recovered disks")
            else:
                add(
                    "warning",
                    "root_not_found",
                    f"root=PARTUUID={value} matches no partition on the recovered disks",
                )
        elif kind == "LABEL":
            if value in labels:
                add("info", "root_found", f"root=LABEL={value} is a filesystem on the recovered disks")
            else:
                add(
                    "info" if has_lvm else "warning",
                    "root_not_found",
                    f"root=LABEL={value} matches no filesystem label on the recovered disks{hidden}",
                )
        elif DEVICE_RE.match(root):
            add(*_device_name_finding(root, platform))
        else:
            add("info", "root_other", f"root={root} is not checked (LVM, md or another naming scheme)")
    return findings


def _device_name_finding(root: str, platform: str) -> tuple[str, str, str]:
    name = root.removeprefix("/dev/")
    if name.startswith("hd"):
        return (
            "warning",
            "root_device_name",
            (
                f"root={root} uses an old IDE driver name that current kernels do not create; use root=UUID=..."
            ),
        )
    if platform == "qemu" and name.startswith("sd"):
        return (
            "info",
            "root_device_name",
            (
                f"root={root} works on the QEMU target (IDE disks appear as /dev/sdX) but not after a move to "
                "the cloud; root=UUID=... is portable"
            ),
        )
    appears = {
        "aws": "/dev/nvme0n1 on Nitro or /dev/xvda on Xen instances",
        "azure": "/dev/sda (Hyper-V storvsc), with data disks reordered",
        "qemu": "/dev/sda (IDE)",
    }
    return (
        "warning",
        "root_device_name",
        (
            f"root={root} names a device that changes on {platform}, where the boot disk appears as "
            f"{appears[platform]}; use root=UUID=... (or PARTUUID=) on the source before replication"
        ),
    )
