"""MetadataStore on one Azure Table (Azure Table storage or Azurite) through azure-data-tables.

Azure Tables has no secondary indexes and sorts only by ``(PartitionKey, RowKey)``,
ascending; conditional writes exist only as ETag matches, and an entity-group transaction
is atomic but confined to one partition. So every kind lives in **one partition**
(``PartitionKey = <kind>``) holding, per record, the record row and its ordering rows,
all written by one transaction::

    RowKey                                  what
    id|<id>                                 the record row: get, and the concurrency anchor
                                            (its ETag guards every write of the record)
    a|*|<ts>|<id>                           listing of the kind, ascending (created_at, id)
    d|*|<inv(ts+id)>{                       the same listing, descending
    a|<attr>=<value>|<ts>|<id>              one per ``indexed`` attribute with a non-None value
    d|<attr>=<value>|<inv(ts+id)>{          and its descending twin

``<ts>`` is the fixed-width UTC ``created_at`` of :func:`metadata_encoding.timestamp`, so
string order is ``(created_at, id)`` order. ``inv`` maps each character of the alphabet of
timestamps and ids (``-.0-9:A-Z_a-z``) to its mirror in that alphabet and the ``{``
terminator (above every mapped character) makes a shorter id sort after its extensions:
ascending RowKey order of the ``d|`` rows is descending ``(created_at, id)`` order.
``<value>`` is the index value (as :func:`metadata_encoding.index_value` gives it) with
every character outside ``[A-Za-z0-9._-]`` written ``~<hex of its UTF-8 bytes>`` (keys may
not hold ``/ \\ # ?`` or control characters); values encoding to more than 200 characters
become ``~~<sha256 hex>``. Equality is all an index answers, so hashing is enough.

Every ordering row carries the whole record, so a page is one range query and never a
second read; the rows of one record are ``1 + 2 * (1 + len(kind.indexed))`` (at most 9).
Each row holds: ``revision``; ``docs`` (chunk count) and ``doc0..docN`` (the record's JSON
cut into chunks of at most 32 Ki UTF-16 units, the 64 KiB per-string-property limit);
``x_<attr>`` (the raw index value of each indexed attribute, for filters on a second
``where`` attribute); the record row also ``rows`` (JSON list of its ordering RowKeys,
so update and delete know exactly what to remove). A record whose rows would pass the
1 MiB entity or 4 MiB transaction limits is :class:`InvalidInputError` (in practice
records up to ~400 KB of mostly-ASCII JSON, DynamoDB's item limit, fit).

Writes, each one transaction, so a record and its rows never disagree:

* ``create``: insert (not upsert) of every row; the record row's insert fails when the id
  exists, which fails the transaction: :class:`ConflictError`, exactly one racer wins.
* ``update``: read the record row (revision and ETag); a different revision is a
  conflict at once; otherwise replace the record row *conditioned on that ETag*
  (``MatchConditions.IfNotModified``), delete ordering rows whose key changed and upsert
  the new ones. A writer that got in between changed the ETag, so the transaction fails
  and nothing is written: of two writers racing on one revision exactly one wins.
* ``delete``: the same, deleting every row; the ETag condition makes it conditional.

``query`` reads one ascending RowKey range: the prefix ``a|<set>|`` (or ``d|<set>|`` for
``descending``) where ``<set>`` is ``*`` or the first ``where`` attribute's ``attr=value``;
further ``where`` attributes become an OData filter on their ``x_<attr>`` properties;
``after``/``before`` and the cursor become RowKey bounds. The cursor is the last returned
item's ``[created_at, id]`` (the format every adapter uses), so pages are exact whatever
Azure's own paging does. One item past ``limit`` is read to know whether more follow.
All reads are strongly consistent (Azure Tables has no eventual consistency in one region).

Errors: throttling (``ServerBusy``, 429, 503), other 5xx and connection failures raise
:class:`TransientStoreError`; refused credentials :class:`StoreAccessError`; a missing
table :class:`StoreError`; a request the service rejects as malformed
:class:`InvalidInputError`. The SDK error is chained as ``__cause__``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode

from shared.adapters.azure.error_codes import ACCESS_CODES
from shared.adapters.metadata_encoding import (
    check_limit,
    check_where,
    decode_cursor,
    encode_cursor,
    index_value,
    indexed_attributes,
    timestamp,
)
from shared.domain.base import Record, utcnow
from shared.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreAccessError,
    StoreError,
    TransientStoreError,
)
from shared.ports.metadata_store import MetadataStore, Page

R = TypeVar("R", bound=Record)

#: Characters of timestamps and ids, in code-point order; ``inv`` mirrors them.
_ALPHABET = "-.0123456789:ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
_INVERT = str.maketrans(_ALPHABET, _ALPHABET[::-1])
_TERMINATOR = "{"  # above every alphabet character
_ABOVE = "|"  # above the terminator: "every key starting with this prefix" ends below prefix + _ABOVE
_SAFE_VALUE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_MAX_VALUE_KEY = 200
_CHUNK_UNITS = 32 * 1024 - 1  # UTF-16 code units per string property (64 KiB)
_MAX_ENTITY_BYTES = 1024 * 1024 - 16 * 1024  # 1 MiB minus headroom for system properties
_MAX_BATCH_BYTES = 4 * 1024 * 1024 - 128 * 1024  # 4 MiB minus headroom for the multipart framing
_CONFLICT_RETRIES = 8

_TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError", "TableBeingDeleted"})
_INVALID_CODES = frozenset(
    {
        "EntityTooLarge",
        "PropertyValueTooLarge",
        "RequestBodyTooLarge",
        "InvalidInput",
        "InvalidValueType",
        "OutOfRangeInput",
        "KeyValueTooLarge",
        "TooManyProperties",
        "InvalidDuplicateRow",
    }
)
_TABLE_MISSING = frozenset({"TableNotFound"})
_ROW_MISSING = frozenset({"ResourceNotFound", "EntityNotFound"})
_EXISTS = frozenset({"EntityAlreadyExists"})
_MODIFIED = frozenset({"UpdateConditionNotSatisfied", "ConditionNotMet"})


def _code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    if isinstance(code, Enum):
        code = code.value
    return str(code or "")


def service_from_connection_string(connection_string: str) -> TableServiceClient:
    """A TableServiceClient for ``connection_string`` (one quick SDK retry; retries are a wrapper's job)."""
    return TableServiceClient.from_connection_string(
        connection_string, retry_total=1, connection_timeout=10, read_timeout=30
    )


def _inverted(ts: str, record_id: str) -> str:
    return (ts + record_id).translate(_INVERT) + _TERMINATOR


def _value_key(value: str) -> str:
    out = []
    for ch in value:
        if ch in _SAFE_VALUE:
            out.append(ch)
        else:
            out.append("".join(f"~{b:02x}" for b in ch.encode("utf-8")))
    key = "".join(out)
    if len(key) > _MAX_VALUE_KEY:
        key = "~~" + hashlib.sha256(value.encode("utf-8")).hexdigest()
    return key


def _chunks(text: str) -> list[str]:
    """``text`` cut into pieces of at most :data:`_CHUNK_UNITS` UTF-16 code units, never inside a character."""
    pieces: list[str] = []
    start = units = 0
    for i, ch in enumerate(text):
        width = 2 if ord(ch) > 0xFFFF else 1
        if units + width > _CHUNK_UNITS:
            pieces.append(text[start:i])
            start, units = i, 0
        units += width
    pieces.append(text[start:])
    return pieces


def _utf16_bytes(text: str) -> int:
    return len(text.encode("utf-16-le"))


def _entity_size(entity: Mapping[str, Any]) -> int:
    """Azure's documented size estimate of an entity (strings count as UTF-16)."""
    size = 4
    for name, value in entity.items():
        size += 8 + _utf16_bytes(name)
        size += 4 + _utf16_bytes(value) if isinstance(value, str) else 8
    return size


class AzureTableMetadataStore:
    """The MetadataStore port on Azure Table ``table_name`` (see the module docstring).

    ``table_service_or_connection_string`` is a ``TableServiceClient`` or a storage
    connection string. ``clock`` gives ``updated_at`` on update. The constructor does no
    I/O; :meth:`create_table` creates the table (tests, embedded setups, deployment tools).
    """

    def __init__(
        self,
        table_service_or_connection_string: TableServiceClient | str,
        table_name: str,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if not table_name:
            raise InvalidInputError("Azure table name must not be empty")
        service = table_service_or_connection_string
        if isinstance(service, str):
            service = service_from_connection_string(service)
        self.table_name = table_name
        self._service: TableServiceClient = service
        self._table: TableClient = service.get_table_client(table_name)
        self._clock = clock

    @classmethod
    def create_table(
        cls,
        table_service_or_connection_string: TableServiceClient | str,
        table_name: str,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> AzureTableMetadataStore:
        """Create the table unless it exists; return a store on it."""
        store = cls(table_service_or_connection_string, table_name, clock=clock)
        with store._errors("create table"):
            store._service.create_table_if_not_exists(table_name)
        return store

    # --- plumbing -----------------------------------------------------------------------
    @contextmanager
    def _errors(self, action: str, **fields: object) -> Iterator[None]:
        try:
            yield
        except AzureError as exc:
            raise self._translate(exc, action, **fields) from exc

    def _translate(self, exc: AzureError, action: str, **fields: object) -> Exception:
        code = _code(exc)
        status = int(getattr(exc, "status_code", None) or 0)
        where = f"Azure table {self.table_name!r} ({action})"
        fields = {**fields, "code": code, "status": status}
        if code in _TABLE_MISSING:
            return StoreError(f"{where}: the table does not exist", **fields)
        if isinstance(exc, ClientAuthenticationError) or code in ACCESS_CODES or status in (401, 403):
            return StoreAccessError(f"{where}: access refused: {code or status}", **fields)
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return TransientStoreError(f"{where} could not be reached: {type(exc).__name__}", **fields)
        if code in _TRANSIENT_CODES or status in (408, 429) or status >= 500:
            return TransientStoreError(f"{where} failed, worth retrying: {code or status}", **fields)
        if code in _INVALID_CODES or status == 413:
            return InvalidInputError(f"{where} rejected the request: {code or status}", **fields)
        return StoreError(f"{where} failed: {code or status or type(exc).__name__}", **fields)

    def _rows(self, record: Record) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """``(record row, ordering rows)`` of ``record``."""
        kind = record.kind
        attrs = indexed_attributes(type(record))
        data = record.model_dump(mode="json")
        doc = record.model_dump_json()
        body: dict[str, Any] = {"revision": record.revision}
        pieces = _chunks(doc)
        body["docs"] = len(pieces)
        for n, piece in enumerate(pieces):
            body[f"doc{n}"] = piece
        sets = ["*"]
        for name in attrs:
            value = index_value(data.get(name))
            if value is not None:
                body[f"x_{name}"] = value
                sets.append(f"{name}={_value_key(value)}")
        ts = timestamp(record.created_at)
        keys: list[str] = []
        for s in sets:
            keys.append(f"a|{s}|{ts}|{record.id}")
            keys.append(f"d|{s}|{_inverted(ts, record.id)}")
        rows = [{"PartitionKey": kind, "RowKey": key, **body} for key in keys]
        main = {"PartitionKey": kind, "RowKey": f"id|{record.id}", **body, "rows": json.dumps(keys)}
        total = 0
        for entity in (main, *rows):
            size = _entity_size(entity)
            if size > _MAX_ENTITY_BYTES:
                raise InvalidInputError(
                    f"{kind} {record.id} is too large for Azure Tables ({size} bytes per entity, limit 1 MiB)",
                    kind=kind,
                    id=record.id,
                    size=size,
                )
            total += len(json.dumps(entity).encode("utf-8")) + 512
        if total > _MAX_BATCH_BYTES:
            raise InvalidInputError(
                f"{kind} {record.id} is too large for Azure Tables: its {len(rows) + 1} rows take {total}"
                " bytes in one transaction (limit 4 MiB)",
                kind=kind,
                id=record.id,
                size=total,
            )
        return main, rows

    @staticmethod
    def _doc(entity: Mapping[str, Any]) -> str:
        return "".join(str(entity[f"doc{n}"]) for n in range(int(entity["docs"])))

    def _read_main(self, kind: str, record_id: str) -> dict[str, Any] | None:
        with self._errors("get", kind=kind, id=record_id):
            try:
                entity = self._table.get_entity(kind, f"id|{record_id}")
            except ResourceNotFoundError as exc:
                if _code(exc) in _TABLE_MISSING:
                    raise
                return None
        out = dict(entity)
        out["__etag"] = entity.metadata["etag"]
        return out

    def _not_found(self, kind: str, record_id: str) -> NotFoundError:
        return NotFoundError(f"{kind} {record_id} not found", kind=kind, id=record_id)

    def _conflict(self, kind: str, record_id: str, expected: int | None, current: int) -> ConflictError:
        return ConflictError(
            f"{kind} {record_id} changed since it was read (revision {expected}, now {current})",
            kind=kind,
            id=record_id,
            revision=expected,
            current=current,
        )

    def _submit(self, operations: list[Any], action: str, kind: str, record_id: str) -> str | None:
        """Run one transaction; return ``"exists"``/``"modified"``/``"missing"`` when a condition failed."""
        try:
            self._table.submit_transaction(operations)
        except (
            TableTransactionError,
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        ) as exc:
            code = _code(exc)
            if code in _EXISTS:
                return "exists"
            if code in _MODIFIED:
                return "modified"
            if code in _ROW_MISSING:
                return "missing"
            raise self._translate(exc, action, kind=kind, id=record_id) from exc
        except AzureError as exc:
            raise self._translate(exc, action, kind=kind, id=record_id) from exc
        return None

    # --- the port -------------------------------------------------------------------------
    def create(self, record: R) -> R:
        stored = record.model_copy(update={"revision": 1})
        main, rows = self._rows(stored)
        operations: list[Any] = [("create", main)] + [("create", row) for row in rows]
        if self._submit(operations, "create", record.kind, record.id) is not None:
            raise ConflictError(f"{record.kind} {record.id} already exists", kind=record.kind, id=record.id)
        return stored

    def get(self, kind: type[R], record_id: str) -> R:
        entity = self._read_main(kind.kind, record_id)
        if entity is None:
            raise self._not_found(kind.kind, record_id)
        return kind.model_validate_json(self._doc(entity))

    def update(self, record: R) -> R:
        stored = record.model_copy(update={"revision": record.revision + 1, "updated_at": self._clock()})
        main, rows = self._rows(stored)
        new_keys = {row["RowKey"] for row in rows}
        for _ in range(_CONFLICT_RETRIES):
            current = self._read_main(record.kind, record.id)
            if current is None:
                raise self._not_found(record.kind, record.id)
            if int(current["revision"]) != record.revision:
                raise self._conflict(record.kind, record.id, record.revision, int(current["revision"]))
            condition = {"etag": current["__etag"], "match_condition": MatchConditions.IfNotModified}
            operations: list[Any] = [("update", main, {"mode": UpdateMode.REPLACE, **condition})]
            operations += [
                ("delete", {"PartitionKey": record.kind, "RowKey": key})
                for key in json.loads(current["rows"])
                if key not in new_keys
            ]
            operations += [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in rows]
            failed = self._submit(operations, "update", record.kind, record.id)
            if failed is None:
                return stored
            # the ETag moved (or a row vanished): someone wrote in between; re-read and decide
        raise TransientStoreError(
            f"{record.kind} {record.id} kept changing during update", kind=record.kind, id=record.id
        )

    def delete(self, kind: type[R], record_id: str, *, revision: int | None = None) -> None:
        for _ in range(_CONFLICT_RETRIES):
            current = self._read_main(kind.kind, record_id)
            if current is None:
                raise self._not_found(kind.kind, record_id)
            if revision is not None and int(current["revision"]) != revision:
                raise self._conflict(kind.kind, record_id, revision, int(current["revision"]))
            condition = {"etag": current["__etag"], "match_condition": MatchConditions.IfNotModified}
            operations: list[Any] = [
                ("delete", {"PartitionKey": kind.kind, "RowKey": f"id|{record_id}"}, condition)
            ]
            operations += [
                ("delete", {"PartitionKey": kind.kind, "RowKey": key}) for key in json.loads(current["rows"])
            ]
            if self._submit(operations, "delete", kind.kind, record_id) is None:
                return
        raise TransientStoreError(
            f"{kind.kind} {record_id} kept changing during delete", kind=kind.kind, id=record_id
        )

    def query(
        self,
        kind: type[R],
        *,
        where: Mapping[str, str] | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        descending: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[R]:
        check_limit(limit)
        filters = check_where(kind, where)
        attrs = indexed_attributes(kind)
        row_set = "*"
        params: dict[str, Any] = {"pk": kind.kind}
        clauses = ["PartitionKey eq @pk"]
        for n, (position, value) in enumerate(filters):
            name = attrs[position]
            if n == 0:
                row_set = f"{name}={_value_key(value)}"
            # the first attribute is in the key already; filtering on it too guards hashed keys
            clauses.append(f"x_{name} eq @x{n}")
            params[f"x{n}"] = value

        prefix = f"{'d' if descending else 'a'}|{row_set}|"
        lo, lo_inclusive, hi = prefix, True, prefix[:-1] + "}"  # '}' follows '|'
        after_ts = timestamp(after) if after is not None else None
        before_ts = timestamp(before) if before is not None else None
        if after_ts is not None and before_ts is not None and after_ts >= before_ts:
            return Page(items=[])
        if descending:
            if before_ts is not None:
                lo = prefix + before_ts.translate(_INVERT) + _ABOVE
            if after_ts is not None:
                hi = prefix + after_ts.translate(_INVERT) + _ABOVE
        else:
            if after_ts is not None:
                lo = prefix + after_ts
            if before_ts is not None:
                hi = prefix + before_ts
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            last = prefix + (_inverted(at, last_id) if descending else f"{at}|{last_id}")
            if last >= lo:
                lo, lo_inclusive = last, False
        if lo >= hi:
            return Page(items=[])
        clauses.append("RowKey ge @lo" if lo_inclusive else "RowKey gt @lo")
        clauses.append("RowKey lt @hi")
        params.update(lo=lo, hi=hi)

        found: list[dict[str, Any]] = []
        with self._errors("query", kind=kind.kind):
            results = self._table.query_entities(
                " and ".join(clauses), parameters=params, results_per_page=min(1000, limit + 1)
            )
            for entity in results:
                found.append(entity)
                if len(found) > limit:  # one more tells whether another page exists
                    break
        more = len(found) > limit
        items = [kind.model_validate_json(self._doc(entity)) for entity in found[:limit]]
        next_cursor = None
        if more:
            last_item = items[-1]
            next_cursor = encode_cursor(timestamp(last_item.created_at), last_item.id)
        return Page(items=items, next_cursor=next_cursor)


if TYPE_CHECKING:  # mypy proves the adapter implements the port
    _conforms: MetadataStore = AzureTableMetadataStore("UseDevelopmentStorage=true", "table")
