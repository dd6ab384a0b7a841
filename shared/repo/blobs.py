"""Blobs (FORMAT.md §5): a block compressed, encrypted and bound to its id; and patches
(§5.1), a block stored as the chunks that differ from a whole base block."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import CorruptObjectError
from shared.repo.codec import Codec, compress, decompress, decompress_at_most
from shared.repo.keys import MasterKey

PATCH_CHUNKS = 64  # a patch replaces chunks of block_length / 64 bytes, named by a u64 mask
_PATCH_HEAD = struct.Struct("<32sQ")


def encode_blob(key: MasterKey, block_id: bytes, data: bytes | memoryview, *, level: int = 3) -> bytes:
    codec, body = compress(data, level)
    return key.seal(bytes([codec]) + body, block_id)


@dataclass(frozen=True, slots=True)
class Patch:
    """A block stored as the chunks that differ from a base block (§5.1)."""

    base: bytes
    mask: int
    chunks: bytes


def chunk_size(block_length: int) -> int:
    return block_length // PATCH_CHUNKS


def mask_chunks(mask: int) -> list[int]:
    return [k for k in range(PATCH_CHUNKS) if mask >> k & 1]


def patch_of(data: bytes | memoryview, base: bytes, mask: int) -> Patch:
    """The patch that rebuilds ``data`` from ``base`` (its chunks outside ``mask`` are
    ``data``'s, as the source's change tracking says)."""
    size = chunk_size(len(data))
    view = memoryview(data)
    return Patch(base, mask, b"".join(view[k * size : (k + 1) * size] for k in mask_chunks(mask)))


def encode_patch(key: MasterKey, block_id: bytes, patch: Patch, *, level: int = 3) -> bytes:
    codec, body = compress(_PATCH_HEAD.pack(patch.base, patch.mask) + patch.chunks, level)
    return key.seal(bytes([codec + Codec.PATCH_RAW]) + body, block_id)


def apply_patch(patch: Patch, base_data: bytes, *, name: str) -> bytes:
    size = chunk_size(len(base_data))
    chunks = mask_chunks(patch.mask)
    if len(patch.chunks) != len(chunks) * size:
        raise CorruptObjectError(
            f"{name}: patch holds {len(patch.chunks)} bytes for {len(chunks)} chunks", key=name
        )
    out = bytearray(base_data)
    for n, k in enumerate(chunks):
        out[k * size : (k + 1) * size] = patch.chunks[n * size : (n + 1) * size]
    return bytes(out)


def decode_blob(
    key: MasterKey,
    block_id: bytes,
    blob: bytes,
    raw_length: int,
    *,
    name: str,
    base: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """Decode a blob and verify that its plaintext hashes to ``block_id``.

    A patch blob is applied onto ``base(base id)``, the plaintext of its base block.
    """
    inner = key.open(blob, block_id, what=name)
    if not inner:
        raise CorruptObjectError(f"{name}: empty blob", key=name)
    if inner[0] in (Codec.PATCH_RAW, Codec.PATCH_ZSTD):
        body = decompress_at_most(
            inner[0] - Codec.PATCH_RAW, inner[1:], raw_length + _PATCH_HEAD.size, name=name
        )
        if len(body) < _PATCH_HEAD.size:
            raise CorruptObjectError(f"{name}: truncated patch", key=name)
        base_id, mask = _PATCH_HEAD.unpack_from(body)
        if base is None:
            raise CorruptObjectError(
                f"{name}: block {block_id.hex()} is a patch and its base was not given", key=name
            )
        base_data = base(base_id)
        if len(base_data) != raw_length:
            raise CorruptObjectError(f"{name}: patch base {base_id.hex()} has another length", key=name)
        data = apply_patch(Patch(base_id, mask, body[_PATCH_HEAD.size :]), base_data, name=name)
    else:
        data = decompress(inner[0], inner[1:], raw_length, name=name)
    if key.block_id(data) != block_id:
        raise CorruptObjectError(f"{name}: block {block_id.hex()} does not match its id", key=name)
    return data
