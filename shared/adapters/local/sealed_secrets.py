"""Secrets sealed in the metadata store under the server key (the embedded vault).

Each secret is a :class:`SealedSecret` record: AES-256-GCM under a 32-byte server key
kept outside the database (``secrets/server.key``, mode 0600), with the record id as
associated data, so a ciphertext copied to another record does not open.
"""

from __future__ import annotations

import base64
import os
from typing import ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field

from shared.domain.base import Record, new_id
from shared.errors import CorruptObjectError, InvalidInputError, NotFoundError
from shared.ports.metadata_store import MetadataStore

PREFIX = "lifeboat-secret:"


class SealedSecret(Record):
    kind: ClassVar[str] = "sealed-secret"

    name: str = Field(max_length=256)
    ciphertext: str = Field(repr=False, description="base64(nonce | AES-GCM ciphertext)")


class SealedSecretVault:
    def __init__(self, store: MetadataStore, key: bytes) -> None:
        if len(key) != 32:
            raise InvalidInputError("the server key must be 32 bytes")
        self.store = store
        self.aead = AESGCM(key)

    def put(self, name: str, value: str) -> str:
        record_id = new_id("secret")
        nonce = os.urandom(12)
        sealed = nonce + self.aead.encrypt(nonce, value.encode(), record_id.encode())
        self.store.create(SealedSecret(id=record_id, name=name, ciphertext=base64.b64encode(sealed).decode()))
        return PREFIX + record_id

    def get(self, ref: str) -> str:
        record = self.store.get(SealedSecret, self._id(ref))
        raw = base64.b64decode(record.ciphertext)
        try:
            return self.aead.decrypt(raw[:12], raw[12:], record.id.encode()).decode()
        except InvalidTag as exc:
            raise CorruptObjectError(f"secret {record.id} does not open with this server key") from exc

    def delete(self, ref: str) -> None:
        try:
            self.store.delete(SealedSecret, self._id(ref))
        except NotFoundError:
            pass

    @staticmethod
    def _id(ref: str) -> str:
        if not ref.startswith(PREFIX):
            raise InvalidInputError(f"{ref!r} is not a reference of this vault")
        return ref[len(PREFIX) :]
