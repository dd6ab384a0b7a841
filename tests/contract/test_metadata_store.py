"""The MetadataStore contract (see shared/ports/metadata_store.py), run against every adapter.

Backends: ``sqlite`` (a file in tmp_path), ``dynamodb`` (moto's in-process DynamoDB,
through pynamodb) and ``azure`` (Azure Table storage on Azurite, started once per session
by ``tests/servers.py``). Each test gets a fresh database/table; ``make_metadata_store()``
opens a second store on the same one.

moto checks a write's condition and stores the item in two Python steps, so two threads
can both pass the same condition — real DynamoDB evaluates it atomically per item. The
fixture serialises moto's item writes to give it DynamoDB's semantics; the racing tests
then check that the adapter relies on conditional writes (not read-then-write).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.domain.audit import Alert, AuditEvent, IdempotencyRecord
from shared.domain.base import Record
from shared.domain.failback import Failback, FailbackStep, ReverseDisk, ReverseMachine
from shared.domain.hardware import Firmware
from shared.domain.identity import ApiToken, Role, User
from shared.domain.inventory import InventorySyncStatus, Node, NodeRole, Site, SiteKind
from shared.domain.jobs import Job, JobKind, JobProgress, JobState
from shared.domain.kvm import KvmHostConnection
from shared.domain.login_throttle import LoginThrottle
from shared.domain.plans import (
    BootGroup,
    NetworkMapping,
    PlanState,
    ProtectedDisk,
    ProtectedMachine,
    ProtectionPlan,
    ReplicationWindow,
    ScriptHook,
)
from shared.domain.points import DiskPoint, MachineStatus, PlanStatus, RecoveryPoint
from shared.domain.vsphere import (
    InventoryDisk,
    InventoryNic,
    InventoryObject,
    InventoryObjectType,
    InventoryVm,
    PresenceState,
    VCenterConnection,
    VCenterTls,
)
from shared.errors import ConflictError, InvalidInputError, NotFoundError
from shared.policies.login_throttle import Scope
from shared.policies.retention import RetentionPolicy
from shared.ports.metadata_store import MetadataStore, Page
from tests.servers import AzuriteServices, azurite_services  # noqa: F401  (fixture found by name)

METADATA_BACKENDS = ("sqlite", "dynamodb", "azure")

MakeMetadataStore = Callable[[], MetadataStore]

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def moto_dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's in-process DynamoDB (``mock_aws``) with fake credentials and atomic item writes."""
    from moto import mock_aws
    from moto.dynamodb.models import DynamoDBBackend

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)

        def atomic(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, atomic)
    with mock_aws():
        yield


@pytest.fixture(params=METADATA_BACKENDS)
def make_metadata_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeMetadataStore:
    """``make()`` -> a store on this test's fresh database (every call opens another store on it)."""
    backend: str = request.param
    if backend == "sqlite":
        from shared.adapters.local.sqlite_metadata import SqliteMetadataStore

        path = tmp_path / "metadata.db"
        return lambda: SqliteMetadataStore(path)
    if backend == "dynamodb":
        from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore

        request.getfixturevalue("moto_dynamodb")
        table = f"lifeboat-{uuid.uuid4().hex[:12]}"
        DynamoMetadataStore.create_table(table)
        return lambda: DynamoMetadataStore(table)
    if backend == "azure":
        from shared.adapters.azure.table_metadata import AzureTableMetadataStore

        az: AzuriteServices = request.getfixturevalue("azurite_services")
        table = f"lifeboat{uuid.uuid4().hex[:12]}"
        AzureTableMetadataStore.create_table(az.connection_string(), table)
        return lambda: AzureTableMetadataStore(az.connection_string(), table)
    raise ValueError(f"unknown metadata backend {backend!r}")


@pytest.fixture
def store(make_metadata_store: MakeMetadataStore) -> MetadataStore:
    return make_metadata_store()


# --- samples: one valid record of every kind -------------------------------------------------------
def _plan(plan_id: str = "plan-1", **changes: Any) -> ProtectionPlan:
    fields: dict[str, Any] = {
        "id": plan_id,
        "name": "Web tier",
        "source_site_id": "site-vmware",
        "target_site_id": "site-aws",
        "machines": [
            ProtectedMachine(
                machine_id="web-1",
                name="web-1.example",
                disks=[
                    ProtectedDisk(disk_id="web-1-os", source="/dev/sda", block_size=1 << 20),
                    ProtectedDisk(disk_id="web-1-data", source="/images/data.raw", changed_extents="/cbt/x"),
                ],
                instance_type="t3.large",
                private_ip="10.0.0.10",
            ),
            ProtectedMachine(machine_id="db-1", disks=[ProtectedDisk(disk_id="db-1-os", source="/dev/sdb")]),
        ],
        "rpo_minutes": 30,
        "retention": RetentionPolicy(keep_last=5, keep_daily=7, keep_within=timedelta(hours=6)),
        "window": ReplicationWindow(start="22:00", end="06:00"),
        "bandwidth_limit_mbps": 250.5,
        "network_mapping": [
            NetworkMapping(
                source_network="VM Network",
                target_network="subnet-0abc",
                security_groups=["sg-1"],
                test_network="subnet-test",
            )
        ],
        "boot_groups": [
            BootGroup(name="db", machines=["db-1"]),
            BootGroup(name="web", machines=["web-1"], delay_seconds=60),
        ],
        "scripts": [ScriptHook(when="post-recovery", command="systemctl start nginx")],
        "state": PlanState.ACTIVE,
    }
    fields.update(changes)
    return ProtectionPlan(**fields)


def _point(
    point_id: str, plan_id: str = "plan-1", machine_id: str = "web-1", **changes: Any
) -> RecoveryPoint:
    fields: dict[str, Any] = {
        "id": point_id,
        "plan_id": plan_id,
        "machine_id": machine_id,
        "run_id": "job-run-1",
        "time": T0,
        "site_id": "site-aws",
        "disks": [DiskPoint(disk_id="web-1-os", point_id="a" * 64, disk_size=10 << 30, bytes_new=123)],
    }
    fields.update(changes)
    return RecoveryPoint(**fields)


def _job(job_id: str, **changes: Any) -> Job:
    fields: dict[str, Any] = {"id": job_id, "job_kind": JobKind.REPLICATION, "plan_id": "plan-1"}
    fields.update(changes)
    return Job(**fields)


SAMPLES: dict[str, Callable[[], Record]] = {
    "vmware-site": lambda: Site(
        id="site-vc", name="vCenter", site_kind=SiteKind.VMWARE, repository_url="/unused",
        vcenter=VCenterConnection(url="https://vc.example/sdk", username="svc-lifeboat",
                                  password_ref="lifeboat-secret:secret-1", tls=VCenterTls(thumbprint="ab" * 32)),
        last_inventory_sync=InventorySyncStatus(at=T0, job_id="job-9", ok=False, error="site site-vc: refused"),
    ),
    "failback": lambda: Failback(
        id="plan-1", plan_id="plan-1", cycle=2, phase="reverse-protecting", platform="qemu", target_site_id="site-1",
        failover_job_id="job-f", last_reverse_at=T0, last_error="origin busy",
        machines=[ReverseMachine(machine_id="web-1", instance_id="job-f.web-1", qmp_socket="/tmp/lifeboat-vm-1.qmp",
                                 vm_uuid="2b6f0cc9-04f7-5a8e-9c1e-0d0c2a5a7e11",
                                 disks=[ReverseDisk(disk_id="web-1-os", reverse_disk_id="web-1-os.r2", seed_point_id="p-9",
                                                    source="device:0", origin="/var/lib/vms/web-1.qcow2")])],
        history=[FailbackStep(phase="failed-over", at=T0, actor="alice", job_id="job-f"),
                 FailbackStep(phase="reverse-protecting", at=T0, actor="scheduler", note="scheduled")],
    ),
    "kvm-site": lambda: Site(
        id="site-kvm", name="KVM host", site_kind=SiteKind.KVM, repository_url="/unused",
        kvm=KvmHostConnection(qmp_sockets=["/run/lifeboat/web-1.qmp", "/run/lifeboat/db-1.qmp"]),
        last_inventory_sync=InventorySyncStatus(at=T0, job_id="job-8", ok=True, vms=2),
    ),
    "inventory-vm": lambda: InventoryVm(
        id="site-vc.vm-42", site_id="site-vc", moref="vm-42", instance_uuid="5012-abcd", name="web-1",
        cpus=2, memory_mb=4096, firmware=Firmware.EFI, cbt_enabled=True, state=PresenceState.MISSING,
        nics=[InventoryNic(key=4000, network="VM Network", mac="00:50:56:aa:bb:cc", adapter="vmxnet3")],
        disks=[InventoryDisk(key=2000, capacity_bytes=1 << 30, file="[ds1] web-1/web-1.vmdk", bus="scsi",
                             controller="pvscsi", change_id="52 aa/7")],
        last_seen_at=T0, missing_since=T0,
    ),
    "inventory-object": lambda: InventoryObject(
        id="site-vc.network-7", site_id="site-vc", object_type=InventoryObjectType.NETWORK, moref="network-7",
        name="VM Network", parent="DC0", details={"type": "standard"}, last_seen_at=T0,
    ),
    "site": lambda: Site(
        id="site-aws",
        name="AWS eu-west-1",
        site_kind=SiteKind.AWS,
        region="eu-west-1",
        repository_url="s3://bucket/prefix",
        credentials_ref="aws-secretsmanager:arn:aws:secretsmanager:eu-west-1:1:secret:x",
    ),
    "node": lambda: Node(
        id="node-1",
        name="replicator 1",
        site_id="site-aws",
        role=NodeRole.PREP,
        software_version="0.1.0",
        capacity=8,
        heartbeat_at=T0,
        running_jobs=2,
    ),
    "plan": lambda: _plan(),
    "point": lambda: _point("pt-1", created_at=T0),
    "job": lambda: _job(
        "job-1",
        machine_id="web-1",
        state=JobState.RUNNING,
        reason="rpo due",
        params={"disks": ["web-1-os"], "nested": {"n": 1, "ok": True}},
        result={"bytes": 5},
        progress=JobProgress(bytes_done=5, bytes_total=10, rate_bps=1.5, eta_seconds=3.0, message="half"),
        errors=["transient: retried"],
        attempts=1,
        node_id="node-1",
        lease_until=T0 + timedelta(minutes=5),
        queue_message={"receipt": "r-1"},
        started_at=T0,
        created_by="alice",
    ),
    "user": lambda: User(
        id="user-alice",
        username="alice",
        display_name="Alice Ng",
        password_hash="$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        roles=[Role.ADMIN, Role.OPERATOR],
    ),
    "token": lambda: ApiToken(
        id="tok-1",
        name="node token",
        owner="alice",
        roles=[Role.NODE],
        secret_hash="sha256:abc",
        node_id="node-1",
        expires_at=T0 + timedelta(days=30),
    ),
    "audit": lambda: AuditEvent(
        id="ev-1",
        at=T0,
        actor="zoë@example",
        action="POST /plans",
        target="plan-1",
        outcome="success",
        status=201,
        details={"name": "Web tier", "unicode": "☃"},
        request_id="req-1",
    ),
    "alert": lambda: Alert(
        id="al-1",
        alert_kind="rpo-breach",
        plan_id="plan-1",
        machine_id="web-1",
        severity="critical",
        message="RPO 30 min exceeded",
        raised_at=T0,
    ),
    "plan-status": lambda: PlanStatus(
        id="plan-1",
        machines={"web-1": MachineStatus(last_point_at=T0, last_point_id="pt-1")},
        last_job_id="job-1",
        last_success_at=T0,
    ),
    "idempotency": lambda: IdempotencyRecord(
        id="idem-1", principal="alice", route="POST /plans", status=201, body={"id": "plan-1"}
    ),
    "login-throttle": lambda: LoginThrottle(
        id=LoginThrottle.id_for(Scope.ADDRESS, "2001:db8::7"), scope=Scope.ADDRESS, key="2001:db8::7",
        failures=20, window_start=T0, last_failure_at=T0 + timedelta(minutes=3),
        locked_until=T0 + timedelta(minutes=18), expires=int((T0 + timedelta(minutes=18)).timestamp()) + 1,
    ),
}


def _all(store: MetadataStore, kind: type[Record], cursor: str | None = None, **query: Any) -> list[Record]:
    items: list[Record] = []
    while True:
        page = store.query(kind, cursor=cursor, **query)
        items += page.items
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


def _ids(records: list[Any]) -> list[str]:
    return [r.id for r in records]


# --- create / get --------------------------------------------------------------------------------
@pytest.mark.parametrize("sample", list(SAMPLES), ids=list(SAMPLES))
def test_create_get_round_trip_for_every_record_type(store: MetadataStore, sample: str) -> None:
    record = SAMPLES[sample]()
    created = store.create(record)
    assert type(created) is type(record)
    assert created.revision == 1
    assert created.model_dump() == record.model_copy(update={"revision": 1}).model_dump()
    fetched = store.get(type(record), record.id)
    assert type(fetched) is type(record)
    assert fetched == created
    assert _ids(store.query(type(record)).items) == [record.id]


def test_create_stores_revision_one_whatever_the_caller_sent(store: MetadataStore) -> None:
    created = store.create(_job("job-1", revision=7))
    assert created.revision == 1
    assert store.get(Job, "job-1").revision == 1


def test_create_duplicate_is_a_conflict(store: MetadataStore) -> None:
    store.create(_job("job-1", reason="first"))
    with pytest.raises(ConflictError):
        store.create(_job("job-1", reason="second"))
    assert store.get(Job, "job-1").reason == "first"


def test_get_missing_is_not_found(store: MetadataStore) -> None:
    with pytest.raises(NotFoundError):
        store.get(Job, "job-missing")


def test_a_second_store_on_the_same_database_sees_the_records(
    make_metadata_store: MakeMetadataStore,
) -> None:
    first = make_metadata_store()
    first.create(_job("job-1"))
    second = make_metadata_store()
    assert second.get(Job, "job-1").revision == 1
    second.update(second.get(Job, "job-1"))
    assert first.get(Job, "job-1").revision == 2


# --- update -----------------------------------------------------------------------------------------
def test_update_bumps_revision_and_updated_at(store: MetadataStore) -> None:
    old = T0 - timedelta(days=1)
    created = store.create(_job("job-1", created_at=old, updated_at=old))
    before = datetime.now(UTC)
    running = created.transition(JobState.RUNNING, now=T0)
    updated = store.update(running)
    assert updated.revision == 2
    assert updated.updated_at >= before
    assert updated.created_at == old
    assert updated.state is JobState.RUNNING and updated.attempts == 1
    assert store.get(Job, "job-1") == updated
    again = store.update(updated.model_copy(update={"reason": "again"}))
    assert again.revision == 3
    assert again.updated_at >= updated.updated_at
    assert store.get(Job, "job-1") == again


def test_update_moves_the_record_between_filters(store: MetadataStore) -> None:
    job = store.create(_job("job-1"))
    assert _ids(store.query(Job, where={"state": "queued"}).items) == ["job-1"]
    store.update(job.transition(JobState.RUNNING).model_copy(update={"node_id": "node-1", "plan_id": None}))
    assert store.query(Job, where={"state": "queued"}).items == []
    assert _ids(store.query(Job, where={"state": "running"}).items) == ["job-1"]
    assert _ids(store.query(Job, where={"node_id": "node-1"}).items) == ["job-1"]
    assert store.query(Job, where={"plan_id": "plan-1"}).items == []  # now None: matches nothing


def test_stale_update_is_a_conflict_and_changes_nothing(store: MetadataStore) -> None:
    v1 = store.create(_job("job-1"))
    v2 = store.update(v1.model_copy(update={"reason": "winner"}))
    with pytest.raises(ConflictError):
        store.update(v1.model_copy(update={"reason": "loser"}))
    assert store.get(Job, "job-1") == v2
    with pytest.raises(ConflictError):  # a revision from the future is just as wrong
        store.update(v2.model_copy(update={"revision": 5}))


def test_update_of_a_missing_record_is_not_found(store: MetadataStore) -> None:
    with pytest.raises(NotFoundError):
        store.update(_job("job-missing", revision=1))
    with pytest.raises(NotFoundError):
        store.get(Job, "job-missing")  # and the update did not create it


def _race(attempt: Callable[[str], object]) -> dict[str, str]:
    """Run ``attempt("a")`` and ``attempt("b")`` in two threads released together."""
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def run(name: str) -> None:
        barrier.wait()
        try:
            attempt(name)
            outcomes[name] = "won"
        except ConflictError:
            outcomes[name] = "conflict"

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def test_racing_updates_from_one_revision_exactly_one_wins(store: MetadataStore) -> None:
    record = store.create(_job("job-1"))
    for round_ in range(20):

        def write(name: str, base: Job = record) -> None:
            store.update(base.model_copy(update={"reason": name}))

        outcomes = _race(write)
        assert sorted(outcomes.values()) == ["conflict", "won"], f"round {round_}: {outcomes}"
        record = store.get(Job, "job-1")
        assert record.revision == round_ + 2
        assert outcomes[record.reason] == "won"


def test_racing_creates_of_one_id_exactly_one_wins(store: MetadataStore) -> None:
    for round_ in range(10):
        job_id = f"job-{round_}"

        def create(name: str, job_id: str = job_id) -> None:
            store.create(_job(job_id, reason=name))

        outcomes = _race(create)
        assert sorted(outcomes.values()) == ["conflict", "won"], f"round {round_}: {outcomes}"
        assert outcomes[store.get(Job, job_id).reason] == "won"


# --- delete ------------------------------------------------------------------------------------------
def test_delete_removes_and_a_second_delete_is_not_found(store: MetadataStore) -> None:
    store.create(_job("job-1"))
    store.create(_job("job-2"))
    store.delete(Job, "job-1")
    with pytest.raises(NotFoundError):
        store.get(Job, "job-1")
    with pytest.raises(NotFoundError):
        store.delete(Job, "job-1")
    assert _ids(store.query(Job).items) == ["job-2"]
    assert _ids(store.query(Job, where={"plan_id": "plan-1"}).items) == ["job-2"]


def test_conditional_delete_checks_the_revision(store: MetadataStore) -> None:
    v1 = store.create(_job("job-1"))
    v2 = store.update(v1)
    with pytest.raises(ConflictError):
        store.delete(Job, "job-1", revision=v1.revision)
    assert store.get(Job, "job-1") == v2
    store.delete(Job, "job-1", revision=v2.revision)
    with pytest.raises(NotFoundError):
        store.get(Job, "job-1")
    with pytest.raises(NotFoundError):
        store.delete(Job, "job-1", revision=v2.revision)


def test_a_deleted_id_can_be_created_again(store: MetadataStore) -> None:
    store.create(_job("job-1", reason="old"))
    store.delete(Job, "job-1")
    assert store.create(_job("job-1", reason="new")).revision == 1
    assert store.get(Job, "job-1").reason == "new"


# --- query: order, filters, ranges ---------------------------------------------------------------
def _seed_points(store: MetadataStore) -> list[RecoveryPoint]:
    """Six points; two pairs share a created_at, so the id breaks the tie."""
    specs = [
        ("pt-b", 0, "plan-1", "web-1"),
        ("pt-a", 0, "plan-1", "db-1"),
        ("pt-c", 1, "plan-2", "web-1"),
        ("pt-e", 2, "plan-1", "web-1"),
        ("pt-d", 2, "plan-2", "web-1"),
        ("pt-f", 3, "plan-1", "web-1"),
    ]
    points = [
        _point(pid, plan, machine, created_at=T0 + timedelta(minutes=m)) for pid, m, plan, machine in specs
    ]
    for p in points:
        store.create(p)
    return points


def test_query_orders_by_created_at_then_id(store: MetadataStore) -> None:
    _seed_points(store)
    ascending = ["pt-a", "pt-b", "pt-c", "pt-d", "pt-e", "pt-f"]
    assert _ids(store.query(RecoveryPoint).items) == ascending
    assert _ids(store.query(RecoveryPoint, descending=True).items) == ascending[::-1]
    assert _ids(_all(store, RecoveryPoint, limit=1)) == ascending
    assert _ids(_all(store, RecoveryPoint, limit=1, descending=True)) == ascending[::-1]


def test_query_order_is_by_time_not_by_insertion_or_timezone(store: MetadataStore) -> None:
    cet = datetime(2024, 5, 1, 13, 30, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    store.create(_job("job-late", created_at=T0 + timedelta(hours=2)))
    store.create(_job("job-mid", created_at=cet))  # 13:30 UTC written as 15:30+02:00
    store.create(_job("job-early", created_at=T0 + timedelta(microseconds=1)))
    assert _ids(store.query(Job).items) == ["job-early", "job-mid", "job-late"]


def test_where_filters_on_indexed_attributes(store: MetadataStore) -> None:
    _seed_points(store)
    assert _ids(store.query(RecoveryPoint, where={"plan_id": "plan-1"}).items) == [
        "pt-a",
        "pt-b",
        "pt-e",
        "pt-f",
    ]
    both = store.query(RecoveryPoint, where={"plan_id": "plan-1", "machine_id": "web-1"}, descending=True)
    assert _ids(both.items) == ["pt-f", "pt-e", "pt-b"]
    reversed_order = store.query(RecoveryPoint, where={"machine_id": "web-1", "plan_id": "plan-2"})
    assert _ids(reversed_order.items) == ["pt-c", "pt-d"]
    assert store.query(RecoveryPoint, where={"plan_id": "plan-3"}).items == []
    assert store.query(RecoveryPoint, where={"plan_id": "plan-2", "machine_id": "db-1"}).items == []
    assert _ids(store.query(RecoveryPoint, where={}).items) == [
        "pt-a",
        "pt-b",
        "pt-c",
        "pt-d",
        "pt-e",
        "pt-f",
    ]


def test_where_compares_enum_values_as_strings(store: MetadataStore) -> None:
    store.create(_job("job-q"))
    store.create(_job("job-r", state=JobState.RUNNING, node_id="node-1"))
    store.create(_job("job-s", state=JobState.SUCCEEDED, plan_id=None))
    assert _ids(store.query(Job, where={"state": "running"}).items) == ["job-r"]
    assert _ids(store.query(Job, where={"state": JobState.SUCCEEDED}).items) == ["job-s"]
    assert _ids(store.query(Job, where={"state": "queued", "plan_id": "plan-1"}).items) == ["job-q"]
    assert store.query(Job, where={"state": "RUNNING"}).items == []  # exact, case-sensitive
    store.create(_plan("plan-x", state=PlanState.PAUSED))
    assert _ids(
        store.query(ProtectionPlan, where={"state": "paused", "target_site_id": "site-aws"}).items
    ) == ["plan-x"]
    store.create(SAMPLES["audit"]())
    assert _ids(store.query(AuditEvent, where={"actor": "zoë@example"}).items) == ["ev-1"]


def test_unindexed_filter_is_invalid_input(store: MetadataStore) -> None:
    store.create(_job("job-1"))
    for where in ({"reason": "x"}, {"machine_id": "web-1"}, {"state": "queued", "created_by": "scheduler"}):
        with pytest.raises(InvalidInputError):
            store.query(Job, where=where)
    with pytest.raises(InvalidInputError):
        store.query(PlanStatus, where={"last_job_id": "job-1"})  # a kind with no indexes at all


def test_after_is_inclusive_and_before_exclusive(store: MetadataStore) -> None:
    _seed_points(store)
    t = [T0 + timedelta(minutes=m) for m in range(5)]
    assert _ids(store.query(RecoveryPoint, after=t[2]).items) == ["pt-d", "pt-e", "pt-f"]
    assert _ids(store.query(RecoveryPoint, before=t[2]).items) == ["pt-a", "pt-b", "pt-c"]
    assert _ids(store.query(RecoveryPoint, after=t[1], before=t[3]).items) == ["pt-c", "pt-d", "pt-e"]
    assert _ids(store.query(RecoveryPoint, after=t[1], before=t[3], descending=True).items) == [
        "pt-e",
        "pt-d",
        "pt-c",
    ]
    assert _ids(store.query(RecoveryPoint, where={"plan_id": "plan-1"}, after=t[1], before=t[4]).items) == [
        "pt-e",
        "pt-f",
    ]
    assert store.query(RecoveryPoint, after=t[3], before=t[3]).items == []
    assert store.query(RecoveryPoint, after=t[4], before=t[1]).items == []
    assert store.query(RecoveryPoint, after=t[4]).items == []
    paris = t[2].astimezone(ZoneInfo("Europe/Paris"))
    assert _ids(store.query(RecoveryPoint, after=paris).items) == ["pt-d", "pt-e", "pt-f"]
    microsecond_later = t[2] + timedelta(microseconds=1)
    assert _ids(store.query(RecoveryPoint, after=microsecond_later).items) == ["pt-f"]


# --- pagination -------------------------------------------------------------------------------------
@pytest.fixture
def many_points(store: MetadataStore) -> list[RecoveryPoint]:
    """250 points, plan-0..plan-4 in turn, several sharing each created_at."""
    points = [
        _point(f"pt-{i:04d}", plan_id=f"plan-{i % 5}", created_at=T0 + timedelta(seconds=i // 3))
        for i in range(250)
    ]
    for p in points:
        store.create(p)
    return points


@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
def test_cursors_cover_every_item_exactly_once(
    store: MetadataStore, many_points: list[RecoveryPoint], descending: bool
) -> None:
    expected = sorted(_ids(many_points))
    if descending:
        expected.reverse()
    pages: list[Page[RecoveryPoint]] = []
    cursor = None
    while True:
        page = store.query(RecoveryPoint, limit=100, cursor=cursor, descending=descending)
        pages.append(page)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [len(p.items) for p in pages] == [100, 100, 50]
    assert [i for p in pages for i in _ids(p.items)] == expected


def test_cursors_with_filters_and_ranges(store: MetadataStore, many_points: list[RecoveryPoint]) -> None:
    after, before = T0 + timedelta(seconds=10), T0 + timedelta(seconds=70)
    expected = [
        p.id for p in many_points if p.plan_id == "plan-2" and after <= p.created_at < before
    ]  # ids sort like (created_at, id) here
    assert len(expected) == 36
    for limit in (1, 7, 36, 37, 500):
        got = _all(store, RecoveryPoint, where={"plan_id": "plan-2"}, after=after, before=before, limit=limit)
        assert _ids(got) == expected, f"limit {limit}"
        got = _all(
            store,
            RecoveryPoint,
            where={"plan_id": "plan-2"},
            after=after,
            before=before,
            limit=limit,
            descending=True,
        )
        assert _ids(got) == expected[::-1], f"limit {limit}, descending"


def test_a_full_last_page_has_no_cursor(store: MetadataStore) -> None:
    for i in range(4):
        store.create(_job(f"job-{i}", created_at=T0 + timedelta(seconds=i)))
    first = store.query(Job, limit=2)
    assert _ids(first.items) == ["job-0", "job-1"] and first.next_cursor
    second = store.query(Job, limit=2, cursor=first.next_cursor)
    assert _ids(second.items) == ["job-2", "job-3"]
    assert second.next_cursor is None
    exact = store.query(Job, limit=4)
    assert len(exact.items) == 4 and exact.next_cursor is None
    assert store.query(Site).items == [] and store.query(Site).next_cursor is None


def test_a_cursor_survives_writes_between_pages(store: MetadataStore) -> None:
    for i in range(6):
        store.create(_job(f"job-{i}", created_at=T0 + timedelta(seconds=i)))
    first = store.query(Job, limit=3)
    store.delete(Job, "job-2")  # the cursor's own item may vanish
    store.create(_job("job-new", created_at=T0 + timedelta(seconds=10)))
    rest = _all(store, Job, limit=3, cursor=first.next_cursor)
    assert _ids(rest) == ["job-3", "job-4", "job-5", "job-new"]


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        "e30",  # {}
        "WyJ4Il0",  # ["x"]
        "WyIyMDI0LTA1LTAxIiwiaWQiXQ",  # ["2024-05-01","id"]
        "WzEsMl0",  # [1,2]
        "",
    ],
)
def test_bad_cursor_is_invalid_input(store: MetadataStore, cursor: str) -> None:
    store.create(_job("job-1"))
    with pytest.raises(InvalidInputError):
        store.query(Job, cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1])
def test_bad_limit_is_invalid_input(store: MetadataStore, limit: int) -> None:
    with pytest.raises(InvalidInputError):
        store.query(Job, limit=limit)


# --- kinds ------------------------------------------------------------------------------------------
def test_records_of_different_kinds_never_mix(store: MetadataStore) -> None:
    store.create(_job("shared-id", plan_id="plan-1", machine_id="web-1"))
    store.create(_point("shared-id", plan_id="plan-1", machine_id="web-1"))
    store.create(
        Alert(id="shared-id", alert_kind="x", plan_id="plan-1", severity="info", message="m", raised_at=T0)
    )
    store.create(_plan("shared-id"))
    store.create(PlanStatus(id="shared-id"))
    assert store.get(Job, "shared-id").job_kind is JobKind.REPLICATION
    assert store.get(RecoveryPoint, "shared-id").run_id == "job-run-1"
    assert store.get(PlanStatus, "shared-id").machines == {}
    for kind in (Job, RecoveryPoint, Alert, ProtectionPlan, PlanStatus):
        page = store.query(kind)
        assert [type(r) for r in page.items] == [kind]
    for kind in (Job, RecoveryPoint, Alert):
        assert [type(r) for r in store.query(kind, where={"plan_id": "plan-1"}).items] == [kind]
    assert store.query(Site).items == []
    store.delete(Job, "shared-id")
    assert store.get(RecoveryPoint, "shared-id").id == "shared-id"
    with pytest.raises(NotFoundError):
        store.get(Site, "shared-id")
    with pytest.raises(ConflictError):
        store.create(_point("shared-id"))
    assert store.create(_job("shared-id")).revision == 1


# --- adapter specifics: schema versions and error translation --------------------------------
def test_sqlite_migrations_run_once_and_refuse_a_newer_schema(tmp_path: Path) -> None:
    import sqlite3

    from shared.adapters.local.sqlite_metadata import MIGRATIONS, SqliteMetadataStore
    from shared.errors import UnsupportedFormatError

    path = tmp_path / "metadata.db"
    SqliteMetadataStore(path).create(_job("job-1"))
    assert SqliteMetadataStore(path).get(Job, "job-1").revision == 1  # reopening keeps the data
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(UnsupportedFormatError):
        SqliteMetadataStore(path)


def test_sqlite_busy_database_is_transient(tmp_path: Path) -> None:
    import sqlite3

    from shared.adapters.local.sqlite_metadata import SqliteMetadataStore
    from shared.errors import TransientStoreError

    path = tmp_path / "metadata.db"
    store = SqliteMetadataStore(path, busy_timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        with pytest.raises(TransientStoreError) as caught:
            store.create(_job("job-1"))
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.create(_job("job-1"))


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("ProvisionedThroughputExceededException", 400, "TransientStoreError"),
        ("ThrottlingException", 400, "TransientStoreError"),
        ("InternalServerError", 500, "TransientStoreError"),
        ("SomethingNew", 503, "TransientStoreError"),
        ("AccessDeniedException", 400, "StoreAccessError"),
        ("ValidationException", 400, "InvalidInputError"),
    ],
)
def test_dynamodb_sdk_errors_are_translated(
    moto_dynamodb: None, monkeypatch: pytest.MonkeyPatch, code: str, status: int, expected: str
) -> None:
    import botocore.client
    from botocore.exceptions import ClientError

    import shared.errors
    from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore

    store = DynamoMetadataStore.create_table("lifeboat-errors")

    def fail(self: Any, operation: str, params: Any) -> Any:
        response: Any = {
            "Error": {"Code": code, "Message": "injected"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        raise ClientError(response, operation)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", fail)
    for call in (
        lambda: store.get(Job, "job-1"),
        lambda: store.create(_job("job-1")),
        lambda: store.update(_job("job-1", revision=1)),
        lambda: store.delete(Job, "job-1"),
        lambda: store.query(Job, where={"state": "queued"}),
    ):
        with pytest.raises(shared.errors.LifeboatError) as caught:
            call()
        assert type(caught.value).__name__ == expected
        assert caught.value.__cause__ is not None  # the SDK error is chained


def test_dynamodb_missing_table_and_unreachable_endpoint(moto_dynamodb: None) -> None:
    from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore
    from shared.errors import StoreError, TransientStoreError

    with pytest.raises(StoreError) as caught:
        DynamoMetadataStore("lifeboat-no-such-table").get(Job, "job-1")
    assert not isinstance(caught.value, TransientStoreError)
    unreachable = DynamoMetadataStore("t", host="http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(TransientStoreError):
        unreachable.get(Job, "job-1")


def test_dynamodb_oversized_record_is_invalid_input(moto_dynamodb: None) -> None:
    from shared.adapters.aws.dynamo_metadata import DynamoMetadataStore

    store = DynamoMetadataStore.create_table("lifeboat-big")
    with pytest.raises(InvalidInputError):
        store.create(_job("job-big", params={"blob": "x" * 500_000}))  # DynamoDB items stop at 400 KB
    with pytest.raises(NotFoundError):
        store.get(Job, "job-big")


# --- Azure Tables specifics: layout, key encodings, limits, error translation ----------------------
@pytest.fixture
def az(request: pytest.FixtureRequest) -> AzuriteServices:
    """The session's Azurite with table and queue services."""
    services: AzuriteServices = request.getfixturevalue("azurite_services")
    return services


def _azure_store(az: AzuriteServices) -> Any:
    from shared.adapters.azure.table_metadata import AzureTableMetadataStore

    return AzureTableMetadataStore.create_table(az.connection_string(), f"lifeboat{uuid.uuid4().hex[:12]}")


def _azure_rows(store: Any, kind: str) -> list[str]:
    return [e["RowKey"] for e in store._table.query_entities("PartitionKey eq @pk", parameters={"pk": kind})]


def test_azure_rows_follow_the_record_and_leave_no_orphans(az: AzuriteServices) -> None:
    """One partition per kind: a record row, plus an ascending and a descending row per listing."""
    store = _azure_store(az)
    job = store.create(_job("job-1", created_at=T0))
    rows = _azure_rows(store, "job")
    assert len(rows) == 1 + 2 * 3  # record row; all jobs; plan_id and state (node_id is None)
    assert "id|job-1" in rows and "a|*|2024-05-01T12:00:00.000000Z|job-1" in rows
    assert "a|state=queued|2024-05-01T12:00:00.000000Z|job-1" in rows
    running = store.update(job.transition(JobState.RUNNING).model_copy(update={"node_id": "node-1"}))
    rows = _azure_rows(store, "job")
    assert len(rows) == 1 + 2 * 4
    assert not any("state=queued" in r for r in rows), rows
    store.delete(Job, "job-1", revision=running.revision)
    assert _azure_rows(store, "job") == []


def test_azure_descending_order_with_prefix_ids_and_odd_index_values(
    az: AzuriteServices,
) -> None:
    store = _azure_store(az)
    ids = ["ev-1", "ev-10", "ev-1.0", "ev-1_", "ev-2", "Ev-1", "ev"]
    actors = ["zoë/x#y?z\\", "a|b", "~7c", "ü" * 100, "ü" * 99, "plain", "zoë/x#y?z\\"]
    for record_id, actor in zip(ids, actors, strict=True):
        store.create(
            AuditEvent(
                id=record_id, at=T0, actor=actor, action="a", target="t", outcome="success", created_at=T0
            )
        )
    assert _ids(store.query(AuditEvent).items) == sorted(ids)
    assert _ids(store.query(AuditEvent, descending=True).items) == sorted(ids, reverse=True)
    assert _ids(_all(store, AuditEvent, limit=2, descending=True)) == sorted(ids, reverse=True)
    for actor in set(actors):
        expected = sorted(i for i, a in zip(ids, actors, strict=True) if a == actor)
        assert _ids(store.query(AuditEvent, where={"actor": actor}).items) == expected, actor
        assert _ids(store.query(AuditEvent, where={"actor": actor}, descending=True).items) == expected[::-1]


def test_azure_oversized_record_is_invalid_input(az: AzuriteServices) -> None:
    store = _azure_store(az)
    with pytest.raises(InvalidInputError):  # strings count as UTF-16: past the 1 MiB entity limit
        store.create(_job("job-big", params={"blob": "x" * 600_000}))
    with pytest.raises(InvalidInputError):  # nine rows of 460 KB pass the 4 MiB transaction limit
        store.create(_job("job-big", params={"blob": "x" * 460_000}, node_id="node-1"))
    with pytest.raises(NotFoundError):
        store.get(Job, "job-big")
    big = store.create(_job("job-ok", params={"blob": "ü" * 80_000}))  # split over several properties
    assert store.get(Job, "job-ok") == big


def test_azure_missing_table_and_unreachable_endpoint(az: AzuriteServices) -> None:
    from shared.adapters.azure.table_metadata import AzureTableMetadataStore
    from shared.errors import StoreError, TransientStoreError
    from tests.servers import free_ports

    with pytest.raises(StoreError) as caught:
        AzureTableMetadataStore(az.connection_string(), "lifeboatnosuchtable").get(Job, "job-1")
    assert not isinstance(caught.value, TransientStoreError)
    assert caught.value.__cause__ is not None
    port = free_ports(1)[0]
    unreachable = az.connection_string().replace(
        az.table_endpoint, f"http://127.0.0.1:{port}/devstoreaccount1"
    )
    with pytest.raises(TransientStoreError):
        AzureTableMetadataStore(unreachable, "t").get(Job, "job-1")


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (503, "ServerBusy", "TransientStoreError"),
        (500, "InternalError", "TransientStoreError"),
        (403, "AuthenticationFailed", "StoreAccessError"),
        (404, "TableNotFound", "StoreError"),
    ],
)
def test_azure_sdk_errors_are_translated(fault_server: Any, status: int, code: str, expected: str) -> None:
    import shared.errors
    from shared.adapters.azure.table_metadata import AzureTableMetadataStore
    from tests.servers import AZURITE_KEY

    fault_server.status = status
    fault_server.headers = {"x-ms-error-code": code, "Content-Type": "application/json"}
    fault_server.body = json.dumps({"odata.error": {"code": code, "message": {"value": "injected"}}}).encode()
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        f"TableEndpoint={fault_server.url}/devstoreaccount1;"
    )
    store = AzureTableMetadataStore(conn, "lifeboat")
    for call in (
        lambda: store.get(Job, "job-1"),
        lambda: store.create(_job("job-1")),
        lambda: store.update(_job("job-1", revision=1)),
        lambda: store.delete(Job, "job-1"),
        lambda: store.query(Job, where={"state": "queued"}),
    ):
        with pytest.raises(shared.errors.LifeboatError) as caught:
            call()
        assert type(caught.value).__name__ == expected, (caught.value, code)
        assert caught.value.__cause__ is not None  # the SDK error is chained
