"""The node's own credential: enrollment, its state file, automatic rotation.

A node starts with a *bootstrap* token (``--token-file`` / ``LIFEBOAT_NODE_TOKEN``): an
enrollment token, or (older set-ups) a node credential. Registering with an enrollment token
answers the node's own credential once; the agent keeps it in its state file and uses it for
every call after, re-registering with it on restart. A credential older than the rotation
age is replaced through ``POST /nodes/{id}/credentials/rotate`` (the old one keeps working
for a short grace, so a lost answer can be retried).

The state file MUST be readable by the node's user only (0600, written atomically through a
temporary file in the same folder); secrets are never logged (only token ids are).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.api_client import ApiClient
from shared.errors import AuthenticationError, InvalidInputError, LifeboatError

log = logging.getLogger("lifeboat.node")


@dataclass(frozen=True)
class NodeCredential:
    """The node's id and its current credential (``secret`` is the ``lbt_`` bearer token)."""

    node_id: str
    token_id: str
    secret: str
    issued_at: str  # ISO 8601

    def __repr__(self) -> str:  # never print the secret
        return f"NodeCredential(node_id={self.node_id!r}, token_id={self.token_id!r}, issued_at={self.issued_at!r})"

    def age(self, now: datetime) -> timedelta:
        issued = datetime.fromisoformat(self.issued_at.replace("Z", "+00:00"))
        return now - (issued if issued.tzinfo else issued.replace(tzinfo=UTC))

    @classmethod
    def from_answer(cls, node_id: str, answer: dict[str, Any]) -> NodeCredential:
        """From the ``credential`` of a register answer or a rotate answer."""
        return cls(node_id=node_id, token_id=str(answer["token_id"]), secret=str(answer["secret"]),
                   issued_at=str(answer.get("created_at") or datetime.now(UTC).isoformat()))  # fmt: skip


class StateFile:
    """The node's state file (JSON, 0600): ``{"node_id", "token_id", "secret", "issued_at"}``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> NodeCredential | None:
        if not self.path.exists():
            return None
        try:
            doc = json.loads(self.path.read_text())
            return NodeCredential(**{k: str(doc[k]) for k in ("node_id", "token_id", "secret", "issued_at")})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"node state file {self.path} is unreadable: {exc}") from exc

    def save(self, credential: NodeCredential) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".node-state-")  # created 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(credential), f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        log.info("node %s: credential %s saved to %s", credential.node_id, credential.token_id, self.path)


class NodeIdentity:
    """Which credential the agent's client sends, and when it is rotated (see the module doc).

    ``rotate_after`` None or zero: never rotate automatically. A node whose only credential is
    its bootstrap token and that has no state file does not rotate (a restart would then find
    the bootstrap token ended)."""

    def __init__(
        self, client: ApiClient, *, state: StateFile | None = None, rotate_after: timedelta | None = None,
        grace_seconds: int = 300,
    ) -> None:  # fmt: skip
        self.client = client
        self.bootstrap = client.token
        self.state = state
        self.rotate_after = rotate_after if rotate_after and rotate_after > timedelta(0) else None
        self.grace_seconds = grace_seconds
        self.credential: NodeCredential | None = None
        self._retry_at: datetime | None = None

    def register(self, details: dict[str, Any]) -> dict[str, Any]:
        """Register (re-register with the saved credential; enroll with the bootstrap token
        when there is none or it was refused) and adopt the credential the answer carries."""
        saved = self.state.load() if self.state else None
        if saved is not None:
            self.client.token = saved.secret
            try:
                node = self.client.register_node(**details)
                self.credential = saved
                return node
            except AuthenticationError as exc:
                log.warning("node %s: its saved credential %s was refused (%s); enrolling with the bootstrap token",
                            saved.node_id, saved.token_id, exc)  # fmt: skip
                self.client.token = self.bootstrap
        node = self.client.register_node(**details)
        issued = node.pop("credential", None)
        if issued:
            self._adopt(NodeCredential.from_answer(node["id"], issued))
        elif self.state is not None and self.bootstrap:  # an older node credential: rotation replaces it
            token_id = self.bootstrap.removeprefix("lbt_").split("_", 1)[0]
            self._adopt(NodeCredential(node["id"], token_id, self.bootstrap, datetime.now(UTC).isoformat()))
        return node

    def maybe_rotate(self, now: datetime) -> bool:
        """Rotate when the credential is older than ``rotate_after``; True when it did. A
        failure is logged and retried a minute later (the current credential keeps working)."""
        cred = self.credential
        if cred is None or self.rotate_after is None or cred.age(now) < self.rotate_after:
            return False
        if self._retry_at is not None and now < self._retry_at:
            return False
        try:
            answer = self.client.rotate_credential(cred.node_id, grace_seconds=self.grace_seconds)
        except LifeboatError as exc:
            log.warning("node %s: rotating credential %s failed (%s); retrying in a minute",
                        cred.node_id, cred.token_id, exc)  # fmt: skip
            self._retry_at = now + timedelta(minutes=1)
            return False
        new = NodeCredential.from_answer(cred.node_id, answer)
        self._adopt(new)
        log.info("node %s: credential %s rotated to %s", cred.node_id, cred.token_id, new.token_id)
        return True

    def _adopt(self, credential: NodeCredential) -> None:
        if self.state is not None:
            self.state.save(credential)  # saved before use: a crash right after keeps the new one
        self.credential = credential
        self.client.token = credential.secret
