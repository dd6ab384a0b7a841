"""Reconstruct a point into an Azure page blob holding a fixed VHD (what managed disks import).

A fixed VHD is the raw disk followed by a 512-byte footer. Azure requires the virtual
size to be a multiple of 1 MiB, so the blob is ``round_up(disk_size, 1 MiB) + 512``
bytes: the disk, zero padding up to the MiB, then the footer.

Page blobs start all zero, so only non-zero data is sent: each write is scanned in
``zero_granularity`` units (a multiple of 512) and all-zero units are skipped; the rest
is merged with neighbouring writes into Put Page requests of at most 4 MiB. A coarse
granularity (default 64 KiB) keeps the blob's page ranges few: Azure reads and copies
heavily fragmented page blobs slowly.

Writes arrive in pack order from several threads, not in disk order, so up to
``max_open`` (default ``2 x threads``) runs stay open and a chunk joins the run ending
where it starts and/or the run starting where it ends; the least recently touched run
is sent when one too many is open.

Memory: at most ``max_open`` open runs (each < 4 MiB) plus ``2 x threads`` requests
(each <= 4 MiB) queued or in flight: 128 MiB at worst with the defaults (8 threads),
usually far less (a run fills to 4 MiB and leaves).
"""

from __future__ import annotations

import logging
import struct
import threading
import uuid as uuid_mod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

from node_runtime.recovery.writers import BoundedPool
from shared.errors import TargetError

log = logging.getLogger(__name__)

SECTOR = 512
MiB = 1 << 20
MAX_PAGE_WRITE = 4 * MiB  # Put Page limit
FOOTER_SIZE = 512
VHD_COOKIE = b"conectix"
VHD_FEATURES = 0x00000002  # the "reserved" bit the spec says must always be set
VHD_VERSION = 0x00010000
VHD_FIXED_OFFSET = 0xFFFFFFFFFFFFFFFF  # data offset of a fixed disk: no dynamic header
DISK_TYPE_FIXED = 2
VHD_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# "win " (Hyper-V) tells readers that the current-size field, not the CHS geometry, is
# the disk size: qemu sizes images from anything else by geometry, which cannot express
# most MiB-multiple sizes (a 48 MiB disk would read as 47.99 MiB). Host OS "Wi2k" goes with it.
CREATOR_APP = b"win "
CREATOR_VERSION = 0x00000001  # Lifeboat 0.1
CREATOR_HOST_OS = b"Wi2k"
_MAX_CHS_SECTORS = 65535 * 16 * 255

_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427s")
assert _FOOTER.size == FOOTER_SIZE


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def chs_geometry(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) of a disk of ``size`` bytes, per the VHD spec (appendix)."""
    total = min(size // SECTOR, _MAX_CHS_SECTORS)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def vhd_checksum(footer: bytes) -> int:
    """One's complement of the byte sum of ``footer`` with its checksum field (bytes 64-67) zeroed."""
    return ~(sum(footer[:64]) + sum(footer[68:])) & 0xFFFFFFFF


def vhd_footer(
    size: int,
    *,
    uuid: uuid_mod.UUID,
    timestamp: datetime,
    creator_app: bytes = CREATOR_APP,
    creator_version: int = CREATOR_VERSION,
    creator_host_os: bytes = CREATOR_HOST_OS,
) -> bytes:
    """The 512-byte footer of a fixed VHD whose data part is ``size`` bytes (a multiple of 512).

    Original and current size are both ``size``; the timestamp counts seconds since
    2000-01-01T00:00:00Z; the saved-state byte is 0.
    """
    if size <= 0 or size % SECTOR:
        raise ValueError(f"VHD size must be a positive multiple of {SECTOR}, not {size}")
    if len(creator_app) != 4 or len(creator_host_os) != 4:
        raise ValueError("creator_app and creator_host_os are 4 bytes each")
    seconds = int((timestamp.astimezone(UTC) - VHD_EPOCH).total_seconds())
    if not 0 <= seconds <= 0xFFFFFFFF:
        raise ValueError(f"timestamp {timestamp} is outside the VHD range (2000-2136)")
    cylinders, heads, spt = chs_geometry(size)
    fields = [
        VHD_COOKIE,
        VHD_FEATURES,
        VHD_VERSION,
        VHD_FIXED_OFFSET,
        seconds,
        creator_app,
        creator_version,
        creator_host_os,
        size,
        size,
        cylinders,
        heads,
        spt,
        DISK_TYPE_FIXED,
        0,  # checksum, filled in below
        uuid.bytes,
        0,
        b"",
    ]
    unsigned = _FOOTER.pack(*fields)
    fields[14] = vhd_checksum(unsigned)
    return _FOOTER.pack(*fields)


@dataclass(frozen=True)
class VhdFooter:
    features: int
    version: int
    data_offset: int
    timestamp: datetime
    creator_app: bytes
    creator_version: int
    creator_host_os: bytes
    original_size: int
    current_size: int
    geometry: tuple[int, int, int]
    disk_type: int
    checksum: int
    uuid: uuid_mod.UUID
    saved_state: int


def parse_vhd_footer(footer: bytes) -> VhdFooter:
    """Decode a VHD footer; ``ValueError`` unless the cookie and checksum are right."""
    if len(footer) != FOOTER_SIZE:
        raise ValueError(f"a VHD footer is {FOOTER_SIZE} bytes, not {len(footer)}")
    (cookie, features, version, offset, seconds, app, app_version, host, original, current, cyl, heads, spt,
     disk_type, checksum, raw_uuid, saved, _reserved) = _FOOTER.unpack(footer)  # fmt: skip
    if cookie != VHD_COOKIE:
        raise ValueError(f"not a VHD footer (cookie {cookie!r})")
    if checksum != vhd_checksum(footer):
        raise ValueError(f"VHD footer checksum {checksum:#010x} != computed {vhd_checksum(footer):#010x}")
    return VhdFooter(
        features=features,
        version=version,
        data_offset=offset,
        timestamp=datetime.fromtimestamp(VHD_EPOCH.timestamp() + seconds, UTC),
        creator_app=app,
        creator_version=app_version,
        creator_host_os=host,
        original_size=original,
        current_size=current,
        geometry=(cyl, heads, spt),
        disk_type=disk_type,
        checksum=checksum,
        uuid=uuid_mod.UUID(bytes=raw_uuid),
        saved_state=saved,
    )


def nonzero_runs(
    offset: int, data: bytes | bytearray | memoryview, granularity: int
) -> list[tuple[int, memoryview]]:
    """Maximal runs of ``data`` (at disk ``offset``) made of units that are not all zero.

    Units are ``granularity`` bytes aligned to the disk (``offset`` need not be); the
    last one may be short.
    """
    view = memoryview(data).cast("B")
    zeros = bytes(granularity)
    runs: list[tuple[int, memoryview]] = []
    run_start: int | None = None
    pos = 0
    while pos < len(view):
        end = min(len(view), pos + granularity - (offset + pos) % granularity)
        unit = bytes(view[pos:end])  # bytes == bytes is a memcmp; memoryview == bytes is not
        if unit == (zeros if len(unit) == granularity else bytes(len(unit))):
            if run_start is not None:
                runs.append((offset + run_start, view[run_start:pos]))
                run_start = None
        elif run_start is None:
            run_start = pos
        pos = end
    if run_start is not None:
        runs.append((offset + run_start, view[run_start:]))
    return runs


class _Run:
    __slots__ = ("buf", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.buf = bytearray()


class AzurePageBlobVhdWriter:
    """A :class:`~node_runtime.recovery.writers.BlockWriter` producing a fixed-VHD page blob.

    ``client`` is a ``ContainerClient`` (then ``blob_name`` names the blob) or a
    ``BlobClient``. The blob is created by the constructor (refusing to replace an
    existing blob unless ``overwrite``); ``finish`` writes the footer last, so a blob
    without a valid footer is an unfinished one. ``abort`` deletes the blob.
    Retries belong to the client's pipeline (its retry policy).
    """

    def __init__(
        self,
        client: Any,
        blob_name: str | None,
        disk_size: int,
        *,
        threads: int = 8,
        zero_granularity: int = 64 << 10,
        max_open: int | None = None,
        overwrite: bool = False,
        metadata: dict[str, str] | None = None,
        uuid: uuid_mod.UUID | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        if disk_size <= 0:
            raise ValueError("disk_size must be positive")
        if zero_granularity <= 0 or zero_granularity % SECTOR:
            raise ValueError(f"zero_granularity must be a positive multiple of {SECTOR}")
        self.blob = client.get_blob_client(blob_name) if hasattr(client, "get_blob_client") else client
        self.name = str(self.blob.blob_name)
        self.disk_size = disk_size
        self.virtual_size = round_up(disk_size, MiB)
        self.blob_size = self.virtual_size + FOOTER_SIZE
        self.uuid = uuid or uuid_mod.uuid4()
        self.timestamp = timestamp
        self.granularity = zero_granularity
        self.max_open = max_open or 2 * threads
        self.pages_written = 0  # Put Page requests, footer included
        self.bytes_sent = 0
        self._lock = threading.Lock()
        self._runs: dict[int, _Run] = {}  # open runs by start offset, least recently touched first
        self._ends: dict[int, int] = {}  # end offset -> start offset of the open run ending there
        self._pool = BoundedPool(threads, name="azure-vhd")
        self._aborted = False
        kwargs: dict[str, Any] = {} if overwrite else {"match_condition": MatchConditions.IfMissing}
        try:
            self.blob.create_page_blob(self.blob_size, metadata=metadata, **kwargs)
        except ResourceExistsError as exc:
            self._pool.cancel()
            raise TargetError(f"page blob {self.name} already exists", blob=self.name) from exc
        except AzureError as exc:
            self._pool.cancel()
            raise TargetError(f"cannot create page blob {self.name}: {exc}", blob=self.name) from exc

    # --- BlockWriter ------------------------------------------------------------------------
    def write(self, offset: int, data: bytes | memoryview) -> None:
        end = offset + len(data)
        if offset % SECTOR or end > self.disk_size or (end % SECTOR and end != self.disk_size):
            raise TargetError(
                f"write of {len(data)} bytes at {offset} is not sector aligned or not within the disk",
                blob=self.name,
            )
        self._pool.check()
        if end % SECTOR:  # the disk's tail: pad to the sector (the blob is zero there anyway)
            data = bytes(data) + bytes(SECTOR - end % SECTOR)
        for start, chunk in nonzero_runs(offset, data, self.granularity):
            self._add(start, chunk)

    def skip(self, offset: int, length: int) -> None:
        """Nothing to do: a new page blob reads as zeros."""

    def finish(self) -> None:
        with self._lock:
            runs, self._runs, self._ends = list(self._runs.values()), {}, {}
        try:
            for run in runs:
                self._submit(run.start, bytes(run.buf))
            self._pool.wait()
            footer = vhd_footer(
                self.virtual_size, uuid=self.uuid, timestamp=self.timestamp or datetime.now(UTC)
            )
            self._put(footer, self.virtual_size)
        except AzureError as exc:
            raise TargetError(f"cannot finish page blob {self.name}: {exc}", blob=self.name) from exc

    def abort(self) -> None:
        if self._aborted:
            return
        self._aborted = True
        self._pool.cancel()
        try:
            self.blob.delete_blob()
        except ResourceNotFoundError:
            pass
        except Exception:
            log.warning("cannot delete page blob %s after a failed reconstruction", self.name, exc_info=True)

    # --- merging and sending ------------------------------------------------------------------
    def _add(self, start: int, chunk: memoryview) -> None:
        """Merge ``chunk`` with the open runs it touches; send what reaches 4 MiB or is evicted."""
        full: list[tuple[int, bytes]] = []
        with self._lock:
            before = self._ends.pop(start, None)
            run = self._runs.pop(before) if before is not None else _Run(start)
            run.buf += chunk
            after = self._runs.pop(start + len(chunk), None)
            if after is not None:
                del self._ends[after.start + len(after.buf)]
                run.buf += after.buf
            while len(run.buf) >= MAX_PAGE_WRITE:
                full.append((run.start, bytes(run.buf[:MAX_PAGE_WRITE])))
                del run.buf[:MAX_PAGE_WRITE]
                run.start += MAX_PAGE_WRITE
            if run.buf:
                self._runs[run.start] = run
                self._ends[run.start + len(run.buf)] = run.start
            while len(self._runs) > self.max_open:  # evict the run touched least recently
                oldest = self._runs.pop(next(iter(self._runs)))
                del self._ends[oldest.start + len(oldest.buf)]
                full.append((oldest.start, bytes(oldest.buf)))
        for offset, page in full:
            self._submit(offset, page)

    def _submit(self, offset: int, page: bytes) -> None:
        self._pool.submit(lambda: self._put(page, offset))

    def _put(self, page: bytes, offset: int) -> None:
        try:
            self.blob.upload_page(page, offset=offset, length=len(page))
        except AzureError as exc:
            raise TargetError(
                f"Put Page {offset}+{len(page)} to {self.name} failed: {exc}", blob=self.name
            ) from exc
        with self._lock:
            self.pages_written += 1
            self.bytes_sent += len(page)
