"""Recovery into Azure end to end, through the real Azure SDKs.

Real parts: the repository (folder store), the recovery flow (the ASL run by the local
runner) and its handlers, the composition root (functions/recovery/targets.py), the
ARM adapter on ``azure-mgmt-compute`` / ``azure-mgmt-network`` over HTTPS with their own
pollers and retry policies, page blobs in Azurite, and QEMU (TCG) booting the imported
disks. Azure Resource Manager itself is the project's server (tests/support/arm_server.py),
which applies the in-memory fake's ARM rules. Azurite and QEMU are required, never skipped.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from functions.recovery.local_runner import run_cleanup, run_recovery
from functions.recovery.ports import RecoveryPorts
from functions.recovery.targets import build_target
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.files import FileSource
from shared.adapters.local.folder_store import FolderStore
from shared.domain.inventory import Site, SiteKind
from shared.domain.plans import BootGroup, NetworkMapping, ProtectedDisk, ProtectedMachine, ProtectionPlan
from shared.domain.points import DiskPoint, RecoveryPoint
from shared.domain.recovery import AzureTargetConfig, FlowInput, RecoveryMode, RecoveryReport
from shared.repo.keys import KdfParams
from shared.repo.repository import Repository
from shared.services.recovery import build_flow_input
from tests.support import bootdisk
from tests.support.arm_server import TOKEN, ArmServer
from tests.support.fake_azure_compute import InMemoryAzureCompute

pytestmark = pytest.mark.azure_recovery

MiB = 1 << 20
RG, LOCATION = "lifeboat-recovery", "westeurope"
STAGING = "recovery-staging"
MACHINES = ("db", "web")
ACCOUNT_ID = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/storage/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"


class StaticToken:
    """A bearer token the ARM test server accepts (what azure-identity would return in Azure)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(TOKEN, int(time.time()) + 3600)


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory, azurite: Any) -> dict[str, Any]:
    """Two boot disks (each printing its own marker) replicated into a repository."""
    root = tmp_path_factory.mktemp("azure-recovery")
    repo = Repository.init(
        FolderStore(root / "repo"), "pw", kdf=KdfParams(iterations=1, memory_kib=8192, lanes=1)
    )
    template = bootdisk.build_boot_disk(root / "template.raw", marker="template", size_mib=32, stay=True)
    points = []
    when = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    for m in MACHINES:
        image = bootdisk.copy_with_marker(template, root / f"{m}.raw", marker=f"azure-up-{m}")
        with FileSource(str(image)) as src:
            p = replicate(repo, f"{m}-disk", src, ReplicationOptions(block_size=1 * MiB))
        points.append(RecoveryPoint(
            id=f"run-1-{m}", plan_id="plan-az", machine_id=m, run_id="run-1", time=when, site_id="azure",
            disks=[DiskPoint(disk_id=f"{m}-disk", point_id=p.id, disk_size=p.disk_size)],
        ))  # fmt: skip
    azurite.service().create_container(STAGING)
    return {"root": root, "repo": repo, "points": points, "azurite": azurite}


class Cloud:
    def __init__(self, protected: dict[str, Any], tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        azurite = protected["azurite"]
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string())
        self.protected = protected
        self.compute = InMemoryAzureCompute(
            azurite.service(), location=LOCATION, resource_groups=(RG, "network")
        )
        self.prod_subnet = self.compute.add_subnet("network", "prod-vnet", "app", "10.1.0.0/24")
        self.server = ArmServer(self.compute, tmp).__enter__()
        self.config = AzureTargetConfig(
            subscription_id=self.compute.subscription_id, resource_group=RG, location=LOCATION,
            container_url=f"{azurite.blob_endpoint}/{STAGING}", storage_account_id=ACCOUNT_ID,
            arm_endpoint=self.server.url, poll_seconds=1.0,
        )  # fmt: skip
        options = {
            "connection_verify": str(self.server.ca_file),
            "polling_interval": 0.05,
            "retry_backoff_factor": 0.05,
        }
        self.ports = RecoveryPorts(
            target_for=lambda config: build_target(
                config, azure_credential=StaticToken(), azure_options=options
            ),
            open_repository=lambda _url, _ref: protected["repo"],
        )

    def plan(self, **mapping: Any) -> ProtectionPlan:
        return ProtectionPlan(
            id="plan-az", name="two tier", source_site_id="prod", target_site_id="azure",
            machines=[ProtectedMachine(machine_id=m, disks=[ProtectedDisk(disk_id=f"{m}-disk", source=f"/x/{m}")],
                                       networks=["lan"], private_ip=f"10.1.0.{i + 10}", boot_marker=f"azure-up-{m}")
                      for i, m in enumerate(MACHINES)],
            network_mapping=[NetworkMapping(source_network="lan", target_network=self.prod_subnet, **mapping)],
            boot_groups=[BootGroup(name="database", machines=["db"]),
                         BootGroup(name="web", machines=["web"], delay_seconds=1)],
            boot_timeout_seconds=240,
        )  # fmt: skip

    def flow(self, mode: RecoveryMode, plan: ProtectionPlan | None = None) -> FlowInput:
        site = Site(id="azure", name="azure", site_kind=SiteKind.LOCAL, repository_url="unused",
                    credentials_ref="env:UNUSED", recovery_target=self.config)  # fmt: skip
        return build_flow_input(plan or self.plan(), site, self.protected["points"], job_id="job-az", mode=mode,
                                point_time=None, now=datetime.now(UTC))  # fmt: skip

    def run(self, flow: FlowInput) -> RecoveryReport:
        report, _ = run_recovery(flow, self.ports, sleep=lambda s: None)
        return report

    def leftovers(self) -> list[str]:
        blobs = [
            b.name for b in self.protected["azurite"].service().get_container_client(STAGING).list_blobs()
        ]
        running = [n for n, p in self.server.hypervisor.processes.items() if p.poll() is None]
        return self.compute.all_ids() + blobs + running

    def close(self) -> None:
        self.server.__exit__(None, None, None)


@pytest.fixture
def cloud(protected: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    c = Cloud(protected, tmp_path, monkeypatch)
    yield c
    c.close()


def test_a_two_vm_test_recovery_boots_in_isolated_networks_and_cleans_up(cloud: Cloud) -> None:
    flow = cloud.flow(RecoveryMode.TEST)
    report = cloud.run(flow)
    assert report.state == "succeeded", report.errors
    assert [[m.machine_id for m in g.machines] for g in report.groups] == [["db"], ["web"]]
    for machine in report.machines():
        evidence = machine.evidence
        assert evidence is not None and evidence.ok and evidence.method == "serial-marker"
        assert f"azure-up-{machine.machine_id}" in evidence.excerpt  # read from the boot-diagnostics blob
        assert set(evidence.detail["timings"]) >= {"disk_import_0", "nic_0", "vm_create", "boot"}
        assert [s.stage for s in machine.stages][-1] == "validate-boot"
    # both NICs went into one isolated network mirroring the production subnet, addresses kept
    vnets = list(cloud.compute.vnets.values())
    assert len(vnets) == 1 and vnets[0].tags["lifeboat:isolated"] == "true"
    nics = list(cloud.compute.nics.values())
    assert sorted(n.private_ip for n in nics) == ["10.1.0.10", "10.1.0.11"]
    assert all(n.subnet_id.lower().startswith(vnets[0].id.lower()) for n in nics)
    assert not any(n.subnet_id.lower() == cloud.prod_subnet.lower() for n in nics)
    os_disks = [d for d in cloud.compute.disks.values() if d.os_type]
    assert [(d.os_type, d.hyper_v_generation) for d in os_disks] == [
        ("Linux", "V1")
    ] * 2  # found by OS preparation
    assert cloud.server.count("POST", "retrieveBootDiagnosticsData") >= 2
    assert cloud.server.count("GET", "/bootdiagnostics/") >= 2

    machines = [{"machine_id": m.machine_id, "resources": [r.model_dump() for r in m.resources]}
                for m in report.machines()]  # fmt: skip
    outcome = run_cleanup(
        {"target": cloud.config.model_dump(), "machines": machines}, cloud.ports, sleep=lambda s: None
    )
    assert outcome.failed == [], outcome.failed
    assert cloud.leftovers() == []


def test_a_failover_puts_nics_in_the_mapped_subnet_despite_throttling(cloud: Cloud) -> None:
    cloud.server.throttle(3, retry_after=1)  # ARM answers 429 with Retry-After: the SDK waits and retries
    report = cloud.run(cloud.flow(RecoveryMode.FAILOVER))
    assert report.state == "succeeded", report.errors
    assert all(n.subnet_id == cloud.prod_subnet for n in cloud.compute.nics.values())
    assert cloud.compute.vnets == {}
    assert len(cloud.compute.vms) == 2
    assert cloud.server.throttled_answers == 3  # all three 429s were sent and retried through
    machines = [{"machine_id": m.machine_id, "resources": [r.model_dump() for r in m.resources]}
                for m in report.machines()]  # fmt: skip
    outcome = run_cleanup(
        {"target": cloud.config.model_dump(), "machines": machines}, cloud.ports, sleep=lambda s: None
    )
    assert outcome.failed == [] and cloud.leftovers() == []


@pytest.mark.parametrize(
    ("kind", "stage"),
    [("disks", "create-instance"), ("virtualNetworks", "attach-networks"),
     ("networkInterfaces", "attach-networks"), ("virtualMachines", "power-on")],
)  # fmt: skip
def test_a_failure_at_each_create_step_is_compensated_and_leaves_nothing(
    cloud: Cloud, kind: str, stage: str
) -> None:
    """ARM accepts the create, then the operation ends Failed (the resource is left in state Failed)."""
    cloud.server.fail_operation(kind, "AllocationFailed", f"injected: no capacity for {kind}")
    report = cloud.run(cloud.flow(RecoveryMode.TEST))
    db = next(m for m in report.machines() if m.machine_id == "db")
    assert db.status == "failed" and db.failed_stage == stage, (db.failed_stage, db.error)
    assert "AllocationFailed" in (db.error or "") and "injected" in (db.error or "")
    assert db.cleanup is not None and db.cleanup.failed == [] and db.resources == []
    assert report.state == "partial"  # the web machine still recovered
    web = next(m for m in report.machines() if m.machine_id == "web")
    assert web.status == "recovered"
    machines = [{"machine_id": "web", "resources": [r.model_dump() for r in web.resources]}]
    run_cleanup(
        {"target": cloud.config.model_dump(), "machines": machines}, cloud.ports, sleep=lambda s: None
    )
    assert cloud.leftovers() == []


def test_a_transient_failed_operation_is_retried_by_the_flow(cloud: Cloud) -> None:
    """ARM's operation ends Failed with a retryable code: the VM is deleted and the PowerOn state retried."""
    cloud.server.fail_operation("virtualMachines", "InternalServerError", "injected: transient fabric error")
    report = cloud.run(cloud.flow(RecoveryMode.FAILOVER))
    assert report.state == "succeeded", report.errors
    assert cloud.server.count("PUT", "/virtualMachines/") == 3  # db twice (failed, retried), web once
    assert cloud.server.count("DELETE", "/virtualMachines/") == 1  # the failed VM, before the retry
    machines = [{"machine_id": m.machine_id, "resources": [r.model_dump() for r in m.resources]}
                for m in report.machines()]  # fmt: skip
    run_cleanup(
        {"target": cloud.config.model_dump(), "machines": machines}, cloud.ports, sleep=lambda s: None
    )
    assert cloud.leftovers() == []


def test_wrong_size_or_subnet_is_refused_before_anything_is_created(cloud: Cloud) -> None:
    plan = cloud.plan()
    plan.machines[0].instance_type = "Standard_Z99"
    plan.network_mapping[0].target_network = cloud.prod_subnet.replace("/app", "/missing")
    report = cloud.run(cloud.flow(RecoveryMode.FAILOVER, plan))
    assert report.state == "failed"
    text = " ".join(report.errors)
    assert "Standard_Z99" in text and "missing does not exist" in text
    assert cloud.server.count("PUT", "/") == 0 and cloud.leftovers() == []
