"""Repository keys: master key material, passphrase wrapping (FORMAT.md §3) and block ids (§4)."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from shared.errors import CorruptObjectError, WrongPasswordError

KEY_AAD = b"lifeboat-key-v1"
NONCE_SIZE = 12
TAG_SIZE = 16
ZERO_ID = bytes(32)


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost. The default is OWASP's first recommended setting (46 MiB, 1 pass)."""

    iterations: int = 1
    memory_kib: int = 47104
    lanes: int = 1


@dataclass(frozen=True)
class MasterKey:
    """Key material of an open repository. ``enc_key`` is None when unencrypted."""

    enc_key: bytes | None
    id_key: bytes | None
    _aead: AESGCM | None = field(default=None, compare=False, repr=False)

    @classmethod
    def generate(cls) -> MasterKey:
        raw = os.urandom(64)
        return cls.from_bytes(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> MasterKey:
        if len(raw) != 64:
            raise ValueError("master key must be 64 bytes")
        return cls(raw[:32], raw[32:], AESGCM(raw[:32]))

    @classmethod
    def none(cls) -> MasterKey:
        return cls(None, None, None)

    @property
    def encrypted(self) -> bool:
        return self.enc_key is not None

    def to_bytes(self) -> bytes:
        assert self.enc_key is not None and self.id_key is not None
        return self.enc_key + self.id_key

    def block_id(self, data: bytes | memoryview) -> bytes:
        """BLAKE3-256 of ``data``, keyed with ``id_key`` when the repository is encrypted."""
        if self.id_key is None:
            return blake3.blake3(data).digest()
        return blake3.blake3(data, key=self.id_key).digest()

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """``nonce || AES-256-GCM(plaintext, aad)``; plaintext unchanged when unencrypted."""
        if self._aead is None:
            return plaintext
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes | memoryview, aad: bytes, *, what: str) -> bytes:
        """Inverse of :meth:`seal`; raises :class:`CorruptObjectError` naming ``what``."""
        if self._aead is None:
            return bytes(sealed)
        if len(sealed) < NONCE_SIZE + TAG_SIZE:
            raise CorruptObjectError(f"{what}: too short to be encrypted data", key=what)
        try:
            return self._aead.decrypt(bytes(sealed[:NONCE_SIZE]), bytes(sealed[NONCE_SIZE:]), aad)
        except InvalidTag as exc:
            raise CorruptObjectError(
                f"{what}: authentication failed (object corrupted or tampered with)", key=what
            ) from exc


def _kek(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    return Argon2id(
        salt=salt,
        length=32,
        iterations=params.iterations,
        lanes=params.lanes,
        memory_cost=params.memory_kib,
    ).derive(passphrase.encode("utf-8"))


def wrap_master_key(master: MasterKey, passphrase: str, params: KdfParams, created: str) -> bytes:
    """Serialise a key file (FORMAT.md §3) protecting ``master`` with ``passphrase``."""
    salt = os.urandom(16)
    nonce = os.urandom(NONCE_SIZE)
    data = AESGCM(_kek(passphrase, salt, params)).encrypt(nonce, master.to_bytes(), KEY_AAD)
    doc = {
        "kdf": "argon2id",
        "salt": base64.b64encode(salt).decode(),
        "iterations": params.iterations,
        "memory_kib": params.memory_kib,
        "lanes": params.lanes,
        "nonce": base64.b64encode(nonce).decode(),
        "data": base64.b64encode(data).decode(),
        "created": created,
    }
    return json.dumps(doc, indent=1).encode()


def unwrap_master_key(key_file: bytes, passphrase: str, *, name: str) -> MasterKey:
    """Open a key file; :class:`WrongPasswordError` if the passphrase does not fit."""
    try:
        doc = json.loads(key_file)
        if doc.get("kdf") != "argon2id":
            raise CorruptObjectError(f"{name}: unknown kdf {doc.get('kdf')!r}", key=name)
        params = KdfParams(int(doc["iterations"]), int(doc["memory_kib"]), int(doc["lanes"]))
        salt = base64.b64decode(doc["salt"])
        nonce = base64.b64decode(doc["nonce"])
        data = base64.b64decode(doc["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObjectError(f"{name}: malformed key file", key=name) from exc
    try:
        raw = AESGCM(_kek(passphrase, salt, params)).decrypt(nonce, data, KEY_AAD)
    except InvalidTag as exc:
        raise WrongPasswordError("wrong passphrase for this repository", key=name) from exc
    return MasterKey.from_bytes(raw)
