"""Golden vectors for repository format version 1 (docs/FORMAT.md).

These bytes were produced once by the v1 writer with fixed keys and nonces. They MUST
keep decoding to the same plaintext for as long as version 1 is readable; if one of
these tests fails, the format changed: bump the version instead of editing a vector.
"""

from __future__ import annotations

import json

import pytest

from shared.errors import CorruptObjectError, UnsupportedFormatError, WrongPasswordError
from shared.repo import blobs, codec
from shared.repo.codec import IndexEntry, ObjectType
from shared.repo.keys import ZERO_ID, MasterKey, unwrap_master_key

KEY = MasterKey.from_bytes(bytes(range(64)))
PLAIN = MasterKey.none()
BLOCK = b"lifeboat golden block\n" * 100

KEYED_ID = "5c5370fa0e8702421dbf849f924e1964f4f853204cda5970f48f99aba5c69b72"
PLAIN_ID = "0790b6a99c453a9b9e2f10b79e7a3b0306333937a71fdc06985e86301d275322"
ENCRYPTED_BLOB = (
    "6465666768696a6b6c6d6e6f49336b498489ce99cb625f58b60c0c9820ad677eab0b9c1ec3b4c26899cfca2bffe341c0b"
    "2826568ffe3838050f36aa900505aeea30d41155b"
)
ENCRYPTED_PAGE = (
    "4c424f58010201016465666768696a6b6c6d6e6f60aef19b59ad339f3e365deada656aa111b2fc040c6eb16f185533dab5"
    "bac1bc6cba608c964bebf0726ad39a3bd9b8cf1a5bf52733d3055677c2d16bd2d765153d1c6184d9"
)
PLAIN_BLOB = "0128b52ffd609807f50000b06c696665626f617420676f6c64656e20626c6f636b0a0100fe90fe6c02"
PLAIN_INDEX = (
    "4c424f580101010028b52ffd205805020094030100000011010000000790b6a99c453a9b9e2f10b79e7a3b0306333937"
    "a71fdc06985e86301d2753220000000008000000280000009808000001000dd002"
)
KEY_FILE = {
    "kdf": "argon2id",
    "salt": "AAAAAAAAAAAAAAAAAAAAAA==",
    "iterations": 1,
    "memory_kib": 8192,
    "lanes": 1,
    "nonce": "AAAAAAAAAAAAAAAA",
    "data": "PDEkVwIqQz2+WvLP8S1F54naYaYalEFy9P/KrLF3VN02RLTi5OvRydUXu1c7CHDNZDBM0Fj1OzoC3A4lhRgvcROownIBce8qKm5/fZuqJ5I=",
    "created": "2026-11-25T00:00:00Z",
}


def test_block_ids_are_blake3_keyed_when_encrypted() -> None:
    assert PLAIN.block_id(BLOCK).hex() == PLAIN_ID
    assert KEY.block_id(BLOCK).hex() == KEYED_ID


def test_key_file_vector_opens_with_its_passphrase_only() -> None:
    raw = json.dumps(KEY_FILE).encode()
    assert unwrap_master_key(raw, "correct horse", name="keys/v").to_bytes() == bytes(range(64))
    with pytest.raises(WrongPasswordError):
        unwrap_master_key(raw, "wrong horse", name="keys/v")


def test_encrypted_blob_vector() -> None:
    blob = bytes.fromhex(ENCRYPTED_BLOB)
    assert blobs.decode_blob(KEY, bytes.fromhex(KEYED_ID), blob, len(BLOCK), name="v") == BLOCK
    # aad binds the blob to its id: the same bytes under another id fail authentication
    with pytest.raises(CorruptObjectError, match="authentication failed"):
        blobs.decode_blob(KEY, ZERO_ID, blob, len(BLOCK), name="v")


def test_plain_blob_and_index_vectors() -> None:
    block_id = bytes.fromhex(PLAIN_ID)
    assert blobs.decode_blob(PLAIN, block_id, bytes.fromhex(PLAIN_BLOB), len(BLOCK), name="v") == BLOCK
    rows = codec.decode_index(PLAIN, bytes.fromhex(PLAIN_INDEX), name="v")
    assert rows == [(block_id, IndexEntry(b"\x11" * 32, 8, 40, 2200))]


def test_encrypted_page_vector() -> None:
    ids = codec.decode_page(KEY, bytes.fromhex(ENCRYPTED_PAGE), name="v")
    assert ids == [bytes.fromhex(KEYED_ID), ZERO_ID]


def test_layouts_that_do_not_depend_on_zstd() -> None:
    # sealed header: magic, version, type, codec, encrypted
    assert bytes.fromhex(ENCRYPTED_PAGE)[:8] == b"LBOX\x01\x02\x01\x01"
    assert codec.pack_header(KEY) == b"LBPK\x01\x01\x00\x00"
    assert codec.pack_header(PLAIN) == b"LBPK\x01\x00\x00\x00"
    assert codec.encode_page_payload([b"\x01" * 32]) == b"\x01\x00\x00\x00" + b"\x01" * 32
    # incompressible data is stored raw: codec byte 0 then the plaintext
    noise = bytes.fromhex(KEYED_ID) + bytes.fromhex(PLAIN_ID)
    assert blobs.encode_blob(PLAIN, PLAIN.block_id(noise), noise) == b"\x00" + noise


def test_future_versions_are_refused_not_guessed() -> None:
    page = bytearray(bytes.fromhex(ENCRYPTED_PAGE))
    page[4] = 2
    with pytest.raises(UnsupportedFormatError):
        codec.decode_page(KEY, bytes(page), name="v")


@pytest.mark.parametrize("cut", [0, 3, 8, 20, 50])
def test_truncated_sealed_objects_are_corrupt(cut: int) -> None:
    with pytest.raises(CorruptObjectError, match="pages/x"):
        codec.decode_page(KEY, bytes.fromhex(ENCRYPTED_PAGE)[:cut], name="pages/x")


def test_wrong_object_type_is_refused() -> None:
    with pytest.raises(CorruptObjectError, match="expected a POINT"):
        codec.unseal(KEY, ObjectType.POINT, bytes.fromhex(ENCRYPTED_PAGE), name="v")


def test_pack_round_trip_and_trailer_checks() -> None:
    from shared.repo.packer import Packer

    packer = Packer(KEY, target=1 << 30)
    blocks = [bytes([i]) * 5000 + bytes(range(256)) for i in range(1, 6)]
    for b in blocks:
        assert packer.add(KEY.block_id(b), blobs.encode_blob(KEY, KEY.block_id(b), b), len(b)) is None
    full = packer.flush()
    assert full is not None and packer.flush() is None
    pack = full.seal()
    entries = codec.decode_pack_trailer(KEY, pack.data, name="data/p")
    assert [e.id for e in entries] == [KEY.block_id(b) for b in blocks]
    for e, b in zip(entries, blocks, strict=True):
        assert (
            blobs.decode_blob(KEY, e.id, pack.data[e.offset : e.offset + e.length], e.raw_length, name="p")
            == b
        )
    with pytest.raises(CorruptObjectError, match="data/p"):
        codec.decode_pack_trailer(KEY, pack.data[:-7], name="data/p")
    with pytest.raises(CorruptObjectError, match="data/p"):
        codec.decode_pack_trailer(KEY, b"XXXX" + pack.data[4:], name="data/p")
