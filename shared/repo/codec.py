"""Bytes in, bytes out: every object layout of FORMAT.md, with no storage access.

Each ``decode_*`` function checks what it reads and raises :class:`CorruptObjectError`
naming the object (``name``) instead of returning data that failed a check.
"""

from __future__ import annotations

import itertools
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

import zstandard
from pydantic import BaseModel, ValidationError

from shared.errors import CorruptObjectError, UnsupportedFormatError
from shared.repo.keys import ZERO_ID, MasterKey

FORMAT_VERSION = 1  # of sealed-object and pack headers; the repository's is in repository.py
SEAL_MAGIC = b"LBOX"
PACK_MAGIC = b"LBPK"
HEADER_SIZE = 8
ID_SIZE = 32


class ObjectType(IntEnum):
    INDEX = 1
    PAGE = 2
    POINT = 3
    PACK_TRAILER = 4
    GENERATION = 5


class Codec(IntEnum):
    RAW = 0
    ZSTD = 1
    PATCH_RAW = 2  # a patch (§5.1) stored raw
    PATCH_ZSTD = 3  # a patch (§5.1), zstd


_local = threading.local()


def _zstd(level: int) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    """This thread's (compressor, decompressor): zstandard objects are not thread-safe."""
    pairs = _local.__dict__.setdefault("pairs", {})
    pair = pairs.get(level)
    if pair is None:
        pair = pairs[level] = (zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor())
    return pair


def compress(data: bytes | memoryview, level: int = 3) -> tuple[Codec, bytes]:
    """zstd-compress ``data``; return it raw when compression does not help."""
    packed = _zstd(level)[0].compress(data)
    if len(packed) >= len(data):
        return Codec.RAW, bytes(data)
    return Codec.ZSTD, packed


def decompress(codec: int, body: bytes, raw_length: int, *, name: str) -> bytes:
    if codec == Codec.RAW:
        out = body
    elif codec == Codec.ZSTD:
        try:
            out = _zstd(3)[1].decompress(body, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise CorruptObjectError(f"{name}: zstd data is corrupt", key=name) from exc
    else:
        raise CorruptObjectError(f"{name}: unknown codec {codec}", key=name)
    if len(out) != raw_length:
        raise CorruptObjectError(
            f"{name}: expected {raw_length} bytes after decoding, got {len(out)}", key=name
        )
    return out


def decompress_at_most(codec: int, body: bytes, limit: int, *, name: str) -> bytes:
    """Decode ``body`` of at most ``limit`` bytes when its exact length is not known."""
    if codec == Codec.RAW:
        return body
    if codec != Codec.ZSTD:
        raise CorruptObjectError(f"{name}: unknown codec {codec}", key=name)
    try:
        return _zstd(3)[1].decompress(body, max_output_size=limit)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(f"{name}: zstd data is corrupt", key=name) from exc


# --- sealed objects (§9) ------------------------------------------------------------------
def seal(key: MasterKey, otype: ObjectType, payload: bytes, *, level: int = 3) -> bytes:
    codec, body = compress(payload, level)
    header = SEAL_MAGIC + bytes([FORMAT_VERSION, otype, codec, 1 if key.encrypted else 0])
    return header + key.seal(body, header)


def unseal(key: MasterKey, otype: ObjectType, data: bytes, *, name: str) -> bytes:
    if len(data) < HEADER_SIZE or data[:4] != SEAL_MAGIC:
        raise CorruptObjectError(f"{name}: not a Lifeboat object (bad magic or truncated)", key=name)
    version, got_type, codec, encrypted = data[4], data[5], data[6], data[7]
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(f"{name}: object format version {version} is not supported", key=name)
    if got_type != otype:
        raise CorruptObjectError(f"{name}: expected a {otype.name} object, found type {got_type}", key=name)
    if bool(encrypted) != key.encrypted:
        raise CorruptObjectError(f"{name}: encryption flag does not match the repository", key=name)
    header = data[:HEADER_SIZE]
    body = key.open(memoryview(data)[HEADER_SIZE:], header, what=name)
    if codec == Codec.RAW:
        return body
    if codec != Codec.ZSTD:
        raise CorruptObjectError(f"{name}: unknown codec {codec}", key=name)
    try:
        return _zstd(3)[1].decompress(body)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(f"{name}: zstd data is corrupt", key=name) from exc


M = TypeVar("M", bound=BaseModel)


def unseal_model(key: MasterKey, otype: ObjectType, data: bytes, model: type[M], *, name: str) -> M:
    """A sealed JSON record (points, generations) validated as ``model``."""
    payload = unseal(key, otype, data, name=name)
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        what = otype.name.lower().replace("_", " ")
        raise CorruptObjectError(
            f"{name}: invalid {what} record ({exc.error_count()} errors)", key=name
        ) from exc


# --- packs (§5) ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BlobEntry:
    """Where one blob lives inside a pack."""

    id: bytes
    offset: int
    length: int
    raw_length: int
    #: not in the trailer (a patch blob names its base itself): carried to the index rows
    base: bytes | None = None
    mask: int = 0


_ENTRY = struct.Struct("<32sIII")
_INDEX_ENTRY = struct.Struct("<32sIIII")


def pack_header(key: MasterKey) -> bytes:
    return PACK_MAGIC + bytes([FORMAT_VERSION, 1 if key.encrypted else 0, 0, 0])


def pack_trailer(key: MasterKey, entries: Sequence[BlobEntry]) -> bytes:
    payload = struct.pack("<I", len(entries)) + b"".join(
        _ENTRY.pack(e.id, e.offset, e.length, e.raw_length) for e in entries
    )
    sealed = seal(key, ObjectType.PACK_TRAILER, payload)
    return sealed + struct.pack("<I", len(sealed))


def decode_pack_trailer(key: MasterKey, pack: bytes, *, name: str) -> list[BlobEntry]:
    """Read the self-description at the end of a whole pack."""
    if len(pack) < HEADER_SIZE + 4 or pack[:4] != PACK_MAGIC:
        raise CorruptObjectError(f"{name}: not a pack (bad magic or truncated)", key=name)
    if pack[4] != FORMAT_VERSION:
        raise UnsupportedFormatError(f"{name}: pack version {pack[4]} is not supported", key=name)
    (tlen,) = struct.unpack_from("<I", pack, len(pack) - 4)
    start = len(pack) - 4 - tlen
    if start < HEADER_SIZE:
        raise CorruptObjectError(f"{name}: pack trailer length is invalid", key=name)
    payload = unseal(key, ObjectType.PACK_TRAILER, pack[start : len(pack) - 4], name=name)
    entries = _decode_entries(payload, _ENTRY, name)
    out = [BlobEntry(*fields) for fields in entries]  # base/mask: not in the trailer
    for e in out:
        if e.offset < HEADER_SIZE or e.offset + e.length > start:
            raise CorruptObjectError(f"{name}: trailer entry points outside the pack", key=name)
    return out


def _decode_entries(payload: bytes, fmt: struct.Struct, name: str, offset: int = 0) -> list[tuple]:
    try:
        (count,) = struct.unpack_from("<I", payload, offset)
    except struct.error as exc:
        raise CorruptObjectError(f"{name}: truncated entry table", key=name) from exc
    offset += 4
    if len(payload) - offset != count * fmt.size:
        raise CorruptObjectError(f"{name}: entry table length does not match its count", key=name)
    return list(fmt.iter_unpack(payload[offset:]))


# --- index (§6) ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IndexEntry:
    """A block's location: which pack, where, how long stored and raw."""

    pack_id: bytes
    offset: int
    length: int
    raw_length: int
    #: a patch's base block and changed-chunk mask (§5.1, §6); None for a whole block
    base: bytes | None = None
    mask: int = 0


_PATCH_ROW = struct.Struct("<I32sQ")


def encode_index(key: MasterKey, entries: Iterable[tuple[bytes, IndexEntry]]) -> bytes:
    return seal(key, ObjectType.INDEX, index_payload(entries))


def index_payload(entries: Iterable[tuple[bytes, IndexEntry]]) -> bytes:
    """The INDEX payload (§6) of ``entries``, in the order given."""
    pack_numbers: dict[bytes, int] = {}
    rows = []
    patches = []
    for row, (block_id, e) in enumerate(entries):
        number = pack_numbers.setdefault(e.pack_id, len(pack_numbers))
        rows.append(_INDEX_ENTRY.pack(block_id, number, e.offset, e.length, e.raw_length))
        if e.base is not None:
            patches.append(_PATCH_ROW.pack(row, e.base, e.mask))
    parts = [struct.pack("<I", len(pack_numbers)), *pack_numbers, struct.pack("<I", len(rows)), *rows]
    if patches:  # absent when there is none: such payloads are byte-identical to version 1
        parts += [struct.pack("<I", len(patches)), *patches]
    return b"".join(parts)


class IndexTable:
    """An INDEX payload (§6) read in place: ``find`` bisects the rows of a sorted table
    (a shard, §6.2) without decoding them; ``rows`` decodes all."""

    def __init__(self, payload: bytes, *, name: str) -> None:
        self.payload, self.name = payload, name
        try:
            (n_packs,) = struct.unpack_from("<I", payload, 0)
            table_end = 4 + n_packs * ID_SIZE
            (self.count,) = struct.unpack_from("<I", payload, table_end)
        except struct.error as exc:
            raise CorruptObjectError(f"{name}: truncated index", key=name) from exc
        self.packs = [payload[4 + i * ID_SIZE : 4 + (i + 1) * ID_SIZE] for i in range(n_packs)]
        self.rows_at = table_end + 4
        rows_end = self.rows_at + self.count * _INDEX_ENTRY.size
        if rows_end > len(payload):
            raise CorruptObjectError(f"{name}: entry table length does not match its count", key=name)
        self.patches: dict[int, tuple[bytes, int]] = {}
        if rows_end < len(payload):  # the patch section (§6)
            for row, base, mask in _decode_entries(payload, _PATCH_ROW, name, rows_end):
                if row >= self.count or not mask:
                    raise CorruptObjectError(f"{name}: patch row #{row} is invalid", key=name)
                self.patches[row] = (base, mask)

    def __len__(self) -> int:
        return self.count

    def id_at(self, row: int) -> bytes:
        at = self.rows_at + row * _INDEX_ENTRY.size
        return self.payload[at : at + ID_SIZE]

    def entry_at(self, row: int) -> IndexEntry:
        _, number, offset, length, raw_length = _INDEX_ENTRY.unpack_from(
            self.payload, self.rows_at + row * _INDEX_ENTRY.size
        )
        if number >= len(self.packs):
            raise CorruptObjectError(
                f"{self.name}: entry names pack #{number} of {len(self.packs)}", key=self.name
            )
        base, mask = self.patches.get(row, (None, 0))
        return IndexEntry(self.packs[number], offset, length, raw_length, base, mask)

    def find(self, block_id: bytes) -> IndexEntry | None:
        """The entry of ``block_id`` in a table sorted by id, or None."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.id_at(mid) < block_id:
                lo = mid + 1
            else:
                hi = mid
        return self.entry_at(lo) if lo < self.count and self.id_at(lo) == block_id else None

    def is_sorted(self) -> bool:
        """Ids strictly ascending (shards always; deltas from writers that sort them)."""
        ids = [self.id_at(i) for i in range(self.count)]
        return all(a < b for a, b in itertools.pairwise(ids))

    def rows(self) -> list[tuple[bytes, IndexEntry]]:
        return [(self.id_at(i), self.entry_at(i)) for i in range(self.count)]


def open_index(key: MasterKey, data: bytes, *, name: str, expect_id: bytes | None = None) -> IndexTable:
    """An index object, unsealed; ``expect_id`` checks a content-addressed shard (§6.2) too."""
    payload = unseal(key, ObjectType.INDEX, data, name=name)
    if expect_id is not None and key.block_id(payload) != expect_id:
        raise CorruptObjectError(f"{name}: shard content does not match its name", key=name)
    return IndexTable(payload, name=name)


def decode_index(
    key: MasterKey, data: bytes, *, name: str, expect_id: bytes | None = None
) -> list[tuple[bytes, IndexEntry]]:
    """An index object's rows (see :func:`open_index`)."""
    return open_index(key, data, name=name, expect_id=expect_id).rows()


# --- pages (§7) ----------------------------------------------------------------------------
def encode_page_payload(ids: Sequence[bytes]) -> bytes:
    return struct.pack("<I", len(ids)) + b"".join(ids)


def decode_page(key: MasterKey, data: bytes, *, name: str, expect_id: bytes | None = None) -> list[bytes]:
    payload = unseal(key, ObjectType.PAGE, data, name=name)
    if expect_id is not None and key.block_id(payload) != expect_id:
        raise CorruptObjectError(f"{name}: page content does not match its name", key=name)
    try:
        (count,) = struct.unpack_from("<I", payload, 0)
    except struct.error as exc:
        raise CorruptObjectError(f"{name}: truncated page", key=name) from exc
    if len(payload) != 4 + count * ID_SIZE:
        raise CorruptObjectError(f"{name}: page length does not match its count", key=name)
    return [payload[4 + i * ID_SIZE : 4 + (i + 1) * ID_SIZE] for i in range(count)]


def is_hole(block_id: bytes) -> bool:
    return block_id == ZERO_ID
