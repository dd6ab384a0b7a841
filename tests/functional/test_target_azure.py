"""The Azure recovery target: page-blob VHDs on a real Azurite, compute on the in-memory fake.

The fake reads the VHDs from the same Azurite to check what ARM checks on import, so
every flow here needs Azurite: these tests fail (never skip) when it is missing.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from node_runtime.recovery.azure_vhd import FOOTER_SIZE, MiB, parse_vhd_footer, vhd_footer
from node_runtime.recovery.targets.azure import AzureCleaner, arm_name, azure_target
from node_runtime.recovery.targets.azure.compute import DISK, NIC, VM
from node_runtime.recovery.targets.base import (
    DiskArtifact,
    Instance,
    InstanceSpec,
    NicSpec,
    Resource,
    Target,
    ValidationSpec,
)
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.files import FileSource
from shared.adapters.local.folder_store import FolderStore
from shared.domain.hardware import Firmware
from shared.errors import InvalidInputError, TargetError
from shared.repo.keys import ZERO_ID, KdfParams
from shared.repo.points import PointRecord
from shared.repo.repository import Repository
from tests.servers import Azurite
from tests.support.disks import create
from tests.support.fake_azure_compute import FakeVm, InMemoryAzureCompute

KiB = 1 << 10
UNIT = 64 * KiB  # the VHD writer's zero granularity
BOOT_SIZE = 6 * MiB + 300 * KiB + 1000  # neither MiB- nor sector-aligned
DATA_SIZE = 3 * MiB + 4096
RG = "lifeboat-recovery"
LOCATION = "westeurope"
MARKER = "LIFEBOAT-BOOT-OK"
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- Azurite (required) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(request: pytest.FixtureRequest) -> Any:
    """Azurite's BlobServiceClient. Missing Azurite fails the test: it is never skipped."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("LIFEBOAT_AZURITE") and not shutil.which("azurite"):
            bundled = REPO_ROOT / "tools/node/node_modules/.bin/azurite-blob"
            if not bundled.exists():
                pytest.fail(
                    f"Azurite is required: set LIFEBOAT_AZURITE or run `make deps` ({bundled} missing)"
                )
            mp.setenv("LIFEBOAT_AZURITE", str(bundled))
        try:
            azurite: Azurite = request.getfixturevalue("azurite")
        except pytest.skip.Exception as exc:
            pytest.fail(f"Azurite is required, not optional: {exc}")
    return azurite.service()


@pytest.fixture(scope="module")
def container(service: Any) -> Iterator[Any]:
    client = service.create_container(f"azure-target-{uuid.uuid4().hex[:12]}")
    yield client
    client.delete_container()


# --- a repository with two points ---------------------------------------------------------------------
@dataclass
class Source:
    repo: Repository
    data: dict[str, bytes]  # disk id -> image bytes
    points: dict[str, PointRecord] = field(default_factory=dict)

    def nonzero_units(self, disk_id: str) -> list[tuple[int, int]]:
        """Merged (start, end) of the non-zero 64 KiB units, the last cut at the sector after the end."""
        data = self.data[disk_id]
        end = -(-len(data) // 512) * 512
        ranges: list[tuple[int, int]] = []
        for start in range(0, len(data), UNIT):
            if any(data[start : start + UNIT]):
                stop = min(start + UNIT, end)
                if ranges and ranges[-1][1] == start:
                    ranges[-1] = (ranges[-1][0], stop)
                else:
                    ranges.append((start, stop))
        return ranges


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    tmp = tmp_path_factory.mktemp("azure-target")
    store = FolderStore(tmp / "repo", fsync=False)
    Repository.init(store, "pw", kdf=KdfParams(iterations=1, memory_kib=8192, lanes=1))
    repo = Repository.open(store, lambda: "pw")
    src = Source(repo, {})
    for disk_id, size, seed in (("boot", BOOT_SIZE, 11), ("data", DATA_SIZE, 12)):
        image = create(tmp / f"{disk_id}.img", size, seed=seed)
        data = bytearray(image.read_bytes())
        data[MiB : 2 * MiB] = bytes(MiB)  # a hole
        data[3 * UNIT : 4 * UNIT] = bytes(UNIT)  # a zero unit inside a data block
        data[-3000:] = random.Random(seed).randbytes(3000)  # data up to the last byte
        image.write_bytes(data)
        src.data[disk_id] = bytes(data)
        with FileSource(image) as fs:
            opts = ReplicationOptions(block_size=MiB, pack_target=4 * MiB, streams=2, workers=2)
            src.points[disk_id] = replicate(repo, disk_id, fs, opts)
        assert ZERO_ID in repo.block_map(src.points[disk_id])
    return src


# --- the target over the fake --------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)


@dataclass
class Env:
    compute: InMemoryAzureCompute
    cleaner: AzureCleaner
    bundle: Target
    container: Any
    clock: FakeClock
    subnet: str
    subnet2: str
    test_subnet: str
    other_vnet_subnet: str
    nsg: str


def boots_with_marker(vm: FakeVm) -> str:
    return f"[    0.000000] Linux version 6.1\n[    2.1] {vm.name} login:\n{MARKER}\n"


@pytest.fixture
def env(service: Any, container: Any) -> Env:
    compute = InMemoryAzureCompute(
        service, location=LOCATION, resource_groups=(RG, "network"), boot=boots_with_marker
    )
    subnet = compute.add_subnet("network", "prod-vnet", "app", "10.1.0.0/24")
    subnet2 = compute.add_subnet("network", "prod-vnet", "backend", "10.1.1.0/24")
    test_subnet = compute.add_subnet("network", "dr-test-vnet", "bubble", "10.9.0.0/24")
    other = compute.add_subnet("network", "other-vnet", "x", "10.2.0.0/24")
    nsg = compute.add_nsg("network", "app-nsg")
    clock = FakeClock()
    options: dict[str, Any] = dict(
        location=LOCATION,
        resource_group=RG,
        isolated_subnets=[test_subnet],
        write_threads=4,
        read_threads=2,
        poll_interval=5.0,
        clock=clock,
        sleep=clock.sleep,
    )
    bundle = azure_target(container, compute, **options)
    assert isinstance(bundle.cleaner, AzureCleaner)
    return Env(compute, bundle.cleaner, bundle, container, clock, subnet, subnet2, test_subnet, other, nsg)


def spec_for(name: str = "web01", **kw: Any) -> InstanceSpec:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    return InstanceSpec(
        machine_id=f"m-{name}",
        name=name,
        run_id=run_id,
        tags={"lifeboat:run": run_id, "lifeboat:machine": f"m-{name}", "lifeboat:plan": "plan-1"},
        **kw,
    )


def page_ranges(blob: Any) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for r in sorted(blob.list_page_ranges(), key=lambda r: r.start):
        if r.cleared:
            continue
        if out and r.start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], r.end + 1))
        else:
            out.append((r.start, r.end + 1))
    return out


def cleanup(target: Target, resources: list[Resource]) -> list[bool]:
    """What the recovery flow's compensation does: delete in reverse creation order."""
    return [target.cleaner.delete(r) for r in reversed(resources)]


# --- page blobs on Azurite -------------------------------------------------------------------------------
def test_write_disk_makes_a_fixed_vhd_page_blob_with_only_the_non_zero_ranges(
    env: Env, source: Source
) -> None:
    point = source.points["boot"]
    spec = spec_for()
    seen: list[tuple[int, int]] = []
    artifact = env.bundle.disks.write_disk(
        source.repo, point, spec, progress=lambda d, t: seen.append((d, t))
    )

    name = f"{spec.run_id}/{spec.machine_id}/{point.disk_id}.vhd"
    blob = env.container.get_blob_client(name)
    assert artifact.format == "vhd" and artifact.location == blob.url
    assert (artifact.disk_id, artifact.point_id, artifact.disk_size) == ("boot", point.id, BOOT_SIZE)
    (resource,) = artifact.resources
    assert resource.type == "page-blob" and resource.id == blob.url and resource.detail["blob"] == name
    assert seen[-1][0] == seen[-1][1] == artifact.bytes_written

    props = blob.get_blob_properties()
    assert props.blob_type == "PageBlob"
    assert props.metadata == {
        "lifeboat_run": spec.run_id,
        "lifeboat_machine": spec.machine_id,
        "lifeboat_disk": "boot",
        "lifeboat_point": point.id,
    }
    virtual = 7 * MiB
    body = blob.download_blob().readall()
    assert len(body) == props.size == virtual + FOOTER_SIZE
    assert body[:BOOT_SIZE] == source.data["boot"]
    assert body[BOOT_SIZE:virtual] == bytes(virtual - BOOT_SIZE)
    footer = parse_vhd_footer(body[virtual:])
    assert footer.disk_type == 2 and footer.current_size == footer.original_size == virtual
    assert virtual % MiB == 0 and resource.detail["virtual_size"] == str(virtual)

    # Only the non-zero 64 KiB units and the footer were written: the hole and the zero
    # unit are not page ranges (Azurite tracks ranges; only range *diffs* are missing).
    expected = source.nonzero_units("boot")
    assert page_ranges(blob) == [*expected, (virtual, virtual + FOOTER_SIZE)]
    assert (MiB, 2 * MiB) not in expected and all(not (a < 4 * UNIT and b > 3 * UNIT) for a, b in expected)
    assert int(resource.detail["bytes_sent"]) == sum(b - a for a, b in expected) + FOOTER_SIZE

    # read_disk: ranged reads, short only at the disk's end (never the padding or footer).
    assert env.bundle.disks.read_disk(artifact, 0, 4096) == source.data["boot"][:4096]
    assert env.bundle.disks.read_disk(artifact, MiB - 10, 20) == source.data["boot"][MiB - 10 : MiB + 10]
    assert env.bundle.disks.read_disk(artifact, BOOT_SIZE - 100, 4096) == source.data["boot"][-100:]
    assert env.bundle.disks.read_disk(artifact, BOOT_SIZE, 10) == b""

    assert [(r.type, r.id) for r in env.cleaner.find_tagged(spec.run_id)] == [(resource.type, resource.id)]
    assert cleanup(env.bundle, artifact.resources) == [True]
    assert cleanup(env.bundle, artifact.resources) == [False]
    assert env.cleaner.find_tagged(spec.run_id) == []


def test_patch_disk_changes_exactly_the_bytes_asked(env: Env, source: Source) -> None:
    point = source.points["boot"]
    artifact = env.bundle.disks.write_disk(source.repo, point, spec_for())
    blob = env.container.get_blob_client(artifact.resources[0].detail["blob"])
    before = blob.download_blob().readall()

    rng = random.Random(3)
    patches = [
        (1000, b"abc"),  # inside one page
        (511, b"XY"),  # across a page boundary
        (MiB + 4096 + 7, b"in the hole"),  # in a hole (a page that was never written)
        (4 * MiB - 100, rng.randbytes(70 * KiB)),  # across the 4 MiB Put Page limit
        (BOOT_SIZE - 3, b"end"),  # the disk's last bytes (in its last, partial sector)
        (1001, b"Z"),  # overlaps an earlier patch: applied in order
    ]
    assert env.bundle.disks.patch_disk(artifact, patches) == artifact
    expected = bytearray(before)
    for offset, data in patches:
        expected[offset : offset + len(data)] = data
    after = blob.download_blob().readall()
    assert after == bytes(expected)
    assert after[BOOT_SIZE:] == before[BOOT_SIZE:]  # padding and footer untouched
    assert env.bundle.disks.read_disk(artifact, 1000, 3) == b"aZc"

    with pytest.raises(InvalidInputError, match="outside the disk"):
        env.bundle.disks.patch_disk(artifact, [(0, b"ok"), (BOOT_SIZE - 1, b"no")])
    assert blob.download_blob().readall() == bytes(expected)  # nothing applied
    cleanup(env.bundle, artifact.resources)


# --- compute on the fake ---------------------------------------------------------------------------------
def write_machine(env: Env, source: Source, spec: InstanceSpec) -> list[DiskArtifact]:
    return [env.bundle.disks.write_disk(source.repo, source.points[d], spec) for d in ("boot", "data")]


def test_full_flow_create_attach_power_on_validate(env: Env, source: Source) -> None:
    spec = spec_for(instance_type="Standard_D2s_v5")
    disks = write_machine(env, source, spec)
    t = env.bundle

    instance = t.launcher.create_instance(spec, disks)
    assert instance.state == "defined"
    assert [r.type for r in instance.resources] == ["managed-disk", "managed-disk"]
    os_disk, data_disk = (env.compute.disks[r.id.lower()] for r in instance.resources)
    assert os_disk.source_uri == disks[0].location and os_disk.os_type == "Linux"
    assert data_disk.source_uri == disks[1].location and data_disk.os_type is None
    assert os_disk.size_bytes == 7 * MiB and data_disk.size_bytes == 4 * MiB
    assert instance.instance_id == env.compute.resource_id(VM, RG, instance.detail["vm_name"])
    assert env.compute.vms == {}  # defined, not created

    nics = [
        NicSpec(
            source_network="vlan-10", network=env.subnet, security_groups=[env.nsg], private_ip="10.1.0.10"
        ),
        NicSpec(source_network="vlan-20", network=env.subnet2),
    ]
    instance = t.networks.attach_networks(instance, nics)
    assert [r.type for r in instance.resources] == ["managed-disk"] * 2 + ["azure-nic"] * 2
    assert instance.addresses == ["10.1.0.10", "10.1.1.4"]  # static; first free after Azure's reserved
    nic1, nic2 = (env.compute.nics[r.id.lower()] for r in instance.resources[2:])
    assert nic1.subnet_id == env.subnet and nic1.nsg_id == env.nsg and nic1.static
    assert nic2.subnet_id == env.subnet2 and nic2.nsg_id is None and not nic2.static

    instance = t.launcher.power_on(instance)
    assert instance.state == "running"
    assert [r.type for r in instance.resources][-1] == "azure-vm"
    vm = env.compute.vms[instance.instance_id.lower()]
    assert vm.size == "Standard_D2s_v5" and vm.boot_diagnostics
    assert vm.os_disk_id == os_disk.id and vm.data_disk_ids == [data_disk.id]
    assert vm.nic_ids == [nic1.id, nic2.id]  # the first is primary

    evidence = t.validator.validate(instance, ValidationSpec(marker=MARKER, timeout_seconds=60))
    assert evidence.ok and evidence.method == "serial-marker"
    assert evidence.excerpt.endswith(MARKER) and "login:" in evidence.excerpt
    assert (
        evidence.detail["power_state"] == "running" and evidence.detail["provisioning_state"] == "succeeded"
    )
    status = t.validator.validate(instance, ValidationSpec())
    assert status.ok and status.method == "status-checks" and "PowerState/running" in status.excerpt

    # Every ARM resource carries the run's tags; find_tagged sees everything the run made.
    for resource_id in env.compute.all_ids():
        tags = env.compute.tags_of(resource_id)
        assert tags["lifeboat:run"] == spec.run_id and tags["lifeboat:machine"] == spec.machine_id
        assert tags["lifeboat:plan"] == "plan-1"
    everything = [r for d in disks for r in d.resources] + instance.resources
    assert sorted((r.type, r.id) for r in env.cleaner.find_tagged(spec.run_id)) == sorted(
        (r.type, r.id) for r in everything
    )

    # Retrying a step addresses the same resources (creates are PUTs by name).
    again = t.launcher.create_instance(spec, disks)
    assert [r.id for r in again.resources] == [r.id for r in instance.resources[:2]]

    assert cleanup(t, everything) == [True] * len(everything)
    assert env.cleaner.find_tagged(spec.run_id) == [] and env.compute.all_ids() == []
    assert cleanup(t, everything) == [False] * len(everything)  # idempotent


def test_failed_create_vm_leaves_the_caller_able_to_clean_everything(env: Env, source: Source) -> None:
    spec = spec_for()
    disks = write_machine(env, source, spec)
    t = env.bundle
    instance = t.launcher.create_instance(spec, disks[:1])
    instance = t.networks.attach_networks(instance, [NicSpec(source_network="lan", network=env.subnet)])

    # ARM accepted the PUT, then allocation failed: the VM exists in state "failed".
    # power_on deletes it itself and names nothing left over.
    env.compute.fail_next(
        "create_vm", TargetError("allocation failed", code="AllocationFailed", transient=False), created=True
    )
    with pytest.raises(TargetError, match="allocation failed") as failed:
        t.launcher.power_on(instance)
    assert failed.value.fields["code"] == "AllocationFailed" and failed.value.fields["resources"] == []
    assert env.compute.vms == {}

    # Same failure, and deleting the failed VM fails too: the error names it.
    env.compute.fail_next("create_vm", created=True)
    env.compute.fail_next("delete")
    with pytest.raises(TargetError, match="injected failure of create_vm") as failed:
        t.launcher.power_on(instance)
    named = failed.value.fields["resources"]
    assert isinstance(named, list)
    leftovers = [Resource.model_validate(r) for r in named]
    assert [(r.type, r.id) for r in leftovers] == [("azure-vm", instance.instance_id)]
    assert env.compute.vms[instance.instance_id.lower()].provisioning_state == "failed"
    assert len(env.cleaner.find_tagged(spec.run_id)) == 2 + 1 + 1 + 1  # 2 blobs, disk, NIC, VM

    # The caller cleans what the steps listed, in reverse creation order.
    everything = [r for d in disks for r in d.resources] + instance.resources + leftovers
    assert all(cleanup(t, everything))
    assert env.cleaner.find_tagged(spec.run_id) == []
    assert not any(cleanup(t, everything))


def test_a_failing_step_deletes_what_it_created(env: Env, source: Source) -> None:
    spec = spec_for()
    disks = write_machine(env, source, spec)
    t = env.bundle

    # The second disk import fails after ARM created it: both managed disks are deleted again.
    env.compute.fail_next("create_disk_from_vhd", created=True, skip=1)
    with pytest.raises(TargetError, match="injected") as failed:
        t.launcher.create_instance(spec, disks)
    assert failed.value.fields["resources"] == [] and env.compute.disks == {}
    assert [c[0] for c in env.compute.calls].count("delete") == 2

    # A NIC into an unknown subnet: InvalidInputError, and the first NIC is deleted again.
    instance = t.launcher.create_instance(spec, disks)
    missing = env.subnet.replace("/subnets/app", "/subnets/nope")
    with pytest.raises(InvalidInputError, match="does not exist") as bad:
        t.networks.attach_networks(
            instance,
            [NicSpec(source_network="a", network=env.subnet), NicSpec(source_network="b", network=missing)],
        )
    assert bad.value.fields["code"] == "InvalidResourceReference" and env.compute.nics == {}
    assert cleanup(t, [r for d in disks for r in d.resources] + instance.resources) == [True] * 4
    assert env.cleaner.find_tagged(spec.run_id) == []


@pytest.mark.parametrize(
    ("nic", "match"),
    [
        (dict(private_ip="10.1.0.1"), "reserved"),
        (dict(private_ip="10.1.1.10"), "not in"),
        (dict(security_groups=["nsg-a", "nsg-b"]), "one network security group"),
        (dict(network="vnet-1"), "not an Azure subnet id"),
        (dict(isolated=True), "declared isolated"),
    ],
)
def test_invalid_nics_are_refused_and_leave_nothing(
    env: Env, source: Source, nic: dict[str, Any], match: str
) -> None:
    spec = spec_for()
    disks = write_machine(env, source, spec)
    instance = env.bundle.launcher.create_instance(spec, disks[:1])
    with pytest.raises(InvalidInputError, match=match):
        env.bundle.networks.attach_networks(
            instance, [NicSpec(**{"source_network": "lan", "network": env.subnet, **nic})]
        )
    assert env.compute.nics == {}
    cleanup(env.bundle, [r for d in disks for r in d.resources] + instance.resources)


def test_isolated_nics_go_only_to_declared_subnets_and_are_tagged(env: Env, source: Source) -> None:
    spec = spec_for()
    disks = write_machine(env, source, spec)
    instance = env.bundle.launcher.create_instance(spec, disks[:1])
    instance = env.bundle.networks.attach_networks(
        instance,
        [NicSpec(source_network="lan", network=env.test_subnet, private_ip="10.9.0.20", isolated=True)],
    )
    (nic,) = env.compute.nics.values()
    assert nic.tags["lifeboat:isolated"] == "true" and nic.tags["lifeboat:source-network"] == "lan"
    assert instance.addresses == ["10.9.0.20"]
    cleanup(env.bundle, [r for d in disks for r in d.resources] + instance.resources)


def test_vm_rules_arm_enforces(env: Env, source: Source) -> None:
    spec = spec_for(instance_type="Standard_Z99")
    disks = write_machine(env, source, spec)
    instance = env.bundle.launcher.create_instance(spec, disks[:1])
    with pytest.raises(InvalidInputError, match="at least one NIC"):
        env.bundle.launcher.power_on(instance)
    instance = env.bundle.networks.attach_networks(
        instance,
        [
            NicSpec(source_network="a", network=env.subnet),
            NicSpec(source_network="b", network=env.other_vnet_subnet),
        ],
    )
    with pytest.raises(InvalidInputError, match="not available"):
        env.bundle.launcher.power_on(instance)  # unknown size
    ok_size = instance.model_copy(update={"detail": {**instance.detail, "vm_size": "Standard_B2s"}})
    with pytest.raises(InvalidInputError, match="same virtual network"):
        env.bundle.launcher.power_on(ok_size)
    assert env.compute.vms == {}
    with pytest.raises(InvalidInputError, match="not an Azure VM size"):
        env.bundle.launcher.create_instance(spec_for(instance_type="m5.large"), disks)
    cleanup(env.bundle, [r for d in disks for r in d.resources] + instance.resources)


def test_the_fake_checks_the_vhd_like_arm(env: Env, source: Source) -> None:
    spec = spec_for()
    (disk,) = [env.bundle.disks.write_disk(source.repo, source.points["data"], spec)]
    base = env.container.url + f"/{spec.run_id}"

    def artifact(name: str) -> DiskArtifact:
        return disk.model_copy(update={"location": f"{base}/{name}"})

    env.container.upload_blob(f"{spec.run_id}/block.vhd", b"x" * (MiB + 512))
    env.container.get_blob_client(f"{spec.run_id}/nofooter.vhd").create_page_blob(MiB + 512)
    odd = env.container.get_blob_client(f"{spec.run_id}/odd.vhd")
    odd.create_page_blob(3 * MiB + 512)
    footer = (
        env.container.get_blob_client(disk.resources[0].detail["blob"])
        .download_blob(offset=int(disk.resources[0].detail["virtual_size"]), length=512)
        .readall()
    )
    odd.upload_page(footer, offset=3 * MiB, length=512)  # a footer that disagrees with the blob's size
    unaligned = env.container.get_blob_client(f"{spec.run_id}/unaligned.vhd")
    size = MiB + 3 * 512  # a consistent fixed VHD, but not a whole number of MiB
    unaligned.create_page_blob(size + 512)
    unaligned.upload_page(
        vhd_footer(size, uuid=uuid.uuid4(), timestamp=datetime.now(UTC)), offset=size, length=512
    )
    for name, match in [
        ("missing.vhd", "does not exist"),
        ("block.vhd", "not a page blob"),
        ("nofooter.vhd", "valid VHD footer"),
        ("odd.vhd", "does not match"),
        ("unaligned.vhd", "not a multiple of 1 MiB"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            env.bundle.launcher.create_instance(spec, [artifact(name)])
        assert env.compute.disks == {}
    for name in ("block.vhd", "nofooter.vhd", "odd.vhd", "unaligned.vhd"):
        env.container.delete_blob(f"{spec.run_id}/{name}")
    cleanup(env.bundle, disk.resources)


def test_validate_reports_a_missing_marker_and_a_stopped_vm(env: Env, source: Source) -> None:
    env.compute.boot = lambda vm: "kernel panic - not syncing\n"
    spec = spec_for()
    disks = write_machine(env, source, spec)
    t = env.bundle
    instance = t.launcher.create_instance(spec, disks[:1])
    instance = t.networks.attach_networks(instance, [NicSpec(source_network="lan", network=env.subnet)])
    instance = t.launcher.power_on(instance)

    env.compute.fail_next("serial_log")  # transient: retried within the timeout
    start = env.clock.now
    evidence = t.validator.validate(instance, ValidationSpec(marker=MARKER, timeout_seconds=30))
    assert not evidence.ok and evidence.method == "serial-marker" and evidence.detail["timed_out"]
    assert "not on the serial console" in evidence.reason and "kernel panic" in evidence.excerpt
    assert 30 <= env.clock.now - start < 36

    env.compute.set_power_state(instance.instance_id, "stopped")  # stopped before the marker: failed at once
    start = env.clock.now
    evidence = t.validator.validate(instance, ValidationSpec(marker=MARKER, timeout_seconds=30))
    assert not evidence.ok and "stopped" in evidence.reason and env.clock.now == start

    env.compute.set_power_state(instance.instance_id, "running")
    env.compute.append_serial(instance.instance_id, f"late boot\n{MARKER}\nmore\n")
    evidence = t.validator.validate(instance, ValidationSpec(marker=MARKER, timeout_seconds=30))
    assert evidence.ok and evidence.excerpt.endswith(MARKER) and "more" not in evidence.excerpt
    assert set(evidence.detail["timings"]) >= {"disk_import_0", "nic_0", "vm_create", "boot"}

    env.compute.append_serial(instance.instance_id, "Kernel panic - not syncing: VFS\n")  # a fail pattern
    evidence = t.validator.validate(instance, ValidationSpec(timeout_seconds=30))
    assert not evidence.ok and evidence.detail["failed_on"] == "Kernel panic - not syncing"

    everything = [r for d in disks for r in d.resources] + instance.resources
    assert all(cleanup(env.bundle, everything)) and env.cleaner.find_tagged(spec.run_id) == []


def test_delete_is_idempotent_per_type(env: Env, source: Source) -> None:
    t = env.bundle.cleaner
    for kind, resource_type in (("managed-disk", DISK), ("azure-nic", NIC), ("azure-vm", VM)):
        gone = Resource(type=kind, id=env.compute.resource_id(resource_type, RG, "never-made"))
        assert t.delete(gone) is False
    assert t.delete(Resource(type="page-blob", id="x", detail={"blob": "never/made.vhd"})) is False
    with pytest.raises(InvalidInputError):
        t.delete(Resource(type="ebs-snapshot", id="snap-1"))


def test_arm_names_are_valid_and_unique() -> None:
    assert arm_name(["lb", "web01"], 64) == "lb-web01"
    long = arm_name(["lb", "x" * 100], 64)
    assert len(long) == 64 and long != arm_name(["lb", "x" * 101], 64)
    assert arm_name(["lb", "a b"], 80) != arm_name(["lb", "a-b"], 80)
    odd = arm_name(["lb", "ünïcode/name."], 80)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*[A-Za-z0-9_]", odd) and "code-name" in odd


def test_instance_round_trips_through_json(env: Env, source: Source) -> None:
    """The flow passes instances between states as JSON."""
    spec = spec_for()
    disks = write_machine(env, source, spec)
    instance = env.bundle.launcher.create_instance(spec, disks)
    instance = env.bundle.networks.attach_networks(
        instance, [NicSpec(source_network="lan", network=env.subnet)]
    )
    restored = Instance.model_validate_json(instance.model_dump_json())
    instance = env.bundle.launcher.power_on(restored)
    assert instance.state == "running"
    assert all(cleanup(env.bundle, [r for d in disks for r in d.resources] + instance.resources))


def test_firmware_and_detected_os_choose_generation_and_os_type(env: Env, source: Source) -> None:
    """UEFI machines import as Hyper-V generation V2; the OS type OS preparation found wins."""
    spec = spec_for(firmware=Firmware.EFI, os_family="windows")
    disks = write_machine(env, source, spec)
    instance = env.bundle.launcher.create_instance(spec, disks)
    os_disk = env.compute.disks[instance.detail["os_disk_id"].lower()]
    assert (os_disk.hyper_v_generation, os_disk.os_type) == ("V2", "Windows")
    data_disk = env.compute.disks[instance.detail["data_disk_ids"][0].lower()]
    assert data_disk.os_type is None
    bios = spec_for(name="legacy")  # BIOS, OS not inspected: the site's os_type (Linux)
    legacy_disks = write_machine(env, source, bios)
    legacy = env.bundle.launcher.create_instance(bios, legacy_disks)
    legacy_disk = env.compute.disks[legacy.detail["os_disk_id"].lower()]
    assert (legacy_disk.hyper_v_generation, legacy_disk.os_type) == ("V1", "Linux")
    for inst, ds in ((instance, disks), (legacy, legacy_disks)):
        assert all(cleanup(env.bundle, [r for d in ds for r in d.resources] + inst.resources))


def test_two_nics_on_one_production_subnet_share_one_isolated_network(env: Env, source: Source) -> None:
    spec = spec_for(name="dual")
    disks = write_machine(env, source, spec)
    instance = env.bundle.launcher.create_instance(spec, disks[:1])
    isolated = [
        NicSpec(source_network=n, network=env.subnet, isolated=True, isolate_on_target=True)
        for n in ("a", "b")
    ]
    instance = env.bundle.networks.attach_networks(instance, isolated)
    vnets = [r for r in instance.resources if r.type == "azure-vnet"]
    assert len(vnets) == 1 and len(env.compute.vnets) == 1  # listed once, created once
    nics = [env.compute.nics[i.lower()] for i in instance.detail["nic_ids"]]
    assert {n.subnet_id.rsplit("/subnets/", 1)[0].lower() for n in nics} == {vnets[0].id.lower()}
    assert all(cleanup(env.bundle, [r for d in disks for r in d.resources] + instance.resources))
    assert env.compute.vnets == {} and env.cleaner.find_tagged(spec.run_id) == []
