"""Which filesystem a partition holds, from its superblock magic (no mounting, a few reads)."""

from __future__ import annotations

import struct
import uuid

from node_runtime.recovery.osprep.models import FilesystemInfo
from node_runtime.recovery.osprep.reader import ReadAt, read_at

EXT_MAGIC_OFFSET = 1080  # superblock at 1024, s_magic at +56
EXT_COMPAT_HAS_JOURNAL = 0x4
EXT_INCOMPAT = {
    0x2: "filetype",
    0x4: "needs_recovery",
    0x40: "extents",
    0x80: "64bit",
    0x200: "flex_bg",
    0x8000: "inline_data",
    0x10000: "encrypt",
}
EXT_RO_COMPAT = {
    0x8: "huge_file",
    0x10: "gdt_csum",
    0x20: "dir_nlink",
    0x40: "extra_isize",
    0x400: "metadata_csum",
}
EXT4_ONLY_INCOMPAT = 0x40 | 0x80 | 0x200 | 0x8000 | 0x10000
EXT4_ONLY_RO_COMPAT = 0x8 | 0x10 | 0x20 | 0x40 | 0x400


def _text(raw: bytes, encoding: str = "ascii") -> str | None:
    value = raw.split(b"\0", 1)[0].decode(encoding, errors="replace").strip()
    return value or None


def probe_filesystem(read: ReadAt, disk_size: int, start: int, length: int) -> FilesystemInfo | None:
    """The filesystem whose signature sits at ``start``, or None when no known signature is there.

    Checks, in order: BitLocker (``-FVE-FS-`` at +3), NTFS (``NTFS    `` at +3), exFAT, FAT12/16/32
    (a plausible BPB; the type comes from the cluster count, as the FAT specification says),
    XFS (``XFSB`` at 0), ext2/3/4 (0xEF53 at +1080), LVM2 PV (``LABELONE`` in sectors 0-3) and
    Linux swap (``SWAPSPACE2`` at the end of the first 4 KiB page).
    """
    end = min(disk_size, start + length)
    head = read_at(read, end, start, 4096)
    if len(head) < 512:
        return None
    oem = head[3:11]
    if oem == b"-FVE-FS-":
        return FilesystemInfo(type="bitlocker")
    if oem == b"NTFS    ":
        serial = struct.unpack_from("<Q", head, 0x48)[0]
        return FilesystemInfo(type="ntfs", uuid=f"{serial:016X}")
    if oem == b"EXFAT   ":
        return FilesystemInfo(type="exfat", uuid=f"{struct.unpack_from('<I', head, 100)[0]:08X}")
    fat = _probe_fat(head)
    if fat:
        return fat
    if head[:4] == b"XFSB":
        return FilesystemInfo(type="xfs", uuid=str(uuid.UUID(bytes=head[32:48])), label=_text(head[108:120]))
    ext = _probe_ext(head)
    if ext:
        return ext
    for sector in range(4):
        label = head[sector * 512 : sector * 512 + 32]
        if label[:8] == b"LABELONE" and label[24:32] == b"LVM2 001":
            pv = head[sector * 512 + 32 : sector * 512 + 64]
            return FilesystemInfo(type="lvm2_pv", uuid=pv.decode("ascii", errors="replace"))
    if len(head) == 4096 and head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return FilesystemInfo(
            type="swap", uuid=str(uuid.UUID(bytes=head[1036:1052])), label=_text(head[1052:1068])
        )
    return None


def _probe_fat(head: bytes) -> FilesystemInfo | None:
    jump_ok = (head[0] == 0xEB and head[2] == 0x90) or head[0] == 0xE9
    if not jump_ok:
        return None
    bps, spc, reserved, nfats, root_entries, total16, media, fat16 = struct.unpack_from("<HBHBHHBH", head, 11)
    total32, fat32 = struct.unpack_from("<II", head, 32)[0], struct.unpack_from("<I", head, 36)[0]
    if bps not in (512, 1024, 2048, 4096) or spc not in (1, 2, 4, 8, 16, 32, 64, 128):
        return None
    if reserved == 0 or nfats == 0 or (media < 0xF0 and media != 0):
        return None
    total = total16 or total32
    fat_size = fat16 or fat32
    if total == 0 or fat_size == 0:
        return None
    root_sectors = (root_entries * 32 + bps - 1) // bps
    data = total - (reserved + nfats * fat_size + root_sectors)
    if data <= 0:
        return None
    clusters = data // spc
    if clusters < 4085:
        kind, ext = "fat12", 36
    elif clusters < 65525:
        kind, ext = "fat16", 36
    else:
        kind, ext = "fat32", 64
    serial = struct.unpack_from("<I", head, ext + 3)[0] if head[ext + 2] == 0x29 else None
    label = _text(head[ext + 7 : ext + 18]) if head[ext + 2] == 0x29 else None
    if label == "NO NAME":
        label = None
    return FilesystemInfo(
        type=kind,
        label=label,
        uuid=None if serial is None else f"{serial >> 16:04X}-{serial & 0xFFFF:04X}",
        features=[f"oem={_text(head[3:11]) or ''}"],
    )


def _probe_ext(head: bytes) -> FilesystemInfo | None:
    if len(head) < 1024 + 136 or head[EXT_MAGIC_OFFSET : EXT_MAGIC_OFFSET + 2] != b"\x53\xef":
        return None
    sb = head[1024:]
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 92)
    features = [name for bit, name in EXT_INCOMPAT.items() if incompat & bit]
    features += [name for bit, name in EXT_RO_COMPAT.items() if ro_compat & bit]
    if compat & EXT_COMPAT_HAS_JOURNAL:
        features.insert(0, "has_journal")
    if incompat & EXT4_ONLY_INCOMPAT or ro_compat & EXT4_ONLY_RO_COMPAT:
        kind = "ext4"
    elif compat & EXT_COMPAT_HAS_JOURNAL:
        kind = "ext3"
    else:
        kind = "ext2"
    return FilesystemInfo(
        type=kind, uuid=str(uuid.UUID(bytes=sb[104:120])), label=_text(sb[120:136]), features=features
    )
