"""OS preparation over synthetic disks built in memory (and FAT images made by mkfs.fat + mcopy)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import uuid
import zlib
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_runtime.recovery.osprep import OsPreparation, Patch, inspect_disk, prepare
from node_runtime.recovery.osprep.partitions import ESP_GUID
from tests.support.bootdisk import MBR_BIN, build_boot_disk

MiB = 1 << 20
PART = 1 * MiB  # first partition at LBA 2048
SYSLINUX_MBR = (
    MBR_BIN.read_bytes()[:440] if MBR_BIN.is_file() else b"\xfa" + b"Multiple active partitions." * 2
)
WINDOWS_MBR = (
    b"\x33\xc0\x8e\xd0" + b"Invalid partition table\0Error loading operating system\0Missing operating system"
)
EXT4_UUID = uuid.UUID("6a1c1d8e-2f40-4b1a-9a0e-0d5c8c1f2e33")
LINUX_TYPE = "0fc63daf-8483-4772-8e79-3d69d8477de4"


# --- disk builders -------------------------------------------------------------------------------
def mbr(
    entries: Iterable[tuple[int, int, int, int]], code: bytes = SYSLINUX_MBR, signature: bool = True
) -> bytes:
    """An MBR from ``(status, type, start_lba, sectors)`` entries."""
    sector = bytearray(512)
    sector[: len(code)] = code
    struct.pack_into("<I", sector, 440, 0x1234ABCD)
    for i, (status, ptype, start, count) in enumerate(entries):
        struct.pack_into("<B3xB3xII", sector, 446 + 16 * i, status, ptype, start, count)
    if signature:
        sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def disk(size: int, *pieces: tuple[int, bytes]) -> bytearray:
    img = bytearray(size)
    for offset, data in pieces:
        img[offset : offset + len(data)] = data
    return img


def reader(img: bytearray):  # type: ignore[no-untyped-def]
    return lambda offset, length: bytes(img[offset : offset + length])


def run(*imgs: bytearray, platform: str = "qemu") -> OsPreparation:
    return prepare([(reader(img), len(img)) for img in imgs], platform=platform)


def codes(result: OsPreparation, severity: str | None = None) -> set[str]:
    return {f.code for f in result.findings if severity is None or f.severity == severity}


def apply(img: bytearray, patches: list[Patch]) -> None:
    for p in patches:
        assert bytes(img[p.offset : p.offset + len(p.original)]) == p.original, p.reason
        img[p.offset : p.offset + len(p.data)] = p.data


def ext4_superblock() -> bytes:
    sb = bytearray(2048)
    struct.pack_into("<H", sb, 1080, 0xEF53)
    struct.pack_into("<III", sb, 1024 + 92, 0x4, 0x2 | 0x40 | 0x200, 0x400)  # journal; extents, flex_bg; csum
    sb[1024 + 104 : 1024 + 120] = EXT4_UUID.bytes
    sb[1024 + 120 : 1024 + 124] = b"root"
    return bytes(sb)


def ntfs_boot_sector(hidden: int, sectors: int, code: bytes = b"BOOTMGR is missing\r\n") -> bytes:
    bs = bytearray(512)
    bs[0:3] = b"\xeb\x52\x90"
    bs[3:11] = b"NTFS    "
    struct.pack_into("<HB", bs, 11, 512, 8)
    struct.pack_into("<I", bs, 28, hidden)
    struct.pack_into("<Q", bs, 0x28, sectors - 1)
    struct.pack_into("<Q", bs, 0x48, 0x1122334455667788)
    bs[0x54 : 0x54 + len(code)] = code
    bs[510:512] = b"\x55\xaa"
    return bytes(bs)


def fat_image(tmp_path: Path, files: dict[str, bytes], size_kib: int = 8192, fat: int = 16) -> bytes:
    """A FAT filesystem image holding ``files`` (paths may contain directories), via mkfs.fat + mcopy."""
    for tool in ("mkfs.fat", "mcopy", "mmd"):
        assert shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}"), (
            f"{tool} missing: apt-get install dosfstools mtools"
        )
    img = tmp_path / f"fat{len(list(tmp_path.iterdir()))}.img"
    mkfs = shutil.which("mkfs.fat") or "/usr/sbin/mkfs.fat"
    subprocess.run(
        [mkfs, "-F", str(fat), "-h", "2048", "-n", "BOOT", "-C", str(img), str(size_kib)],
        check=True,
        capture_output=True,
    )
    made: set[str] = set()
    for path, data in files.items():
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                subprocess.run(["mmd", "-i", str(img), f"::/{d}"], check=True, capture_output=True)
                made.add(d)
        src = tmp_path / "src.bin"
        src.write_bytes(data)
        subprocess.run(["mcopy", "-i", str(img), str(src), f"::/{path}"], check=True, capture_output=True)
    return img.read_bytes()


def fat_disk(
    tmp_path: Path, files: dict[str, bytes], *, active: bool = True, size_mib: int = 10
) -> bytearray:
    part = fat_image(tmp_path, files, (size_mib - 1) * 1024)
    return disk(
        size_mib * MiB, (0, mbr([(0x80 if active else 0, 0x0E, 2048, len(part) // 512)])), (PART, part)
    )


SYSLINUX_CFG = "DEFAULT linux\nLABEL linux\n  KERNEL /vmlinuz\n  APPEND {append}\nLABEL hd\n  COM32 chain.c32\n  APPEND hd0\n"


def syslinux_disk(tmp_path: Path, append: str, *, extra: bytes = b"", active: bool = True) -> bytearray:
    cfg = SYSLINUX_CFG.format(append=append).encode() + extra
    return fat_disk(
        tmp_path, {"syslinux.cfg": cfg, "ldlinux.sys": b"\x90" * 4096, "vmlinuz": b"k" * 1000}, active=active
    )


GPT_SIZE = 4 * MiB


def gpt_disk(parts: list[tuple[str, int, int]], size: int = GPT_SIZE) -> bytearray:
    """A GPT disk (512-byte sectors, 128 entries) with ``(type guid, first lba, last lba)`` partitions."""
    last = size // 512 - 1
    entries = bytearray(128 * 128)
    for i, (type_guid, first, end) in enumerate(parts):
        e = 128 * i
        entries[e : e + 16] = uuid.UUID(type_guid).bytes_le
        entries[e + 16 : e + 32] = uuid.UUID(int=i + 1).bytes_le
        struct.pack_into("<QQ", entries, e + 32, first, end)
        entries[e + 56 : e + 56 + 8] = "part".encode("utf-16-le")

    def header(my: int, other: int, entries_lba: int) -> bytes:
        h = bytearray(512)
        h[0:8] = b"EFI PART"
        struct.pack_into("<IIII", h, 8, 0x00010000, 92, 0, 0)
        struct.pack_into("<QQQQ", h, 24, my, other, 34, last - 33)
        h[56:72] = uuid.UUID(int=0xD15C).bytes_le
        struct.pack_into("<QIII", h, 72, entries_lba, 128, 128, zlib.crc32(entries))
        struct.pack_into("<I", h, 16, zlib.crc32(h[:92]))
        return bytes(h)

    protective = mbr([(0, 0xEE, 1, min(last, 0xFFFFFFFF))], code=bytes(440))
    return disk(
        size,
        (0, protective),
        (512, header(1, last, 2)),
        (1024, bytes(entries)),
        ((last - 32) * 512, bytes(entries)),
        (last * 512, header(last, 1, last - 32)),
    )


# --- partition tables ----------------------------------------------------------------------------
def test_mbr_partitions_types_and_active_flag() -> None:
    img = disk(
        16 * MiB,
        (0, mbr([(0x80, 0x83, 2048, 8192), (0, 0x82, 10240, 4096)])),
        (PART, ext4_superblock()),
    )
    ins = inspect_disk(reader(img), len(img))
    assert ins.table == "mbr" and ins.boot_signature and ins.mbr_boot_code == "syslinux"
    assert ins.disk_signature == "1234abcd"
    (p1, p2) = ins.partitions
    assert (p1.number, p1.start, p1.size, p1.type, p1.type_name, p1.active) == (
        1,
        PART,
        4 * MiB,
        "0x83",
        "Linux",
        True,
    )
    assert p1.partuuid == "1234abcd-01"
    assert p1.filesystem is not None and p1.filesystem.type == "ext4"
    assert p1.filesystem.uuid == str(EXT4_UUID) and p1.filesystem.label == "root"
    assert {"has_journal", "extents", "flex_bg", "metadata_csum"} <= set(p1.filesystem.features)
    assert not p2.active and p2.filesystem is None
    assert ins.os_family == "linux" and ins.boot_mode == "bios"


def test_mbr_without_active_partition_gets_a_patch_on_the_bootable_one() -> None:
    img = disk(
        16 * MiB, (0, mbr([(0, 0x82, 2048, 4096), (0, 0x83, 6144, 8192)])), (3 * MiB, ext4_superblock())
    )
    result = run(img)
    (patch,) = result.patches
    assert (patch.disk_index, patch.offset, patch.data, patch.original) == (0, 446 + 16, b"\x80", b"\x00")
    assert "partition 2" in patch.reason and "active" in patch.reason
    assert "active_flag_set" in codes(result, "warning")
    apply(img, result.patches)
    assert img[446 + 16] == 0x80 and img[446] == 0


def test_no_boot_signature_is_an_error_and_not_bootable() -> None:
    img = disk(4 * MiB, (0, mbr([(0x80, 0x83, 2048, 4096)], signature=False)))
    result = run(img)
    assert not result.bootable
    assert "no_boot_signature" in codes(result, "error")
    assert result.disks[0].table == "none"


def test_empty_mbr_boot_code_without_esp_is_an_error() -> None:
    img = disk(16 * MiB, (0, mbr([(0x80, 0x83, 2048, 8192)], code=bytes(440))), (PART, ext4_superblock()))
    result = run(img)
    assert result.disks[0].mbr_boot_code == "empty"
    assert "mbr_no_boot_code" in codes(result, "error") and not result.bootable


def test_multiple_active_partitions_warn() -> None:
    img = disk(16 * MiB, (0, mbr([(0x80, 0x83, 2048, 4096), (0x80, 0x83, 6144, 4096)])))
    assert "mbr_multiple_active" in codes(run(img), "warning")


def test_partition_past_the_end_and_overlaps_are_findings() -> None:
    img = disk(8 * MiB, (0, mbr([(0x80, 0x83, 2048, 4096), (0, 0x83, 4096, 4096), (0, 0x83, 12288, 8192)])))
    result = run(img)
    errors = codes(result, "error")
    assert {"partition_past_end", "partitions_overlap"} <= errors
    assert not result.bootable


def test_gpt_with_valid_crcs() -> None:
    img = gpt_disk([(ESP_GUID, 2048, 4095), (LINUX_TYPE, 4096, 8157)])
    img[2048 * 512 : 2048 * 512 + 2048] = bytes(2048)
    ins = inspect_disk(reader(img), len(img))
    assert ins.table == "gpt" and ins.disk_guid == str(uuid.UUID(int=0xD15C))
    esp, root = ins.partitions
    assert esp.is_esp and esp.type_name == "EFI System" and esp.name == "part"
    assert root.type == LINUX_TYPE and root.partuuid == str(uuid.UUID(int=2))
    assert not [f for f in ins.findings if f.severity != "info"]
    assert ins.boot_mode == "uefi"


def test_gpt_with_corrupt_header_crc_falls_back_to_the_backup() -> None:
    img = gpt_disk([(LINUX_TYPE, 2048, 4095)])
    img[512 + 40] ^= 0xFF  # first usable LBA: the header CRC no longer matches
    ins = inspect_disk(reader(img), len(img))
    assert ins.table == "gpt" and len(ins.partitions) == 1
    found = {f.code: f for f in ins.findings}
    assert "header CRC32" in found["gpt_primary_invalid"].message
    assert found["gpt_using_backup"].severity == "warning"


def test_gpt_with_corrupt_entries_and_no_backup_is_an_error() -> None:
    img = gpt_disk([(LINUX_TYPE, 2048, 4095)])
    img[1024 + 32] ^= 0x01  # the entry array CRC no longer matches
    img[-512:] = bytes(512)  # and no backup header
    result = run(img)
    msgs = {f.code: f.message for f in result.findings}
    assert "partition entry array CRC32" in msgs["gpt_primary_invalid"]
    assert {"gpt_backup_missing", "gpt_unreadable"} <= codes(result, "error")
    assert not result.bootable


def test_gpt_uefi_boot_with_esp_fallback_loader_and_grub_cfg(tmp_path: Path) -> None:
    esp = fat_image(
        tmp_path,
        {
            "EFI/BOOT/BOOTX64.EFI": b"MZ" + bytes(1000),
            "EFI/debian/grubx64.efi": b"MZ" + bytes(1000),
            "EFI/debian/grub.cfg": b"menuentry 'Debian' {\n  linux /vmlinuz root=UUID=%s ro quiet\n}\n"
            % str(EXT4_UUID).encode(),
        },
        size_kib=2048,
        fat=12,
    )
    img = gpt_disk([(ESP_GUID, 2048, 6143), (LINUX_TYPE, 6144, 8000)], size=8 * MiB)
    img[2048 * 512 : 2048 * 512 + len(esp)] = esp
    img[6144 * 512 : 6144 * 512 + 2048] = ext4_superblock()
    result = run(img, platform="azure")
    assert (result.os_family, result.boot_mode, result.bootable) == ("linux", "uefi", True)
    disk0 = result.disks[0]
    assert disk0.partitions[0].filesystem.type == "fat12"  # type: ignore[union-attr]
    files = {f.upper() for f in disk0.partitions[0].boot_files}  # 8.3 names may come back upper-cased
    assert {"EFI/BOOT/BOOTX64.EFI", "EFI/DEBIAN/GRUBX64.EFI"} <= files
    assert "grub" in disk0.boot_loaders
    assert {"uefi_fallback_present", "root_found", "boot_mode_uefi"} <= codes(result, "info")
    # console=ttyS0 missing from grub.cfg: patched in place, then the same check passes
    assert "serial_console_added" in codes(result, "warning")
    apply(img, result.patches)
    again = run(img, platform="azure")
    assert "serial_console_ok" in codes(again) and not again.patches
    assert "console=ttyS0,115200n8" in again.disks[0].boot_configs[0].cmdlines[0]


def test_esp_without_fallback_loader_warns(tmp_path: Path) -> None:
    esp = fat_image(tmp_path, {"EFI/debian/shimx64.efi": b"MZ" + bytes(100)}, size_kib=2048, fat=12)
    img = gpt_disk([(ESP_GUID, 2048, 6143)], size=8 * MiB)
    img[2048 * 512 : 2048 * 512 + len(esp)] = esp
    assert "uefi_fallback_missing" in codes(run(img), "warning")


# --- filesystems ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("blob", "offset", "expected"),
    [
        (b"XFSB", 0, "xfs"),
        (b"SWAPSPACE2", 4086, "swap"),
        (b"LABELONE" + bytes(16) + b"LVM2 001" + b"abcdefghijklmnopqrstuvwxyz012345", 512, "lvm2_pv"),
        (b"\xeb\x58\x90-FVE-FS-", 0, "bitlocker"),
        (b"\xeb\x76\x90EXFAT   ", 0, "exfat"),
    ],
)
def test_filesystem_magics(blob: bytes, offset: int, expected: str) -> None:
    img = disk(8 * MiB, (0, mbr([(0x80, 0x83, 2048, 8192)])), (PART + offset, blob))
    fs = inspect_disk(reader(img), len(img)).partitions[0].filesystem
    assert fs is not None and fs.type == expected


def test_ext2_and_ext3_are_told_apart_from_ext4() -> None:
    sb = bytearray(ext4_superblock())
    struct.pack_into("<III", sb, 1024 + 92, 0x4, 0x2, 0)
    img = disk(8 * MiB, (0, mbr([(0x80, 0x83, 2048, 8192)])), (PART, bytes(sb)))
    assert inspect_disk(reader(img), len(img)).partitions[0].filesystem.type == "ext3"  # type: ignore[union-attr]
    struct.pack_into("<I", sb, 1024 + 92, 0)
    img[PART : PART + 2048] = sb
    assert inspect_disk(reader(img), len(img)).partitions[0].filesystem.type == "ext2"  # type: ignore[union-attr]


def test_whole_disk_filesystem_is_noted(tmp_path: Path) -> None:
    img = bytearray(fat_image(tmp_path, {"data.txt": b"hello"}, size_kib=2048, fat=12))
    ins = inspect_disk(reader(img), len(img))
    assert ins.table == "none" and ins.whole_disk_filesystem is not None
    assert ins.whole_disk_filesystem.type == "fat12" and ins.whole_disk_filesystem.label == "BOOT"
    assert "whole_disk_filesystem" in {f.code for f in ins.findings}


def test_bitlocker_on_the_boot_disk_is_an_error_and_a_warning_on_a_data_disk() -> None:
    bitlocker = b"\xeb\x58\x90-FVE-FS-" + bytes(500) + b"\x55\xaa"
    boot = disk(8 * MiB, (0, mbr([(0x80, 0x07, 2048, 8192)], code=WINDOWS_MBR)), (PART, bitlocker))
    data = disk(8 * MiB, (0, mbr([(0, 0x07, 2048, 8192)], code=bytes(440))), (PART, bitlocker))
    result = run(boot, data, platform="aws")
    by_disk = {(f.disk_index, f.severity) for f in result.findings if f.code == "bitlocker_volume"}
    assert by_disk == {(0, "error"), (1, "warning")}
    assert not result.bootable
    assert "cannot be inspected or prepared" in result.findings[0].message


# --- Windows -------------------------------------------------------------------------------------
def test_windows_ntfs_system_volume_detected_and_hidden_sectors_fixed() -> None:
    sectors = 8192
    img = disk(
        8 * MiB,
        (0, mbr([(0x80, 0x07, 2048, sectors)], code=WINDOWS_MBR)),
        (PART, ntfs_boot_sector(hidden=63, sectors=sectors)),
    )
    result = run(img, platform="azure")
    assert (result.os_family, result.boot_mode) == ("windows", "bios")
    part = result.disks[0].partitions[0]
    assert part.filesystem is not None and part.filesystem.type == "ntfs"
    assert part.filesystem.uuid == "1122334455667788"
    assert "bootmgr (boot sector)" in part.boot_files
    assert result.disks[0].mbr_boot_code == "windows"
    (patch,) = result.patches
    assert (patch.offset, patch.data, patch.original) == (
        PART + 28,
        struct.pack("<I", 2048),
        struct.pack("<I", 63),
    )
    assert "windows_drivers_not_checked" in codes(result, "warning")
    assert "storvsc" in next(f.message for f in result.findings if f.code == "windows_drivers_not_checked")
    assert result.bootable


def test_ntfs_data_volume_larger_than_its_partition() -> None:
    img = disk(
        8 * MiB,
        (0, mbr([(0, 0x07, 2048, 4096)], code=bytes(440))),
        (PART, ntfs_boot_sector(2048, 8192, code=b"")),
    )
    found = {f.code: f for f in inspect_disk(reader(img), len(img)).findings}
    assert found["ntfs_larger_than_partition"].severity == "error"
    assert found["ntfs_no_boot_code"].severity == "warning"


# --- Linux on FAT: syslinux.cfg ------------------------------------------------------------------
def test_syslinux_cfg_with_serial_console_needs_nothing(tmp_path: Path) -> None:
    img = syslinux_disk(tmp_path, f"console=ttyS0,115200 root=UUID={EXT4_UUID}")
    result = run(img)
    assert (result.os_family, result.boot_mode, result.bootable) == ("linux", "bios", True)
    assert not result.patches
    (cfg,) = result.disks[0].boot_configs
    assert cfg.path == "/syslinux.cfg" and cfg.loader == "syslinux"
    assert cfg.cmdlines == [f"console=ttyS0,115200 root=UUID={EXT4_UUID}"]  # not the chain.c32 APPEND
    assert "serial_console_ok" in codes(result, "info")
    assert "root_not_found" in codes(result, "warning")  # no ext4 with that UUID on these disks
    assert "ldlinux.sys" in result.disks[0].partitions[0].boot_files  # mkfs.fat boot sector, not syslinux's


def test_syslinux_cfg_without_serial_console_is_patched_in_place(tmp_path: Path) -> None:
    img = syslinux_disk(tmp_path, "root=/dev/sda1 quiet")
    result = run(img, platform="aws")
    assert "serial_console_added" in codes(result, "warning")
    assert "root_device_name" in codes(result, "warning")  # /dev/sda1 on aws
    assert all(p.disk_index == 0 for p in result.patches) and len(result.patches) == 2
    apply(img, result.patches)
    part = tmp_path / "patched.img"
    part.write_bytes(bytes(img[PART:]))
    text = subprocess.run(
        ["mtype", "-i", str(part), "::/syslinux.cfg"], check=True, capture_output=True
    ).stdout
    assert text == SYSLINUX_CFG.format(append="root=/dev/sda1 quiet console=ttyS0,115200n8").encode()
    fsck = shutil.which("fsck.fat") or "/usr/sbin/fsck.fat"
    check = subprocess.run([fsck, "-n", str(part)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    again = run(img, platform="aws")
    assert "serial_console_ok" in codes(again) and not again.patches


def test_root_device_name_is_fine_on_qemu_ide(tmp_path: Path) -> None:
    result = run(syslinux_disk(tmp_path, "console=ttyS0 root=/dev/sda1"), platform="qemu")
    assert next(f for f in result.findings if f.code == "root_device_name").severity == "info"
    result = run(syslinux_disk(tmp_path, "console=ttyS0 root=/dev/hda1"), platform="qemu")
    assert next(f for f in result.findings if f.code == "root_device_name").severity == "warning"


def test_syslinux_cfg_that_cannot_grow_in_place_warns_without_patch(tmp_path: Path) -> None:
    cfg = SYSLINUX_CFG.format(append="quiet").encode()
    cluster = run(syslinux_disk(tmp_path, "quiet")).disks[0].boot_configs[0].allocated
    img = syslinux_disk(tmp_path, "quiet", extra=b"#" * (cluster - len(cfg) - 1) + b"\n")
    result = run(img)
    finding = next(f for f in result.findings if f.code == "serial_console_missing")
    assert finding.severity == "warning" and "allocated" in finding.message
    assert not result.patches


# --- robustness ----------------------------------------------------------------------------------
def test_tiny_and_empty_disks_are_findings_not_crashes() -> None:
    for size in (0, 100, 512, 4096):
        result = run(bytearray(size))
        assert not result.bootable
        assert result.findings


def test_read_errors_propagate() -> None:
    def broken(offset: int, length: int) -> bytes:
        raise OSError("EIO")

    with pytest.raises(OSError, match="EIO"):
        prepare([(broken, 8 * MiB)], platform="qemu")


def test_unknown_platform_is_refused() -> None:
    with pytest.raises(ValueError, match="platform"):
        prepare([(reader(bytearray(512)), 512)], platform="vmware")


@pytest.fixture(scope="module")
def small_fat_disk(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return bytes(syslinux_disk(tmp_path_factory.mktemp("fat"), "console=ttyS0 root=/dev/sda1"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.integers(0, 80 * 1024), st.binary(min_size=1, max_size=16)), max_size=12))
def test_damaged_structures_never_crash(small_fat_disk: bytes, damage: list[tuple[int, bytes]]) -> None:
    img = bytearray(small_fat_disk)
    for (
        offset,
        data,
    ) in damage:  # the MBR, the FAT boot sector, FATs and root directory live in the first 80 KiB
        target = offset if offset < 1024 else PART + offset
        img[target : target + len(data)] = data
    result = run(img)
    OsPreparation.model_validate_json(result.model_dump_json())


# --- the real boot disk --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def boot_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_boot_disk(tmp_path_factory.mktemp("boot") / "disk.img", marker="osprep", size_mib=32)


def _file_reader(path: Path):  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_RDONLY)
    return fd, (lambda offset, length: os.pread(fd, length, offset))


def test_real_boot_disk_is_ready_as_built(boot_disk: Path) -> None:
    fd, read = _file_reader(boot_disk)
    try:
        result = prepare([(read, boot_disk.stat().st_size)], platform="qemu")
    finally:
        os.close(fd)
    assert (result.os_family, result.boot_mode, result.bootable) == ("linux", "bios", True)
    assert result.patches == []
    assert "serial_console_ok" in codes(result, "info")
    assert not codes(result, "warning") and not codes(result, "error")
    disk0 = result.disks[0]
    assert disk0.mbr_boot_code == "syslinux" and "syslinux" in disk0.boot_loaders
    (part,) = disk0.partitions
    assert part.active and part.filesystem is not None and part.filesystem.type == "fat16"
    assert "bootmarker=osprep" in disk0.boot_configs[0].cmdlines[0]


def test_real_boot_disk_with_active_flag_cleared_gets_it_back(boot_disk: Path, tmp_path: Path) -> None:
    copy = tmp_path / "inactive.img"
    shutil.copyfile(boot_disk, copy)
    original = copy.read_bytes()[:512]
    with open(copy, "r+b") as f:
        f.seek(446)
        f.write(b"\x00")
    fd, read = _file_reader(copy)
    try:
        result = prepare([(read, copy.stat().st_size)], platform="qemu")
    finally:
        os.close(fd)
    (patch,) = result.patches
    assert (patch.offset, patch.data, patch.original) == (446, b"\x80", b"\x00")
    assert "partition 1" in patch.reason and "syslinux" in patch.reason
    assert result.bootable  # fixable: the patch is the remediation
    with open(copy, "r+b") as f:
        f.seek(patch.offset)
        f.write(patch.data)
    assert copy.read_bytes()[:512] == original


def test_a_looping_fat_cluster_chain_is_a_finding(tmp_path: Path) -> None:
    img = syslinux_disk(tmp_path, "console=ttyS0")
    cfg = run(img).disks[0].boot_configs[0]
    (offset, _), *_ = cfg.extents
    bs = img[PART : PART + 512]
    bps, spc, reserved = struct.unpack_from("<HBH", bs, 11)
    data_start = PART + (reserved + bs[16] * struct.unpack_from("<H", bs, 22)[0]) * bps + 512 * 32
    cluster = (offset - data_start) // (bps * spc) + 2
    fat = PART + reserved * bps
    struct.pack_into("<H", img, fat + 2 * cluster, cluster)  # the file's first cluster points to itself
    result = run(img)
    finding = next(f for f in result.findings if f.code == "fat_unreadable")
    assert "loops" in finding.message


def test_reads_are_few_and_aligned(tmp_path: Path) -> None:
    img = syslinux_disk(tmp_path, "console=ttyS0")
    calls: list[tuple[int, int]] = []

    def read(offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return bytes(img[offset : offset + length])

    assert prepare([(read, len(img))], platform="qemu").bootable
    assert all(offset % (64 * 1024) == 0 for offset, _ in calls)
    assert len(calls) < 40
