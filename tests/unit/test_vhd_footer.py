"""The fixed-VHD footer (VHD spec, "Hard Disk Footer Format"): fields, checksum, geometry."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime

import pytest

from node_runtime.recovery.azure_vhd import (
    chs_geometry,
    nonzero_runs,
    parse_vhd_footer,
    vhd_checksum,
    vhd_footer,
)

MiB = 1 << 20
GiB = 1 << 30
UUID = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def footer(size: int = 48 * MiB) -> bytes:
    return vhd_footer(size, uuid=UUID, timestamp=WHEN)


def test_fields_at_their_spec_offsets() -> None:
    f = footer()
    assert len(f) == 512
    assert f[0:8] == b"conectix"
    assert f[8:12] == bytes.fromhex("00000002")  # features: the reserved bit, always set
    assert f[12:16] == bytes.fromhex("00010000")  # file format version 1.0
    assert f[16:24] == b"\xff" * 8  # data offset: fixed disk
    seconds = struct.unpack(">I", f[24:28])[0]
    assert seconds == int((WHEN - datetime(2000, 1, 1, tzinfo=UTC)).total_seconds()) == 768294489
    assert f[28:32] == b"win "
    assert f[32:36] == bytes.fromhex("00000001")
    assert f[36:40] == b"Wi2k"
    assert struct.unpack(">QQ", f[40:56]) == (48 * MiB, 48 * MiB)  # original, current size
    assert struct.unpack(">HBB", f[56:60]) == (963, 6, 17)
    assert f[60:64] == bytes.fromhex("00000002")  # disk type: fixed
    assert f[68:84] == UUID.bytes
    assert f[84] == 0  # saved state
    assert f[85:] == bytes(427)


def test_checksum_is_ones_complement_of_the_byte_sum() -> None:
    f = footer()
    stored = struct.unpack(">I", f[64:68])[0]
    unsummed = f[:64] + bytes(4) + f[68:]
    assert stored == (~sum(unsummed)) & 0xFFFFFFFF == vhd_checksum(f)
    # the golden value for these inputs pins the whole footer
    assert f"{stored:08x}" == "ffffe7e7"


def test_parse_round_trips_and_rejects_damage() -> None:
    parsed = parse_vhd_footer(footer(10 * MiB))
    assert parsed.current_size == parsed.original_size == 10 * MiB
    assert parsed.disk_type == 2 and parsed.data_offset == 2**64 - 1
    assert parsed.timestamp == WHEN and parsed.uuid == UUID and parsed.saved_state == 0
    assert parsed.geometry == (301, 4, 17)
    damaged = bytearray(footer())
    damaged[45] ^= 1
    with pytest.raises(ValueError, match="checksum"):
        parse_vhd_footer(bytes(damaged))
    with pytest.raises(ValueError, match="cookie"):
        parse_vhd_footer(b"x" * 512)


@pytest.mark.parametrize(
    ("size", "geometry"),
    [
        # hand-worked through the spec's algorithm (each branch once)
        (10 * MiB, (301, 4, 17)),  # sectors per track 17, heads clamped up to 4
        (100 * MiB, (1003, 12, 17)),  # 17 spt, 12 heads
        (GiB, (2080, 16, 63)),  # 17 -> 31 -> 63 sectors per track
        (127 * GiB, (65278, 16, 255)),  # past 65535*16*63 sectors: 255 spt
        (65535 * 16 * 255 * 512, (65535, 16, 255)),  # the largest geometry, exactly
        (2 * 1024 * GiB, (65535, 16, 255)),  # capped at the largest geometry
        # sizes qemu-img 7.2 created (it rounds a size up to whole CHS), with its geometry
        (1079296, (31, 4, 17)),
        (10514432, (302, 4, 17)),
        (50343936, (964, 6, 17)),
        (104865792, (1004, 12, 17)),
        (1073995776, (2081, 16, 63)),
        (4295467008, (8323, 16, 63)),
        (34361303040, (16449, 16, 255)),
        (136365219840, (65279, 16, 255)),
    ],
)
def test_geometry(size: int, geometry: tuple[int, int, int]) -> None:
    assert chs_geometry(size) == geometry
    c, h, s = geometry
    assert c * h * s * 512 <= size


def test_invalid_sizes_are_refused() -> None:
    for size in (0, 1000, -512):
        with pytest.raises(ValueError):
            vhd_footer(size, uuid=UUID, timestamp=WHEN)
    with pytest.raises(ValueError):
        vhd_footer(MiB, uuid=UUID, timestamp=datetime(1999, 1, 1, tzinfo=UTC))


def test_nonzero_runs_skips_zero_units_aligned_to_the_disk() -> None:
    unit = 64 << 10
    data = bytearray(b"\x01" * (8 * unit))
    data[unit : 3 * unit] = bytes(2 * unit)  # two zero units
    data[5 * unit + 7] = 0  # a unit with one zero byte is still data
    runs = [(off, len(v)) for off, v in nonzero_runs(MiB, data, unit)]
    assert runs == [(MiB, unit), (MiB + 3 * unit, 5 * unit)]
    assert nonzero_runs(0, bytes(3 * unit), unit) == []
    # a write that does not start on a unit boundary is cut at the disk's unit boundaries
    tail = bytes(100) + b"x" + bytes(600)
    assert [(o, len(v)) for o, v in nonzero_runs(1000, tail, 512)] == [(1024, 512)]
