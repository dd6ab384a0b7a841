"""Facts about a Windows guest: refusals on its NTFS volumes, then its SYSTEM and SOFTWARE hives.

Refusals (before mounting): a hibernated volume (``hiberfil.sys`` starting ``hibr``/``HIBR``,
which ntfs-3g refuses to mount read-write: ``ntfs-3g.probe`` exit 14), an unclean journal or
corrupt volume (exit 15, 13…), and a volume Windows marked dirty (``VOLUME_IS_DIRTY`` in
$Volume's VOLUME_INFORMATION, read from the raw device: ntfs-3g mounts such volumes, but
Windows would run chkdsk over anything written into them). Writing into any of these would
lose the guest's own state, so they are fixed on the source (a full shutdown, chkdsk).

The hives are downloaded once each and read with hivex (:mod:`node_runtime.prep.hives`).
"""

from __future__ import annotations

import re
import struct
import tempfile
from collections.abc import Mapping
from pathlib import Path

from node_runtime.prep.decide.windows_firstboot import SCRIPT_PATH, SERVICE
from node_runtime.prep.guest import Guest
from node_runtime.prep.hives import Hive
from node_runtime.prep.models import CriticalDevice, PrepFinding, WindowsFacts, WindowsService
from node_runtime.prep.targets import NEEDS, VMWARE_WINDOWS_SERVICES
from shared.errors import GuestPrepError

VOLUME_IS_DIRTY = 0x0001
#: ntfs-3g.probe exit codes (ntfs-3g's enum ntfs_volume_status) -> finding code, what to do on the source
PROBE_REFUSALS = {
    14: ("windows.hibernated", "is hibernated (or Windows fast startup left it in use): start Windows on the "
         "source and shut it down fully (shutdown /s /t 0, or turn fast startup off), then replicate again"),
    15: ("windows.unclean_journal", "has an unclean NTFS journal (Windows did not shut down cleanly): start "
         "Windows on the source and shut it down cleanly, then replicate again"),
    13: ("windows.volume_corrupt", "is inconsistent (ntfs-3g found it corrupt): run chkdsk /f on the source, "
         "then replicate again"),
}  # fmt: skip
#: driver files of the targets' drivers, by service name
DRIVER_FILES = {d.service: d.file for n in NEEDS.values() for d in n.windows_storage} | {
    name: f"{name}.sys" for n in NEEDS.values() for name in n.windows_network
}
DEVICE_IDS = sorted({i for n in NEEDS.values() for d in n.windows_storage for i in d.device_ids})
SOFTWARE_CV = "Microsoft\\Windows NT\\CurrentVersion"
PENDING_KEYS = ("Microsoft\\Windows\\CurrentVersion\\Component Based Servicing\\RebootPending",
                "Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired")  # fmt: skip


def windows_refusals(guest: Guest, root: str) -> list[PrepFinding]:
    """Findings (severity error, ``refuses``) for each NTFS volume of ``root`` that must not be written."""
    points = guest.call("reading the guest's mount points", "inspect_get_mountpoints", root)
    findings: list[PrepFinding] = []
    for device in sorted(set(points.values()) | {root}):
        try:
            if guest.g.vfs_type(device) != "ntfs":
                continue
        except RuntimeError:
            continue
        status = int(guest.call(f"probing the NTFS volume {device}", "ntfs_3g_probe", True, device))
        if status:
            code, what = PROBE_REFUSALS.get(status, ("windows.volume_unusable", f"cannot be written (ntfs-3g "
                                                     f"status {status}): check it with chkdsk on the source"))  # fmt: skip
            findings.append(
                PrepFinding(severity="error", code=code, refuses=True, message=f"{device} {what}")
            )
        elif ntfs_dirty(guest, device):
            findings.append(PrepFinding(
                severity="error", code="windows.dirty_volume", refuses=True,
                message=f"{device} is marked dirty (Windows did not shut down cleanly, or chkdsk is scheduled): "
                        "run chkdsk /f on the source (or restart it and shut it down cleanly), then replicate again"))  # fmt: skip
    return findings


def ntfs_dirty(guest: Guest, device: str) -> bool | None:
    """Whether $Volume's VOLUME_INFORMATION has VOLUME_IS_DIRTY; None when it cannot be read."""
    boot = bytes(guest.call(f"reading {device}'s boot sector", "pread_device", device, 512, 0))
    if boot[3:11] != b"NTFS    ":
        return None
    bytes_per_sector, sectors_per_cluster = struct.unpack_from("<HB", boot, 11)
    cluster = bytes_per_sector * sectors_per_cluster
    mft_cluster = struct.unpack_from("<q", boot, 0x30)[0]
    per_record = struct.unpack_from("<b", boot, 0x40)[0]
    size = 1 << -per_record if per_record < 0 else per_record * cluster
    # records 0-15 are in $MFT's first run: $Volume is record 3
    record = bytearray(guest.call(f"reading {device}'s $Volume", "pread_device", device, size,
                                  mft_cluster * cluster + 3 * size))  # fmt: skip
    if len(record) < size or record[:4] != b"FILE":
        return None
    usa_offset, usa_count = struct.unpack_from("<HH", record, 4)
    for i in range(1, usa_count):  # undo the update sequence fixups (the last 2 bytes of each 512)
        record[i * 512 - 2 : i * 512] = record[usa_offset + 2 * i : usa_offset + 2 * i + 2]
    attr = struct.unpack_from("<H", record, 0x14)[0]
    while attr + 8 <= size:
        kind, length = struct.unpack_from("<II", record, attr)
        if kind == 0xFFFFFFFF or length == 0:
            return None
        if kind == 0x70:  # VOLUME_INFORMATION: flags at offset 10 of the value
            value = attr + struct.unpack_from("<H", record, attr + 20)[0]
            return bool(struct.unpack_from("<H", record, value + 10)[0] & VOLUME_IS_DIRTY)
        attr += length
    return None


def gather_windows(guest: Guest, root: str) -> WindowsFacts:
    """Facts from the mounted ``root``: version, drivers, boot settings, network, first-boot hook."""
    systemroot = guest.root_info(root, "windows_systemroot")
    with tempfile.TemporaryDirectory(prefix="lifeboat-hives-") as tmp:
        system = _hive(guest, guest.root_info(root, "windows_system_hive"), Path(tmp) / "SYSTEM")
        software = _hive(guest, guest.root_info(root, "windows_software_hive"), Path(tmp) / "SOFTWARE")
    cv = software.values(SOFTWARE_CV)
    major, minor = _version(cv)
    current = system.get("Select", "Current")
    cs = f"ControlSet{current if isinstance(current, int) else 1:03d}"
    services = {name: _service(guest, system, systemroot, cs, name) for name in _service_names()}
    pending = [f"{name} ({len(v)} files)" for name in ("PendingFileRenameOperations", "PendingFileRenameOperations2")
               if isinstance(v := system.get(f"{cs}\\Control\\Session Manager", name), list) and v]  # fmt: skip
    pending += [f"SOFTWARE\\{key}" for key in PENDING_KEYS if software.node(key) is not None]
    script_path = guest.case_path(SCRIPT_PATH)
    script = guest.read_optional(script_path) if script_path else None
    first_boot = {
        k: v for k, v in system.values(f"{cs}\\Services\\{SERVICE}").items() if not isinstance(v, bytes)
    }
    return WindowsFacts(
        product=str(cv.get("ProductName") or guest.root_info(root, "product_name")),
        edition=_str(cv.get("EditionID")), major=major, minor=minor,
        build=_str(cv.get("CurrentBuildNumber") or cv.get("CurrentBuild")),
        systemroot=systemroot, control_set=cs, services=services,
        critical_devices=_critical_devices(system, cs),
        san_policy=_int(system.get(f"{cs}\\Services\\partmgr\\Parameters", "SanPolicy")),
        rdp_denied=_int(system.get(f"{cs}\\Control\\Terminal Server", "fDenyTSConnections")),
        hiberboot_enabled=_int(system.get(f"{cs}\\Control\\Session Manager\\Power", "HiberbootEnabled")),
        hibernated=_hibernated(guest), dirty=bool(ntfs_dirty(guest, root)), pending_reboot=pending,
        static_addresses=_static_addresses(system, cs),
        first_boot_present=bool(first_boot) and script is not None,
        first_boot_service=first_boot, first_boot_script=script,
    )  # fmt: skip


def _hive(guest: Guest, path: str, local: Path) -> Hive:
    real = guest.case_path(path) if path != "unknown" else None
    if real is None:
        raise GuestPrepError(f"the Windows registry hive {path} is missing")
    guest.download(real, str(local))
    return Hive(str(local), label=real)


def _version(cv: Mapping[str, object]) -> tuple[int, int]:
    major = cv.get("CurrentMajorVersionNumber")
    if isinstance(major, int):
        return major, _int(cv.get("CurrentMinorVersionNumber")) or 0
    match = re.match(r"(\d+)\.(\d+)", str(cv.get("CurrentVersion") or ""))
    return (int(match[1]), int(match[2])) if match else (0, 0)


def _service_names() -> list[str]:
    return sorted(set(DRIVER_FILES) | set(VMWARE_WINDOWS_SERVICES))


def _service(guest: Guest, system: Hive, systemroot: str, cs: str, name: str) -> WindowsService:
    key = f"{cs}\\Services\\{name}"
    values = system.values(key)
    image = _str(values.get("ImagePath"))
    file = (
        f"{systemroot}/System32/drivers/{DRIVER_FILES[name]}"
        if name in DRIVER_FILES
        else _guest_path(image, systemroot)
    )
    return WindowsService(
        name=name, key_present=system.node(key) is not None, start=_int(values.get("Start")),
        type=_int(values.get("Type")), error_control=_int(values.get("ErrorControl")),
        group=_str(values.get("Group")), image_path=image,
        file_present=file is not None and guest.case_path(file) is not None)  # fmt: skip


def _guest_path(image_path: str | None, systemroot: str) -> str | None:
    """The guest path of an ImagePath's program (quotes and arguments dropped), if it is on C:."""
    if not image_path:
        return None
    text = image_path.strip()
    program = text[1:].split('"', 1)[0] if text.startswith('"') else text.split(" ", 1)[0]
    windows = systemroot.replace("/", "\\")
    program = re.sub(r"(?i)^(\\SystemRoot|%SystemRoot%)", lambda _: windows, program)
    program = re.sub(r"(?i)^\\\?\?\\", "", program)
    if re.match(r"(?i)^system32\\", program):
        program = f"{systemroot}\\{program}"
    program = re.sub(r"(?i)^c:", "", program)
    return program.replace("\\", "/") if program.startswith(("\\", "/")) else None


def _critical_devices(system: Hive, cs: str) -> dict[str, CriticalDevice]:
    found: dict[str, CriticalDevice] = {}
    for device_id in DEVICE_IDS:
        key = f"{cs}\\Control\\CriticalDeviceDatabase\\{device_id}"
        if system.node(key) is not None:
            values = system.values(key)
            found[device_id] = CriticalDevice(service=_str(values.get("Service")),
                                              class_guid=_str(values.get("ClassGUID")))  # fmt: skip
    return found


def _static_addresses(system: Hive, cs: str) -> dict[str, str]:
    interfaces = f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces"
    found: dict[str, str] = {}
    for guid in system.subkeys(interfaces):
        values = system.values(f"{interfaces}\\{guid}")
        addresses = values.get("IPAddress")
        if values.get("EnableDHCP") == 0 and isinstance(addresses, list):
            real = [a for a in addresses if a and a != "0.0.0.0"]
            if real:
                found[guid] = ", ".join(real)
    return found


def _hibernated(guest: Guest) -> bool:
    path = guest.case_path("/hiberfil.sys")
    if path is None:
        return False
    head = bytes(guest.call("reading hiberfil.sys", "pread", path, 4, 0))
    return head.lower() in (b"hibr", b"wake")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
