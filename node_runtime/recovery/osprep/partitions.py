"""MBR and GPT partition tables: parse, validate, and say what is wrong in words.

Only the primary MBR entries are read (extended/logical partitions are listed as the
extended container, not walked). GPT is read at 512- and 4096-byte logical sectors; a
damaged primary header falls back to the backup header at the last sector.
"""

from __future__ import annotations

import itertools
import struct
import uuid
import zlib
from dataclasses import dataclass, field

from node_runtime.recovery.osprep.models import Finding, PartitionInfo
from node_runtime.recovery.osprep.reader import ReadAt, read_at

MBR_TABLE_OFFSET = 446
MBR_ENTRY_SIZE = 16
GPT_SIGNATURE = b"EFI PART"

MBR_TYPES = {
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x05: "Extended",
    0x06: "FAT16",
    0x07: "NTFS/exFAT/HPFS",
    0x0B: "W95 FAT32",
    0x0C: "W95 FAT32 (LBA)",
    0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 Extended (LBA)",
    0x27: "Windows recovery",
    0x82: "Linux swap",
    0x83: "Linux",
    0x85: "Linux extended",
    0x8E: "Linux LVM",
    0xEE: "GPT protective",
    0xEF: "EFI System",
    0xFD: "Linux RAID autodetect",
}
EXTENDED_TYPES = {0x05, 0x0F, 0x85}

ESP_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
BIOS_BOOT_GUID = "21686148-6449-6e6f-744e-656564454649"
GPT_TYPES = {
    ESP_GUID: "EFI System",
    BIOS_BOOT_GUID: "BIOS boot",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery",
    "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3": "Windows LDM metadata",
    "af9b60a0-1431-4f62-bc68-3311714a69ad": "Windows LDM data",
}


@dataclass
class PartitionTable:
    scheme: str  # "mbr", "gpt" or "none"
    boot_signature: bool
    sector_size: int = 512
    disk_signature: str | None = None
    disk_guid: str | None = None
    partitions: list[PartitionInfo] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def _finding(severity: str, code: str, message: str, partition: int | None = None) -> Finding:
    return Finding(severity=severity, code=code, message=message, partition=partition)  # type: ignore[arg-type]


def read_partition_table(read: ReadAt, size: int) -> PartitionTable:
    """The disk's partition table. Malformed structures become findings; read errors propagate."""
    mbr = read_at(read, size, 0, 512)
    if len(mbr) < 512:
        return PartitionTable(
            "none",
            False,
            findings=[
                _finding("error", "disk_truncated", f"the disk is {size} bytes, smaller than one sector")
            ],
        )
    signature = mbr[510:512] == b"\x55\xaa"
    table = PartitionTable("none", signature)
    if not signature:
        return table
    entries = [_mbr_entry(mbr, i) for i in range(4)]
    if any(e[1] == 0xEE for e in entries):
        gpt = _read_gpt(read, size, table)
        if gpt:
            _check_layout(table, size)
            return table
        table.findings.append(
            _finding(
                "error",
                "gpt_unreadable",
                "the MBR is a GPT protective MBR but neither the primary nor the backup GPT header is valid",
            )
        )
        table.scheme = "mbr"  # say what we can about the protective entry
    _read_mbr(mbr, entries, size, table)
    _check_layout(table, size)
    return table


def _mbr_entry(mbr: bytes, i: int) -> tuple[int, int, int, int]:
    status, ptype, start, count = struct.unpack_from("<B3xB3xII", mbr, MBR_TABLE_OFFSET + i * MBR_ENTRY_SIZE)
    return status, ptype, start, count


def _read_mbr(mbr: bytes, entries: list[tuple[int, int, int, int]], size: int, table: PartitionTable) -> None:
    table.scheme = "mbr"
    table.disk_signature = f"{struct.unpack_from('<I', mbr, 440)[0]:08x}"
    for i, (status, ptype, start, count) in enumerate(entries):
        number = i + 1
        if ptype == 0 and start == 0 and count == 0:
            continue
        if status not in (0x00, 0x80):
            table.findings.append(
                _finding(
                    "warning",
                    "mbr_bad_status",
                    f"partition {number} has boot flag byte 0x{status:02x} (only 0x00 or 0x80 are valid); "
                    "some boot code rejects the whole table",
                    number,
                )
            )
        if ptype == 0 or count == 0:
            table.findings.append(
                _finding(
                    "warning",
                    "mbr_empty_entry",
                    f"partition entry {number} is half-filled (type 0x{ptype:02x}, {count} sectors); ignored",
                    number,
                )
            )
            continue
        table.partitions.append(
            PartitionInfo(
                number=number,
                scheme="mbr",
                start=start * 512,
                size=count * 512,
                type=f"0x{ptype:02x}",
                type_name=MBR_TYPES.get(ptype, "unknown"),
                active=status == 0x80,
                partuuid=f"{table.disk_signature}-{number:02x}",
                is_esp=ptype == 0xEF,
            )
        )
    if sum(1 for p in table.partitions if p.active) > 1:
        actives = ", ".join(str(p.number) for p in table.partitions if p.active)
        table.findings.append(
            _finding(
                "warning",
                "mbr_multiple_active",
                f"partitions {actives} are all marked active; MBR boot code (Windows, syslinux) refuses to "
                "boot with more than one active partition",
            )
        )


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def _read_gpt(read: ReadAt, size: int, table: PartitionTable) -> bool:
    for sector in (512, 4096):
        header = read_at(read, size, sector, sector)
        if header[:8] != GPT_SIGNATURE:
            continue
        table.sector_size = sector
        problem = _parse_gpt(read, size, header, sector, 1, table)
        if problem is None:
            _check_backup(read, size, sector, table)
            return True
        table.findings.append(_finding("error", "gpt_primary_invalid", f"primary GPT header: {problem}"))
        last = size // sector - 1
        backup = read_at(read, size, last * sector, sector)
        if backup[:8] == GPT_SIGNATURE:
            table.partitions.clear()
            backup_problem = _parse_gpt(read, size, backup, sector, last, table)
            if backup_problem is None:
                table.findings.append(
                    _finding(
                        "warning",
                        "gpt_using_backup",
                        "the partitions were read from the backup GPT header at the last sector; firmware "
                        "that only reads the primary header may not find them",
                    )
                )
                return True
            table.findings.append(
                _finding("error", "gpt_backup_invalid", f"backup GPT header: {backup_problem}")
            )
        else:
            table.findings.append(
                _finding(
                    "error",
                    "gpt_backup_missing",
                    f"no backup GPT header at the last sector (LBA {last}); the disk may have been "
                    "reconstructed at a different size than the source",
                )
            )
        return False
    table.findings.append(
        _finding("error", "gpt_header_missing", 'protective MBR present but no "EFI PART" header at LBA 1')
    )
    return False


def _parse_gpt(
    read: ReadAt, size: int, header: bytes, sector: int, my_lba: int, table: PartitionTable
) -> str | None:
    """Fill ``table`` from a GPT header; return what is wrong with it instead, if anything."""
    (hsize,) = struct.unpack_from("<I", header, 12)
    if not 92 <= hsize <= sector:
        return f"header size {hsize} is outside 92..{sector}"
    (stored_crc,) = struct.unpack_from("<I", header, 16)
    computed = zlib.crc32(header[:16] + b"\0\0\0\0" + header[20:hsize])
    if stored_crc != computed:
        return f"header CRC32 is 0x{stored_crc:08x} but the header sums to 0x{computed:08x}"
    current, _backup, first_usable, last_usable = struct.unpack_from("<QQQQ", header, 24)
    if current != my_lba:
        return f"header says it is at LBA {current}, it was read at LBA {my_lba}"
    disk_guid = _guid(header[56:72])
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", header, 72)
    if entry_size < 128 or entry_size % 8:
        return f"partition entry size {entry_size} is invalid (at least 128, a multiple of 8)"
    length = count * entry_size
    if count > 16384 or length > 4 * 1024 * 1024:
        return f"{count} partition entries of {entry_size} bytes is implausible"
    raw = read_at(read, size, entries_lba * sector, length)
    if len(raw) < length:
        return f"the partition entry array at LBA {entries_lba} runs past the end of the disk"
    if zlib.crc32(raw) != entries_crc:
        return f"partition entry array CRC32 is 0x{entries_crc:08x} but the entries sum to 0x{zlib.crc32(raw):08x}"
    table.scheme = "gpt"
    table.disk_guid = disk_guid
    for i in range(count):
        entry = raw[i * entry_size : (i + 1) * entry_size]
        if entry[:16] == bytes(16):
            continue
        type_guid = _guid(entry[0:16])
        first, last = struct.unpack_from("<QQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        number = i + 1
        if last < first:
            table.findings.append(
                _finding(
                    "error",
                    "gpt_bad_entry",
                    f"GPT partition {number} ends (LBA {last}) before it starts (LBA {first})",
                    number,
                )
            )
            continue
        if first < first_usable or last > last_usable:
            table.findings.append(
                _finding(
                    "warning",
                    "gpt_outside_usable",
                    f"GPT partition {number} (LBA {first}-{last}) lies outside the usable range "
                    f"{first_usable}-{last_usable}",
                    number,
                )
            )
        table.partitions.append(
            PartitionInfo(
                number=number,
                scheme="gpt",
                start=first * sector,
                size=(last - first + 1) * sector,
                type=type_guid,
                type_name=GPT_TYPES.get(type_guid, "unknown"),
                name=name or None,
                partuuid=_guid(entry[16:32]),
                is_esp=type_guid == ESP_GUID,
            )
        )
    return None


def _check_backup(read: ReadAt, size: int, sector: int, table: PartitionTable) -> None:
    last = size // sector - 1
    backup = read_at(read, size, last * sector, sector)
    if backup[:8] != GPT_SIGNATURE:
        table.findings.append(
            _finding(
                "warning",
                "gpt_backup_missing",
                f"no backup GPT header at the last sector (LBA {last}); the disk is probably larger than the "
                "source (firmware copes; `sgdisk -e` inside the guest moves the backup to the end)",
            )
        )


def _check_layout(table: PartitionTable, size: int) -> None:
    parts = sorted(table.partitions, key=lambda p: p.start)
    for p in parts:
        if p.start + p.size > size:
            table.findings.append(
                _finding(
                    "error",
                    "partition_past_end",
                    f"partition {p.number} ends at byte {p.start + p.size} but the disk has {size} bytes: "
                    "the disk was reconstructed smaller than the source, the filesystem is cut off",
                    p.number,
                )
            )
    containers = [p for p in parts if p.scheme == "mbr" and int(p.type, 16) in EXTENDED_TYPES]
    plain = [p for p in parts if p not in containers]
    for a, b in itertools.combinations(plain, 2):  # sorted by start: a.start <= b.start
        if b.start < a.start + a.size:
            table.findings.append(
                _finding(
                    "error",
                    "partitions_overlap",
                    f"partitions {a.number} and {b.number} overlap: {a.number} ends at byte "
                    f"{a.start + a.size}, {b.number} starts at byte {b.start}",
                    b.number,
                )
            )
