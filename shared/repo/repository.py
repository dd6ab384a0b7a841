"""An open repository: config, keys, index, pages, points and locks over an ObjectStore.

This is the only module that names object keys (FORMAT.md §1). It reads and writes whole
objects; the replication pipeline and recovery reads drive it from many threads, so
every method here is thread-safe.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

from shared.errors import (
    CorruptObjectError,
    InvalidInputError,
    ObjectNotFoundError,
    PointNotFoundError,
    RepositoryExistsError,
    RepositoryNotFoundError,
    UnsupportedFormatError,
    WrongPasswordError,
)
from shared.ports.object_store import ObjectStore
from shared.repo import blobs, codec, locks
from shared.repo.codec import IndexEntry, ObjectType
from shared.repo.keys import ZERO_ID, KdfParams, MasterKey, unwrap_master_key, wrap_master_key
from shared.repo.object_cache import ObjectCache
from shared.repo.points import POINT_ID_RE, PointRecord, check_disk_id
from shared.repo.reads import coalesce

FORMAT_NAME = "lifeboat-repository"
#: Version 2 adds index generations and shards (FORMAT.md §6.2); version 1 repositories
#: open as they are and become version 2 when their index is first compacted.
REPOSITORY_VERSION = 2
READABLE_VERSIONS = (1, 2)
DELTA_RE = re.compile(r"^index/[0-9a-f]{32}$")

PassphraseSource = Callable[[], str]
T = TypeVar("T")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pack_key(pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"data/{h[:2]}/{h}"


def page_key(page_id: str) -> str:
    return f"pages/{page_id[:2]}/{page_id}"


def point_key(disk_id: str, point_id: str) -> str:
    return f"points/{disk_id}/{point_id}"


def shard_key(shard_id: str) -> str:
    return f"shards/{shard_id[:2]}/{shard_id}"


def generation_key(generation_id: str) -> str:
    return f"generations/{generation_id}"


class Repository:
    """A repository opened with its key. Create with :meth:`init` or :meth:`open`."""

    def __init__(self, store: ObjectStore, key: MasterKey, config: dict) -> None:
        self.store = store
        self.key = key
        self.config = config
        #: node-local cache of immutable index objects; set by the composition root
        self.cache: ObjectCache | None = None

    # --- life cycle ---------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        store: ObjectStore,
        passphrase: str | None,
        *,
        kdf: KdfParams | None = None,
    ) -> Repository:
        """Create a repository; ``passphrase=None`` makes an unencrypted one."""
        if store.stat("config") is not None:
            raise RepositoryExistsError(f"a repository already exists at {store.describe()}")
        now = _iso(_utcnow())
        key = MasterKey.generate() if passphrase is not None else MasterKey.none()
        config = {
            "format": FORMAT_NAME,
            "version": REPOSITORY_VERSION,
            "id": os.urandom(16).hex(),
            "created": now,
            "encryption": "aes-256-gcm" if passphrase is not None else "none",
        }
        if passphrase is not None:
            if not passphrase:
                raise InvalidInputError("the passphrase must not be empty")
            wrapped = wrap_master_key(key, passphrase, kdf or KdfParams(), now)
            store.put(f"keys/{os.urandom(16).hex()}", wrapped)
        store.put("config", json.dumps(config, indent=1).encode())
        return cls(store, key, config)

    @classmethod
    def read_config(cls, store: ObjectStore) -> dict:
        try:
            raw = store.get("config")
        except ObjectNotFoundError as exc:
            raise RepositoryNotFoundError(f"no repository at {store.describe()} (no config object)") from exc
        try:
            config = json.loads(raw)
        except ValueError as exc:
            raise CorruptObjectError("config: not valid JSON", key="config") from exc
        if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
            raise CorruptObjectError("config: not a Lifeboat repository config", key="config")
        if config.get("version") not in READABLE_VERSIONS:
            raise UnsupportedFormatError(
                f"repository format version {config.get('version')} is not supported by this build"
            )
        return config

    @classmethod
    def open(cls, store: ObjectStore, passphrase: PassphraseSource) -> Repository:
        """Open a repository, asking ``passphrase()`` only when it is encrypted."""
        config = cls.read_config(store)
        if config.get("encryption") == "none":
            return cls(store, MasterKey.none(), config)
        secret = passphrase()
        key_files = sorted(info.key for info in store.list("keys/"))
        if not key_files:
            raise CorruptObjectError("repository is encrypted but has no key files", key="keys/")
        for name in key_files:
            try:
                key = unwrap_master_key(store.get(name), secret, name=name)
            except WrongPasswordError:
                continue
            return cls(store, key, config)
        raise WrongPasswordError("wrong passphrase: no key file of this repository opens with it")

    def describe(self) -> str:
        return self.store.describe()

    def upgrade(self) -> None:
        """Raise a version 1 repository to version 2 before anything of version 2 is written."""
        if self.config.get("version") == REPOSITORY_VERSION:
            return
        config = {**self.config, "version": REPOSITORY_VERSION}
        self.store.put("config", json.dumps(config, indent=1).encode())
        self.config = config

    def get_immutable(self, key: str, decode: Callable[[bytes], T]) -> T:
        """``decode(bytes of key)`` through the node's cache; a cached copy that fails to
        decode is dropped and fetched again, so the cache is never trusted over the store."""
        cache, repo_id = self.cache, self.config["id"]
        if cache is not None:
            data = cache.get(repo_id, key)
            if data is not None:
                try:
                    return decode(data)
                except CorruptObjectError:
                    cache.discard(repo_id, key)
        data = self.store.get(key)
        value = decode(data)
        if cache is not None:
            cache.put(repo_id, key, data)
        return value

    def put_immutable(self, key: str, data: bytes) -> None:
        """Write an immutable index object, keeping a copy in the node's cache (this node
        reads what it wrote without fetching it back)."""
        self.store.put(key, data)
        if self.cache is not None:
            self.cache.put(self.config["id"], key, data)

    def delete_immutable(self, key: str) -> None:
        self.store.delete(key)
        if self.cache is not None:
            self.cache.discard(self.config["id"], key)

    # --- index (deltas; generations and shards are read through shared.repo.index) ----------
    def index_names(self) -> list[str]:
        """Delta index objects (``index/<32 hex>``), sorted."""
        return sorted(info.key for info in self.store.list("index/") if DELTA_RE.match(info.key))

    def open_index_object(self, name: str) -> codec.IndexTable:
        """A delta, unsealed and read in place (see :class:`codec.IndexTable`)."""
        return self.get_immutable(name, lambda data: codec.open_index(self.key, data, name=name))

    def read_index_object(self, name: str) -> list[tuple[bytes, IndexEntry]]:
        return self.get_immutable(name, lambda data: codec.decode_index(self.key, data, name=name))

    def load_index(self, *, threads: int = 8) -> dict[bytes, IndexEntry]:
        """Every index entry in memory (check, prune, repo info): O(repository).

        Replication and restore use :class:`shared.repo.index.IndexView` instead.
        """
        from shared.repo.index import IndexView

        return IndexView.open(self).load_all(threads=threads)

    def write_index(self, entries: Iterable[tuple[bytes, IndexEntry]]) -> str | None:
        rows = list(entries)
        if not rows:
            return None
        name = f"index/{os.urandom(16).hex()}"
        rows.sort(key=lambda row: row[0])  # sorted: readers bisect it in place (FORMAT.md §6.1)
        self.put_immutable(name, codec.encode_index(self.key, rows))
        return name

    # --- packs and blocks -----------------------------------------------------------------
    def put_pack(self, pack_id: bytes, data: bytes) -> None:
        self.store.put(pack_key(pack_id), data)

    def read_blobs(
        self,
        pack_id: bytes,
        wanted: list[tuple[bytes, IndexEntry]],
        bases: Mapping[bytes, IndexEntry] | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (id, plaintext) for blobs of one pack, reading one coalesced range.

        ``wanted`` entries must all belong to ``pack_id``; a patch among them is applied
        onto its base, read through ``bases`` (the base's index entry). Every block is
        verified.
        """
        name = pack_key(pack_id)
        wanted = sorted(wanted, key=lambda item: item[1].offset)
        start = wanted[0][1].offset
        end = max(e.offset + e.length for _, e in wanted)
        data = self.store.get_range(name, start, end - start)
        needed = {e.base for _, e in wanted if e.base is not None}
        fetched = self._read_bases(needed, bases or {}, name) if needed else {}

        def base(base_id: bytes) -> bytes:
            if base_id not in fetched:  # the blob is a patch its index row does not name
                raise CorruptObjectError(f"{name}: a blob's patch base disagrees with the index", key=name)
            return fetched[base_id]

        for block_id, e in wanted:
            blob = data[e.offset - start : e.offset - start + e.length]
            yield block_id, blobs.decode_blob(self.key, block_id, blob, e.raw_length, name=name, base=base)

    def _read_bases(
        self, ids: set[bytes], bases: Mapping[bytes, IndexEntry], name: str
    ) -> dict[bytes, bytes]:
        """The whole blocks that patches of ``name`` need, in coalesced ranged reads."""
        rows = [(base_id, self._base_entry(base_id, bases, name)) for base_id in ids]
        out: dict[bytes, bytes] = {}
        for pack_id, run in coalesce(rows):
            out.update(self.read_blobs(pack_id, run))
        return out

    def _base_entry(self, base_id: bytes, bases: Mapping[bytes, IndexEntry], name: str) -> IndexEntry:
        entry = bases.get(base_id)
        if entry is None:
            raise CorruptObjectError(
                f"{name}: patch base {base_id.hex()} is in no index (run check)", key=name
            )
        if entry.base is not None:
            raise CorruptObjectError(f"{name}: patch base {base_id.hex()} is itself a patch", key=name)
        return entry

    def base_reader(self, bases: Mapping[bytes, IndexEntry], name: str) -> Callable[[bytes], bytes]:
        """``decode_blob``'s ``base`` for patches of ``name``: one ranged read per base."""

        def read_base(base_id: bytes) -> bytes:
            entry = self._base_entry(base_id, bases, name)
            return next(self.read_blobs(entry.pack_id, [(base_id, entry)]))[1]

        return read_base

    # --- pages ----------------------------------------------------------------------------
    def page_id(self, ids: list[bytes]) -> str | None:
        """The name a page of ``ids`` has, or ``None`` for an all-hole page."""
        if all(i == ZERO_ID for i in ids):
            return None
        return self.key.block_id(codec.encode_page_payload(ids)).hex()

    def write_page(self, ids: list[bytes]) -> str | None:
        """Store a page unless it already exists; return its id (``None`` = all holes)."""
        page_id = self.page_id(ids)
        if page_id is None:
            return None
        name = page_key(page_id)
        if self.store.stat(name) is None:
            payload = codec.encode_page_payload(ids)
            self.store.put(name, codec.seal(self.key, ObjectType.PAGE, payload))
        return page_id

    def read_page(self, page_id: str | None, count: int) -> list[bytes]:
        """The ``count`` ids of a page (all holes for ``None``); verified against its name."""
        if page_id is None:
            return [ZERO_ID] * count
        name = page_key(page_id)
        ids = codec.decode_page(self.key, self.store.get(name), name=name, expect_id=bytes.fromhex(page_id))
        if len(ids) != count:
            raise CorruptObjectError(f"{name}: page holds {len(ids)} entries, expected {count}", key=name)
        return ids

    def page_names(self) -> list[str]:
        return [info.key for info in self.store.list("pages/")]

    def block_map(self, point: PointRecord, *, threads: int = 8) -> list[bytes]:
        """Every block id of a point, in disk order (holes are ``ZERO_ID``)."""
        n = point.n_blocks
        per = point.page_entries
        counts = [min(per, n - i * per) for i in range(len(point.pages))]
        if sum(counts) != n or any(c <= 0 for c in counts):
            raise CorruptObjectError(
                f"{point_key(point.disk_id, point.id)}: page list does not cover the disk",
                key=point_key(point.disk_id, point.id),
            )
        with ThreadPoolExecutor(threads) as pool:
            pages = list(pool.map(self.read_page, point.pages, counts))
        return [block_id for page in pages for block_id in page]

    # --- points ---------------------------------------------------------------------------
    def write_point(self, point: PointRecord) -> None:
        """The commit of a replication: after this put the point exists."""
        payload = point.model_dump_json().encode()
        self.store.put(point_key(point.disk_id, point.id), codec.seal(self.key, ObjectType.POINT, payload))

    def read_point(self, disk_id: str, point_id: str) -> PointRecord:
        name = point_key(check_disk_id(disk_id), point_id)
        try:
            data = self.store.get(name)
        except ObjectNotFoundError as exc:
            raise PointNotFoundError(f"no point {point_id} for disk {disk_id}", disk_id=disk_id) from exc
        point = codec.unseal_model(self.key, ObjectType.POINT, data, PointRecord, name=name)
        if point.id != point_id or point.disk_id != disk_id:
            raise CorruptObjectError(f"{name}: record names another point", key=name)
        return point

    def point_names(self, disk_id: str | None = None) -> list[tuple[str, str]]:
        """(disk id, point id) of every point, oldest first within a disk."""
        prefix = f"points/{check_disk_id(disk_id)}/" if disk_id else "points/"
        out = []
        for info in self.store.list(prefix):
            parts = info.key.split("/")
            if len(parts) == 3 and POINT_ID_RE.match(parts[2]):
                out.append((parts[1], parts[2]))
        return sorted(out)

    def list_points(self, disk_id: str | None = None, *, threads: int = 8) -> list[PointRecord]:
        names = self.point_names(disk_id)
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda n: self.read_point(*n), names))

    def resolve_point(self, disk_id: str, point: str = "latest") -> PointRecord:
        """``latest`` or an id (a unique prefix of one is accepted)."""
        names = [p for d, p in self.point_names(disk_id) if d == disk_id]
        if not names:
            raise PointNotFoundError(f"disk {disk_id} has no recovery points", disk_id=disk_id)
        if point == "latest":
            return self.read_point(disk_id, names[-1])
        matches = [p for p in names if p.startswith(point)]
        if len(matches) != 1:
            raise PointNotFoundError(
                f"no point {point!r} for disk {disk_id}"
                if not matches
                else f"point prefix {point!r} is ambiguous",
                disk_id=disk_id,
            )
        return self.read_point(disk_id, matches[0])

    def delete_point(self, disk_id: str, point_id: str) -> None:
        self.store.delete(point_key(check_disk_id(disk_id), point_id))

    # --- locks ----------------------------------------------------------------------------
    @contextmanager
    def lock(
        self, *, exclusive: bool = False, compact: bool = False, now: Callable[[], datetime] = _utcnow
    ) -> Iterator[None]:
        """Hold a repository lock (FORMAT.md §10; conflicts in :mod:`shared.repo.locks`)."""
        kind: locks.LockKind = "exclusive" if exclusive else "compact" if compact else "shared"
        with locks.hold(self.store, kind, now):
            yield

    def remove_locks(self, *, stale_only: bool = True, now: datetime | None = None) -> list[str]:
        """Delete stale locks (or every lock); return the names removed."""
        return locks.remove(self.store, stale_only=stale_only, now=now or _utcnow())
