"""The SecretVault port: where the control plane keeps secrets users hand it (a vCenter
password), returning a reference that records hold instead of the secret.

Contract: ``put`` stores a new secret and returns its reference (never reused);
``get`` returns it or raises :class:`NotFoundError`; ``delete`` is idempotent. A
reference names its vault (``lifeboat-secret:...``, ``aws-secretsmanager:...``) so a
record read elsewhere says where its secret lives. Secrets never appear in logs, errors
or ``repr``.
"""

from __future__ import annotations

from typing import Protocol


class SecretVault(Protocol):
    def put(self, name: str, value: str) -> str:
        """Store ``value`` (``name`` is a readable label); return the new reference."""
        ...

    def get(self, ref: str) -> str: ...

    def delete(self, ref: str) -> None: ...
