"""Base of every metadata record: an id, timestamps and a revision for optimistic concurrency."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
#: a target network: a bridge, a subnet id (AWS), or a full ARM subnet id (Azure: ~150-400 characters)
NetworkRef = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=512)]
Slug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """``<prefix>-<12 hex>``: readable in logs, unique without coordination."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Record(BaseModel):
    """A stored record. ``revision`` increases on every write; writers state the revision
    they read and the store refuses the write if another writer got there first."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: ClassVar[str] = "record"
    #: attributes the metadata store indexes for filtering, besides ``id``
    indexed: ClassVar[tuple[str, ...]] = ()
    #: a field holding epoch seconds after which the record may be deleted (DynamoDB writes it
    #: to the table's TTL attribute); None: the record never expires
    expires_field: ClassVar[str | None] = None

    id: Slug
    revision: int = Field(default=0, ge=0, description="Optimistic-concurrency counter, set by the store.")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
