"""Recovery-point records (FORMAT.md §8) and their ids."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.errors import InvalidInputError

DISK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
POINT_ID_RE = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{8}$")
PAGE_ENTRIES = 1024
MIN_BLOCK_SIZE = 64 << 10
MAX_BLOCK_SIZE = 4 << 20


def check_disk_id(disk_id: str) -> str:
    if not DISK_ID_RE.match(disk_id):
        raise InvalidInputError(
            f"invalid disk id {disk_id!r}: use letters, digits, '.', '_' or '-' (max 128, "
            "starting with a letter or digit)",
            disk_id=disk_id,
        )
    return disk_id


def new_point_id(now: datetime) -> str:
    """``YYYYMMDDTHHMMSSmmmZ-<8 hex>``: sorts in time order, unique across writers."""
    t = now.astimezone(UTC)
    return f"{t:%Y%m%dT%H%M%S}{t.microsecond // 1000:03d}Z-{os.urandom(4).hex()}"


class PointStats(BaseModel):
    model_config = ConfigDict(extra="ignore")

    blocks_read: int = 0
    blocks_new: int = 0
    blocks_patched: int = 0  # of blocks_new, stored as patches (FORMAT.md §5.1)
    bytes_read: int = 0
    bytes_new_raw: int = 0
    bytes_new_stored: int = 0
    holes: int = 0
    duration_s: float = 0.0


class PointRecord(BaseModel):
    """One crash-consistent recovery point of one disk."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 1
    id: str
    disk_id: str
    time: datetime
    disk_size: int = Field(ge=0)
    block_size: int
    page_entries: int = PAGE_ENTRIES
    pages: list[str | None]
    parent: str | None = None
    source: str = ""
    change_token: str | None = Field(
        default=None, max_length=512,
        description="The source's name for this moment (e.g. a CBT changeId); the next run asks for changes since it.",
    )  # fmt: skip
    tags: dict[str, str] = Field(default_factory=dict)
    stats: PointStats = Field(default_factory=PointStats)

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if not MIN_BLOCK_SIZE <= v <= MAX_BLOCK_SIZE or v & (v - 1):
            raise ValueError("block_size must be a power of two from 64 KiB to 4 MiB")
        return v

    @property
    def n_blocks(self) -> int:
        return -(-self.disk_size // self.block_size)

    def block_length(self, index: int) -> int:
        """Length of block ``index`` (the last block of a disk may be short)."""
        start = index * self.block_size
        return min(self.block_size, self.disk_size - start)
