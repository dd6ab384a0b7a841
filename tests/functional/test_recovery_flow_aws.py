"""The recovery flow into AWS, under moto (``mock_aws``, in-process): the same ASL definition
and handlers as every other platform, with the real AWS target (EBS direct snapshots,
AMI, ENIs in the mapped subnet with the mapped security groups and fixed IP, run_instances,
status checks), then the test-cleanup flow. moto's gaps are listed in the
modules of node_runtime/recovery/targets/aws/; what moto does not keep (AMI block device
mappings) is not asserted here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from functions.recovery.local_runner import run_cleanup, run_recovery
from functions.recovery.ports import RecoveryPorts
from node_runtime.recovery.ebs_direct import EBS_BLOCK_SIZE
from node_runtime.recovery.targets.aws import AwsTarget, Poll
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.files import FileSource
from shared.adapters.local.folder_store import FolderStore
from shared.domain.inventory import Site, SiteKind
from shared.domain.plans import BootGroup, NetworkMapping, ProtectedDisk, ProtectedMachine, ProtectionPlan
from shared.domain.points import DiskPoint, RecoveryPoint
from shared.domain.recovery import AwsTargetConfig, RecoveryMode
from shared.repo.keys import KdfParams
from shared.repo.repository import Repository
from shared.services.recovery import build_flow_input
from tests.support.disks import MiB, create

REGION = "eu-west-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    import boto3
    from moto import mock_aws

    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION), boto3.client("ebs", region_name=REGION)


def test_test_recovery_into_aws_then_cleanup_leaves_nothing(aws: tuple[Any, Any], tmp_path: Path) -> None:
    ec2, ebs = aws
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    prod = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
    bubble = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.9.0/24")["Subnet"]["SubnetId"]
    sgs = [
        ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"] for n in ("web", "mgmt")
    ]

    repo = Repository.init(
        FolderStore(tmp_path / "repo"), "pw", kdf=KdfParams(iterations=1, memory_kib=8192, lanes=1)
    )
    images, points = {}, []
    for i, m in enumerate(("db", "web")):
        images[m] = create(tmp_path / f"{m}.img", 3 * MiB + 1000 * i, seed=70 + i).read_bytes()
        with FileSource(str(tmp_path / f"{m}.img")) as src:
            p = replicate(repo, f"{m}-d0", src, ReplicationOptions(block_size=MiB))
        points.append(RecoveryPoint(
            id=f"run-{m}", plan_id="p", machine_id=m, run_id="run", time=datetime.now(UTC), site_id="aws",
            disks=[DiskPoint(disk_id=f"{m}-d0", point_id=p.id, disk_size=p.disk_size)]))  # fmt: skip
    plan = ProtectionPlan(
        id="p", name="p", source_site_id="vmw", target_site_id="aws",
        machines=[ProtectedMachine(machine_id="db", disks=[ProtectedDisk(disk_id="db-d0", source="/x")],
                                   networks=["lan"], private_ip="10.30.9.20", instance_type="t3.large"),
                  ProtectedMachine(machine_id="web", disks=[ProtectedDisk(disk_id="web-d0", source="/y")],
                                   networks=["lan"])],
        network_mapping=[NetworkMapping(source_network="lan", target_network=prod, test_network=bubble,
                                        security_groups=sgs)],
        boot_groups=[BootGroup(name="data", machines=["db"]), BootGroup(name="front", machines=["web"])],
    )  # fmt: skip
    site = Site(id="aws", name="aws", site_kind=SiteKind.AWS, repository_url="unused",
                recovery_target=AwsTargetConfig(region=REGION))  # fmt: skip
    flow = build_flow_input(plan, site, points, job_id="job-aws", mode=RecoveryMode.TEST, point_time=None,
                            now=datetime.now(UTC))  # fmt: skip
    target = AwsTarget(ec2, ebs, threads=4, poll=Poll(interval=0.01, timeout=5, snapshot_timeout=5))
    ports = RecoveryPorts(target_for=lambda _cfg: _bundle(target), open_repository=lambda _u, _c: repo)

    report, _ = run_recovery(flow, ports, sleep=lambda s: None)

    assert report.state == "succeeded", report.errors
    assert [g.name for g in report.groups] == ["data", "front"]
    machines = {m.machine_id: m for m in report.machines()}
    for m, data in images.items():
        snapshot = next(r.id for r in machines[m].resources if r.type == "ebs-snapshot")
        written = {
            b["BlockIndex"]: b["BlockToken"] for b in ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]
        }
        for index in range(-(-len(data) // EBS_BLOCK_SIZE)):
            expected = data[index * EBS_BLOCK_SIZE : (index + 1) * EBS_BLOCK_SIZE].ljust(
                EBS_BLOCK_SIZE, b"\0"
            )
            if index not in written:
                assert not any(expected), f"{m}: block {index} has data but was not written"
                continue
            got = ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=index, BlockToken=written[index])
            assert got["BlockData"].read() == expected, f"{m}: block {index} differs"
    db_instance = machines["db"].instance_id
    described = ec2.describe_instances(InstanceIds=[db_instance])["Reservations"][0]["Instances"][0]
    nic = described["NetworkInterfaces"][0]
    assert described["SubnetId"] == bubble and nic["SubnetId"] == bubble  # a test lands in the bubble
    assert nic["PrivateIpAddress"] == "10.30.9.20"
    assert sorted(g["GroupId"] for g in nic["Groups"]) == sorted(sgs)
    assert described["InstanceType"] == "t3.large"
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert (
        tags["lifeboat:run"] == "job-aws"
        and tags["lifeboat:machine"] == "db"
        and tags["lifeboat:mode"] == "test"
    )
    assert all(m.evidence and m.evidence.ok and m.evidence.method.startswith("status-checks")
               for m in machines.values())  # fmt: skip
    assert target.find_tagged("job-aws")

    outcome = run_cleanup(
        {"report_id": report.id, "target": site.recovery_target.model_dump(),  # type: ignore[union-attr]
         "machines": [{"machine_id": m.machine_id, "resources": [r.model_dump() for r in m.resources]}
                      for m in report.machines()]},
        ports, sleep=lambda s: None,
    )  # fmt: skip
    assert not outcome.failed and outcome.deleted
    assert target.find_tagged("job-aws") == []
    state = ec2.describe_instances(InstanceIds=[db_instance])["Reservations"][0]["Instances"][0]["State"][
        "Name"
    ]
    assert state == "terminated"


def _bundle(target: AwsTarget) -> Any:
    from node_runtime.recovery.targets.base import Target

    return Target(
        kind="aws", disks=target, launcher=target, networks=target, validator=target, cleaner=target
    )
