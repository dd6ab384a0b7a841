"""Synthetic Windows-shaped disks for the Prep Node tests: real MBR, real NTFS, real hives.

:func:`build_windows_disks` formats every requested raw image in ONE libguestfs appliance
(a launch costs ~15 s under TCG): an MBR partition of type 0x07, ``mkntfs`` through
libguestfs, then the tree inspection needs to call it Windows (``System32/config/SYSTEM`` and
``SOFTWARE`` written with hivex, ``System32/cmd.exe`` with a PE32+ header) plus the files of
the spec. Helpers then damage images the ways Windows leaves them: :func:`set_ntfs_dirty`
(the $Volume dirty flag) and :func:`write_bitlocker_disk` (a BitLocker-signed partition).
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1 << 20
PART_START = MiB  # LBA 2048
REG_SZ, REG_EXPAND_SZ, REG_DWORD, REG_MULTI_SZ = 1, 2, 4, 7
TCPIP_GUID = "{5e1a2b3c-0d4e-4f60-8a71-92b3c4d5e6f7}"

#: (type, value) of one registry value, by name, by key path
HiveSpec = dict[str, dict[str, tuple[int, Any]]]


@dataclass
class WindowsSpec:
    """One disk: hive contents and extra files (guest path -> bytes)."""

    system: HiveSpec
    software: HiveSpec
    files: dict[str, bytes] = field(default_factory=dict)
    size: int = 64 * MiB


def hash_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- hives ----------------------------------------------------------------------------------
def empty_hive(root_name: str, hive_path: str) -> bytes:
    """An empty valid REGF hive (one root key): adapted from shared/reference/mkhive.py."""
    ft = int((time.time() + 11644473600) * 10**7)
    sid = struct.pack("<BB6sII", 1, 2, b"\0\0\0\0\0\x05", 32, 544)
    sd = struct.pack("<BBHIIII", 1, 0, 0x8000, 20, 20 + len(sid), 0, 0) + sid + sid
    name = root_name.encode("ascii")
    nk = (b"nk" + struct.pack("<HQIIIIiiIi", 0x2C, ft, 0, 0, 0, 0, -1, -1, 0, -1) + b"SKOF"
          + struct.pack("<iIIIIIHH", -1, 0, 0, 0, 0, 0, len(name), 0) + name)  # fmt: skip
    nk_cell = _cell(nk)
    sk_off = 0x20 + len(nk_cell)
    nk_cell = nk_cell.replace(b"SKOF", struct.pack("<I", sk_off))
    sk_cell = _cell(b"sk" + struct.pack("<HIIII", 0, sk_off, sk_off, 1, len(sd)) + sd)
    free = 4096 - 0x20 - len(nk_cell) - len(sk_cell)
    hbin = b"hbin" + struct.pack("<IIQQI", 0, 4096, 0, ft, 0) + nk_cell + sk_cell + struct.pack("<i", free)
    hbin += b"\0" * (4096 - len(hbin))
    base = bytearray(4096)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, ft, 1, 5, 0, 1, 0x20, 4096, 1)
    label = hive_path[-31:].encode("utf-16-le")
    base[48 : 48 + len(label)] = label
    csum = 0
    for i in range(127):
        csum ^= struct.unpack_from("<I", base, i * 4)[0]
    struct.pack_into("<I", base, 508, {0: 1, 0xFFFFFFFF: 0xFFFFFFFE}.get(csum, csum))
    return bytes(base) + hbin


def _cell(payload: bytes) -> bytes:
    size = (len(payload) + 4 + 7) & ~7
    return struct.pack("<i", -size) + payload + b"\0" * (size - 4 - len(payload))


def reg_data(type_code: int, value: Any) -> bytes:
    if type_code == REG_DWORD:
        return struct.pack("<I", value)
    if type_code == REG_MULTI_SZ:
        return b"".join(item.encode("utf-16-le") + b"\0\0" for item in value) + b"\0\0"
    return str(value).encode("utf-16-le") + b"\0\0"


def write_hive(path: Path, name: str, spec: HiveSpec) -> None:
    """Write a hive holding ``spec`` (keys created with their parents) with hivex."""
    import hivex

    path.write_bytes(empty_hive("ROOT", name))
    h = hivex.Hivex(str(path), write=True)
    for key, values in spec.items():
        node = h.root()
        for part in [p for p in key.split("\\") if p]:
            node = h.node_get_child(node, part) or h.node_add_child(node, part)
        for vname, (type_code, value) in values.items():
            h.node_set_value(node, {"key": vname, "t": type_code, "value": reg_data(type_code, value)})
    h.commit(str(path))


def read_hive_value(path: Path, key: str, name: str) -> Any:
    """A value read back with hivex directly (independent of the code under test); None if absent."""
    import hivex

    h = hivex.Hivex(str(path))
    node = h.root()
    for part in [p for p in key.split("\\") if p]:
        node = h.node_get_child(node, part)
        if not node:
            return None
    try:
        value = h.node_get_value(node, name)
    except RuntimeError:  # hivex reports an absent value as an error ("Success", errno 0)
        return None
    if not value:
        return None
    type_code = h.value_type(value)[0]
    if type_code == REG_DWORD:
        return h.value_dword(value)
    if type_code == REG_MULTI_SZ:  # hivex' binding adds a '' for the list's terminating NUL
        strings = h.value_multiple_strings(value)
        return strings[:-1] if strings and strings[-1] == "" else strings
    return h.value_string(value)


def hive_has_key(path: Path, key: str) -> bool:
    import hivex

    h = hivex.Hivex(str(path))
    node = h.root()
    for part in [p for p in key.split("\\") if p]:
        node = h.node_get_child(node, part)
        if not node:
            return False
    return True


# --- files ----------------------------------------------------------------------------------
def pe32plus() -> bytes:
    """The headers of an x86-64 console PE32+ executable: what `file` and libguestfs read."""
    pe = bytearray(1024)
    pe[0:2] = b"MZ"
    struct.pack_into("<I", pe, 0x3C, 0x80)
    pe[0x80:0x84] = b"PE\0\0"
    struct.pack_into("<HHIIIHH", pe, 0x84, 0x8664, 1, 0, 0, 0, 0xF0, 0x22)
    struct.pack_into("<H", pe, 0x98, 0x20B)  # PE32+
    struct.pack_into("<H", pe, 0x98 + 68, 3)  # console subsystem
    return bytes(pe)


def hiberfil(signature: bytes = b"HIBR") -> bytes:
    """A hiberfil.sys as Windows leaves it hibernated (or with fast startup): the signature first."""
    return signature + b"\0" * (64 * 1024 - len(signature))


# --- disks ----------------------------------------------------------------------------------
def build_windows_disks(images: dict[Path, WindowsSpec]) -> None:
    """Create each raw image: MBR, one NTFS partition at 1 MiB holding the spec's Windows tree."""
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    try:
        for path, spec in images.items():
            with open(path, "wb") as f:
                f.truncate(spec.size)
            g.add_drive_opts(str(path), format="raw", readonly=False)
        g.launch()
        devices = g.list_devices()
        with tempfile.TemporaryDirectory() as tmp:
            for device, (path, spec) in zip(devices, images.items(), strict=True):
                g.part_init(device, "mbr")
                g.part_add(device, "p", PART_START // 512, -1)
                g.part_set_mbr_id(device, 1, 0x07)
                g.part_set_bootable(device, 1, True)
                part = f"{device}1"
                g.mkfs("ntfs", part)
                g.mount(part, "/")
                for hive, spec_of in (("SYSTEM", spec.system), ("SOFTWARE", spec.software)):
                    local = Path(tmp) / f"{path.name}.{hive}"
                    write_hive(local, hive, spec_of)
                    g.mkdir_p("/Windows/System32/config")
                    g.upload(str(local), f"/Windows/System32/config/{hive}")
                files = {"/Windows/System32/cmd.exe": pe32plus(), **spec.files}
                for guest_path, content in files.items():
                    g.mkdir_p(os.path.dirname(guest_path))
                    g.write(guest_path, content)
                g.umount_all()
        g.sync()
        g.shutdown()
    finally:
        g.close()


def set_ntfs_dirty(image: Path) -> None:
    """Set VOLUME_IS_DIRTY in $Volume's VOLUME_INFORMATION (MFT record 3, and its $MFTMirr copy),
    as Windows leaves a volume it did not shut down cleanly (or marked for chkdsk)."""
    data = bytearray(image.read_bytes())
    boot = PART_START
    bps, spc = struct.unpack_from("<HB", data, boot + 11)
    cluster = bps * spc
    clusters_per_record = struct.unpack_from("<b", data, boot + 0x40)[0]
    record = 1 << -clusters_per_record if clusters_per_record < 0 else clusters_per_record * cluster
    for table in (0x30, 0x38):  # $MFT, $MFTMirr
        start = boot + struct.unpack_from("<q", data, boot + table)[0] * cluster + 3 * record
        attr = start + struct.unpack_from("<H", data, start + 0x14)[0]
        while struct.unpack_from("<I", data, attr)[0] != 0xFFFFFFFF:
            kind, length = struct.unpack_from("<II", data, attr)
            if kind == 0x70:
                data[attr + struct.unpack_from("<H", data, attr + 20)[0] + 10] |= 0x01
            attr += length
    image.write_bytes(bytes(data))


def write_bitlocker_disk(image: Path, size: int = 16 * MiB) -> None:
    """An MBR disk whose one partition starts like a BitLocker (Windows 7+) volume: ``-FVE-FS-``
    at offset 3 and three FVE metadata blocks where the header points (what blkid checks)."""
    data = bytearray(size)
    struct.pack_into("<B3sB3sII", data, 446, 0x80, b"\0\0\0", 0x07, b"\0\0\0", PART_START // 512,
                     (size - PART_START) // 512)  # fmt: skip
    data[510:512] = b"\x55\xaa"
    part = PART_START
    data[part : part + 11] = b"\xeb\x58\x90-FVE-FS-"
    struct.pack_into("<HB", data, part + 11, 512, 8)
    for i, offset in enumerate((0x10000, 0x20000, 0x30000)):
        struct.pack_into("<Q", data, part + 176 + 8 * i, offset)
        data[part + offset : part + offset + 8] = b"-FVE-FS-"
        struct.pack_into("<H", data, part + offset + 10, 2)
    data[part + 510 : part + 512] = b"\x55\xaa"
    image.write_bytes(bytes(data))


def ntfs_cat(image: Path, path: str, workdir: Path) -> bytes | None:
    """A file of the image's NTFS partition read with ntfsprogs' ntfscat (no appliance, and not
    the code under test); None when it does not exist."""
    import subprocess

    part = workdir / f"{image.name}.part"
    with open(image, "rb") as src, open(part, "wb") as dst:
        src.seek(PART_START)
        while chunk := src.read(4 * MiB):
            dst.write(chunk)
    try:
        done = subprocess.run(["ntfscat", str(part), path], capture_output=True, check=False)
    finally:
        part.unlink()
    return done.stdout if done.returncode == 0 else None
