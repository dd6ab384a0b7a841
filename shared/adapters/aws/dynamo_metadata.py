"""MetadataStore on one DynamoDB table through pynamodb.

Item layout (one item per record, every kind in one table)::

    pk       S   "<kind>#<id>"            table hash key (get = one GetItem)
    sk       S   "r"                      table range key (room for sub-items later)
    kind     S   "<kind>"                 hash key of GSI by_kind
    created  S   "<created_at>#<id>"      range key of every GSI: fixed-width UTC text, so
                                          string order is (created_at, id) order
    revision N                            optimistic-concurrency counter
    doc      S   the record as JSON (revision included)
    a1..a3   S   "<kind>#<attr>=<value>"  the record's ``indexed`` attributes by position;
                                          hash keys of GSIs by_a1..by_a3 (absent when the
                                          value is None, so those indexes stay sparse)
    expires  N   epoch seconds            the table's TTL attribute: written only for kinds
                                          whose ``expires_field`` names one (e.g. login
                                          throttle counters); DynamoDB deletes the item
                                          some time after it passes

All GSIs project ALL attributes, so a query page is one Query call per DynamoDB page and
never a second read. ``query`` uses the GSI of the first ``where`` attribute; the others
become a FilterExpression on their ``aN``. ``after``/``before`` and the cursor become a
key condition on ``created``: the cursor is the last returned item's ``[created_at, id]``
(the same opaque format as the SQLite adapter), and the next page starts strictly after
it — no LastEvaluatedKey is carried, so pages are exact even when DynamoDB pages and ours
do not line up. A query reads one item past ``limit`` to know whether a next page exists.

Consistency: ``get`` is a strongly consistent read; ``query`` reads GSIs, which DynamoDB
keeps eventually consistent (a record created a moment ago may not be listed yet).

``create`` is a PutItem conditioned on ``attribute_not_exists(pk)``; ``update`` and
conditional ``delete`` are conditioned on ``revision = :expected``, so of two writers
racing on one revision exactly one wins. On a failed condition one consistent GetItem
tells :class:`ConflictError` from :class:`NotFoundError`.

Errors: throttling, 5xx and connection failures raise :class:`TransientStoreError`;
refused credentials :class:`StoreAccessError`; a request DynamoDB rejects (e.g. an item
over 400 KB) :class:`InvalidInputError`; anything else :class:`StoreError`. The SDK error
is chained as ``__cause__``. botocore keeps one quick retry; retry policy is a wrapper's job.

The table name is configuration, so the pynamodb model is built per table
(:func:`item_model`). :meth:`DynamoMetadataStore.create_table` creates the table
(on-demand billing) for tests and deployment tooling; the Lambda runtime never calls it
(CDK owns the production table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.exceptions import DoesNotExist, PynamoDBException, TableDoesNotExist
from pynamodb.expressions.condition import Condition
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from shared.adapters.metadata_encoding import (
    MAX_INDEXED,
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

SORT_KEY = "r"

_CONDITION_FAILED = "ConditionalCheckFailedException"
_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "TransactionConflictException",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_ACCESS_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
    }
)
_INVALID_CODES = frozenset({"ValidationException", "ItemCollectionSizeLimitExceededException"})


class ItemBase(Model):
    """Attributes of every table's item model; :func:`item_model` adds Meta and the GSIs."""

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True, default=SORT_KEY)
    kind = UnicodeAttribute()
    created = UnicodeAttribute()
    revision = NumberAttribute()
    doc = UnicodeAttribute()
    a1 = UnicodeAttribute(null=True)
    a2 = UnicodeAttribute(null=True)
    a3 = UnicodeAttribute(null=True)
    expires = TTLAttribute(null=True)


#: the item attribute the table's TTL is configured on (cdk/constructs/metadata_table.py)
TTL_ATTRIBUTE = "expires"


def item_model(
    table_name: str, *, region: str | None = None, host: str | None = None
) -> tuple[type[ItemBase], GlobalSecondaryIndex[Any], list[GlobalSecondaryIndex[Any]]]:
    """A pynamodb model bound to ``table_name``: ``(model, by_kind index, [by_a1, by_a2, by_a3])``.

    A fresh class per call, so its cached connection belongs to the caller's store.
    """
    _table, _region, _host = table_name, region, host

    class ByKind(GlobalSecondaryIndex[Any]):
        class Meta:
            index_name = "by_kind"
            projection = AllProjection()

        kind = UnicodeAttribute(hash_key=True)
        created = UnicodeAttribute(range_key=True)

    class ByA1(GlobalSecondaryIndex[Any]):
        class Meta:
            index_name = "by_a1"
            projection = AllProjection()

        a1 = UnicodeAttribute(hash_key=True)
        created = UnicodeAttribute(range_key=True)

    class ByA2(GlobalSecondaryIndex[Any]):
        class Meta:
            index_name = "by_a2"
            projection = AllProjection()

        a2 = UnicodeAttribute(hash_key=True)
        created = UnicodeAttribute(range_key=True)

    class ByA3(GlobalSecondaryIndex[Any]):
        class Meta:
            index_name = "by_a3"
            projection = AllProjection()

        a3 = UnicodeAttribute(hash_key=True)
        created = UnicodeAttribute(range_key=True)

    class Item(ItemBase):
        class Meta:
            table_name = _table
            region = _region
            host = _host
            billing_mode = "PAY_PER_REQUEST"
            max_retry_attempts = 1
            connect_timeout_seconds = 5
            read_timeout_seconds = 10

        by_kind = ByKind()
        by_a1 = ByA1()
        by_a2 = ByA2()
        by_a3 = ByA3()

    return Item, Item.by_kind, [Item.by_a1, Item.by_a2, Item.by_a3]


def _codes(exc: BaseException) -> tuple[str | None, int | None]:
    """The DynamoDB error code and HTTP status found along ``exc``'s cause chain."""
    code: str | None = None
    status: int | None = None
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientError):
            code = code or seen.response.get("Error", {}).get("Code")
            status = status or seen.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        seen = getattr(seen, "cause", None) or seen.__cause__
    return code, status


def _has_connection_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BotoCoreError):
            return True
        seen = getattr(seen, "cause", None) or seen.__cause__
    return False


class DynamoMetadataStore:
    """The MetadataStore port on DynamoDB table ``table_name`` (see the module docstring).

    ``region``/``host`` default to the environment (``host`` is an endpoint URL, e.g. for
    dynalite). ``clock`` gives ``updated_at`` on update.
    """

    def __init__(
        self,
        table_name: str,
        *,
        region: str | None = None,
        host: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.table_name = table_name
        self._clock = clock
        self._model, self._by_kind, self._by_attr = item_model(table_name, region=region, host=host)

    @classmethod
    def create_table(
        cls, table_name: str, *, region: str | None = None, host: str | None = None, wait: bool = True
    ) -> DynamoMetadataStore:
        """Create the table (on-demand billing, all four GSIs, TTL on ``expires`` where the endpoint
        supports it: some local emulators do not) unless it exists; return a store on it."""
        store = cls(table_name, region=region, host=host)
        with store._errors("create table"):
            if not store._model.exists():
                store._model.create_table(
                    wait=wait, billing_mode="PAY_PER_REQUEST", ignore_update_ttl_errors=True
                )
        return store

    # --- plumbing -----------------------------------------------------------------------
    @contextmanager
    def _errors(self, action: str, **fields: object) -> Iterator[None]:
        try:
            yield
        except (PynamoDBException, ClientError, BotoCoreError) as exc:
            raise self._translate(exc, action, **fields) from exc

    def _translate(self, exc: BaseException, action: str, **fields: object) -> Exception:
        code, status = _codes(exc)
        where = f"DynamoDB table {self.table_name!r} ({action})"
        if isinstance(exc, TableDoesNotExist) or code == "ResourceNotFoundException":
            return StoreError(f"{where}: the table does not exist", code=code, **fields)
        if code in _TRANSIENT_CODES or (status is not None and status >= 500):
            return TransientStoreError(f"{where} failed, worth retrying: {code}", code=code, **fields)
        if code in _ACCESS_CODES or status in (401, 403):
            return StoreAccessError(f"{where}: access refused: {code}", code=code, **fields)
        if code in _INVALID_CODES:
            return InvalidInputError(f"{where} rejected the request: {exc}", code=code, **fields)
        if code is None and _has_connection_failure(exc):
            return TransientStoreError(f"{where} could not be reached: {exc}", **fields)
        return StoreError(f"{where} failed: {exc}", code=code, **fields)

    def _item(self, record: Record) -> ItemBase:
        attrs = indexed_attributes(type(record))
        data = record.model_dump(mode="json")
        keyed: list[str | None] = [None] * MAX_INDEXED
        for position, name in enumerate(attrs):
            value = index_value(data.get(name))
            keyed[position] = None if value is None else f"{record.kind}#{name}={value}"
        return self._model(
            f"{record.kind}#{record.id}",
            SORT_KEY,
            kind=record.kind,
            created=f"{timestamp(record.created_at)}#{record.id}",
            revision=record.revision,
            doc=record.model_dump_json(),
            a1=keyed[0],
            a2=keyed[1],
            a3=keyed[2],
            expires=self._expiry(record),
        )

    @staticmethod
    def _expiry(record: Record) -> datetime | None:
        name = type(record).expires_field
        value = getattr(record, name) if name else None
        return datetime.fromtimestamp(int(value), UTC) if value else None

    def _current_revision(self, kind: str, record_id: str) -> int | None:
        with self._errors("get", kind=kind, id=record_id):
            try:
                item = self._model.get(
                    f"{kind}#{record_id}", SORT_KEY, consistent_read=True, attributes_to_get=["revision"]
                )
            except DoesNotExist:
                return None
        return int(item.revision)

    def _condition_failed(self, kind: str, record_id: str, expected: int | None) -> Exception:
        current = self._current_revision(kind, record_id)
        if current is None:
            return NotFoundError(f"{kind} {record_id} not found", kind=kind, id=record_id)
        return ConflictError(
            f"{kind} {record_id} changed since it was read (revision {expected}, now {current})",
            kind=kind,
            id=record_id,
            revision=expected,
            current=current,
        )

    # --- the port -------------------------------------------------------------------------
    def create(self, record: R) -> R:
        stored = record.model_copy(update={"revision": 1})
        item = self._item(stored)
        with self._errors("create", kind=record.kind, id=record.id):
            try:
                item.save(condition=self._model.pk.does_not_exist())
            except PynamoDBException as exc:
                if exc.cause_response_code == _CONDITION_FAILED:
                    raise ConflictError(
                        f"{record.kind} {record.id} already exists", kind=record.kind, id=record.id
                    ) from exc
                raise
        return stored

    def get(self, kind: type[R], record_id: str) -> R:
        with self._errors("get", kind=kind.kind, id=record_id):
            try:
                item = self._model.get(f"{kind.kind}#{record_id}", SORT_KEY, consistent_read=True)
            except DoesNotExist:
                raise NotFoundError(
                    f"{kind.kind} {record_id} not found", kind=kind.kind, id=record_id
                ) from None
        return kind.model_validate_json(item.doc)

    def update(self, record: R) -> R:
        stored = record.model_copy(update={"revision": record.revision + 1, "updated_at": self._clock()})
        item = self._item(stored)
        failed = False
        with self._errors("update", kind=record.kind, id=record.id):
            try:
                item.save(condition=self._model.revision == record.revision)
            except PynamoDBException as exc:
                if exc.cause_response_code != _CONDITION_FAILED:
                    raise
                failed = True
        if failed:
            raise self._condition_failed(record.kind, record.id, record.revision)
        return stored

    def delete(self, kind: type[R], record_id: str, *, revision: int | None = None) -> None:
        item = self._model(f"{kind.kind}#{record_id}", SORT_KEY)
        condition = self._model.pk.exists() if revision is None else self._model.revision == revision
        failed = False
        with self._errors("delete", kind=kind.kind, id=record_id):
            try:
                item.delete(condition=condition)
            except PynamoDBException as exc:
                if exc.cause_response_code != _CONDITION_FAILED:
                    raise
                failed = True
        if failed:
            raise self._condition_failed(kind.kind, record_id, revision)

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
        assert len(self._by_attr) == MAX_INDEXED

        # the index: the first filter's GSI, or by_kind; the other filters become a FilterExpression
        index: GlobalSecondaryIndex[Any] = self._by_kind
        hash_value = kind.kind
        filter_condition: Condition | None = None
        for n, (position, value) in enumerate(filters):
            keyed = f"{kind.kind}#{attrs[position]}={value}"
            if n == 0:
                index, hash_value = self._by_attr[position], keyed
            else:
                term = getattr(self._model, f"a{position + 1}") == keyed
                filter_condition = term if filter_condition is None else filter_condition & term

        # the range on `created`: lo is (value, inclusive), hi is always exclusive
        lo: tuple[str, bool] | None = (timestamp(after), True) if after is not None else None
        hi: str | None = timestamp(before) if before is not None else None
        if cursor is not None:
            at, last_id = decode_cursor(cursor)
            last = f"{at}#{last_id}"
            if descending:
                hi = last if hi is None else min(hi, last)
            elif lo is None or last >= lo[0]:
                lo = (last, False)
        if lo is not None and hi is not None and lo[0] >= hi:
            return Page(items=[])
        created = self._model.created
        range_condition: Condition | None = None
        if lo is not None and hi is not None:
            range_condition = created.between(lo[0], hi)  # inclusive both ends: edges dropped below
        elif lo is not None:
            range_condition = created >= lo[0] if lo[1] else created > lo[0]
        elif hi is not None:
            range_condition = created < hi

        page_size = min(1000, (limit + 3) * (4 if filter_condition is not None else 1))
        found: list[ItemBase] = []
        with self._errors("query", kind=kind.kind):
            results = index.query(
                hash_value,
                range_key_condition=range_condition,
                filter_condition=filter_condition,
                scan_index_forward=not descending,
                page_size=page_size,
            )
            for item in results:
                if (lo is not None and not lo[1] and item.created == lo[0]) or (
                    hi is not None and item.created >= hi
                ):
                    continue
                found.append(item)
                if len(found) > limit:  # one more tells whether another page exists
                    break
        more = len(found) > limit
        found = found[:limit]
        items = [kind.model_validate_json(item.doc) for item in found]
        next_cursor = None
        if more:
            at, _, last_id = found[-1].created.partition("#")
            next_cursor = encode_cursor(at, last_id)
        return Page(items=items, next_cursor=next_cursor)


if TYPE_CHECKING:  # mypy proves the adapter implements the port
    _conforms: MetadataStore = DynamoMetadataStore("table")
