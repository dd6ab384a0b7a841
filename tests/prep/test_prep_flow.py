"""Guest preparation as the recovery flow's PrepareOS state, as a node runs it (marker ``prep``).

Real parts: a Debian-layout ext4 image replicated into a folder repository, reconstruction,
the ASL flow on the local runner, the node's guest preparation (NBD export of the target's
disk, qcow2 overlay, libguestfs) and the patches written through the target's patch_disk.
The platform is the in-memory fake target; the disk it ends with is read back with
libguestfs. A flow without a node (Lambda) reports that guest preparation did not run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from functions.api.report_html import render_report_html
from functions.recovery.local_runner import run_recovery
from functions.recovery.node_jobs import guest_prep
from functions.recovery.ports import RecoveryPorts
from node_runtime.prep.guest import DiskSource, open_guest
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.files import FileSource
from shared.adapters.local.folder_store import FolderStore
from shared.domain.inventory import Site, SiteKind
from shared.domain.plans import NetworkMapping, ProtectedDisk, ProtectedMachine, ProtectionPlan
from shared.domain.points import DiskPoint, RecoveryPoint
from shared.domain.recovery import DiskArtifact, QemuTargetConfig, RecoveryMode
from shared.repo.keys import KdfParams
from shared.repo.repository import Repository
from shared.services.recovery import build_flow_input
from tests.prep.linux_images import debian_image
from tests.support.fake_target import FakeTarget

pytestmark = pytest.mark.prep


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("prep-flow")
    image = debian_image(root / "web.img")
    repo = Repository.init(
        FolderStore(root / "repo"), "pw", kdf=KdfParams(iterations=1, memory_kib=8192, lanes=1)
    )
    with FileSource(str(image)) as src:
        p = replicate(repo, "web-disk", src, ReplicationOptions(block_size=1 << 20))
    point = RecoveryPoint(
        id="run-1-web", plan_id="plan-1", machine_id="web", run_id="run-1", time=datetime(2026, 12, 1, tzinfo=UTC),
        site_id="dr", disks=[DiskPoint(disk_id="web-disk", point_id=p.id, disk_size=p.disk_size)],
    )  # fmt: skip
    plan = ProtectionPlan(
        id="plan-1", name="web", source_site_id="prod", target_site_id="dr",
        machines=[ProtectedMachine(machine_id="web", disks=[ProtectedDisk(disk_id="web-disk", source="/x/web")])],
    )  # fmt: skip
    site = Site(id="dr", name="dr", site_kind=SiteKind.LOCAL, repository_url=str(root / "repo"),
                credentials_ref="env:UNUSED", recovery_target=QemuTargetConfig(work_dir=str(root / "vms")))  # fmt: skip
    return {"repo": repo, "point": point, "plan": plan, "site": site, "root": root}


def _run(protected: dict[str, Any], fake: FakeTarget, **ports: Any) -> Any:
    flow = build_flow_input(protected["plan"], protected["site"], [protected["point"]], job_id="job-1",
                            mode=RecoveryMode.TEST, point_time=None, now=datetime.now(UTC))  # fmt: skip
    notes: list[str] = []
    report, _ = run_recovery(
        flow.model_copy(deep=True),
        RecoveryPorts(target_for=lambda _c: fake.target(), open_repository=lambda _u, _c: protected["repo"],
                      notify=notes.append, **ports),
        sleep=lambda _s: None,
    )  # fmt: skip
    return report, notes


def test_node_flow_prepares_the_guest_and_the_target_disk_holds_the_changes(
    protected: dict[str, Any],
) -> None:
    fake = FakeTarget()
    report, notes = _run(protected, fake, guest_prep=guest_prep)
    assert report.state == "succeeded", report.errors
    (machine,) = report.machines()
    guest = machine.os["guest"]
    assert guest["os"]["distro"] == "debian" and guest["applied"] and not guest["refused"]
    applied = {(c["code"], c["status"]) for c in guest["changes"]}
    assert ("linux.fstab_by_uuid", "applied") in applied and ("linux.network_dhcp", "applied") in applied
    failed = [c for c in guest["changes"] if c["status"] == "failed"]
    assert [c["code"] for c in failed] == [
        "linux.initramfs_drivers"
    ]  # no real update-initramfs in this image
    assert all("content" not in c for c in guest["changes"])  # the report stays small
    assert machine.os["os_family"] == "linux" and machine.os["guest_bytes_patched"] > 0
    assert any(
        "preparing the guest for qemu" in n and "linux.fstab_by_uuid" in n for n in notes
    )  # before the changes
    page = render_report_html(report)
    assert (
        "Guest preparation for qemu: linux" in page
        and "<td>linux.fstab_by_uuid</td><td>/etc/fstab</td>" in page
    )
    (disk,) = fake.disks.values()
    image = protected["root"] / "recovered.img"
    image.write_bytes(bytes(disk))
    with open_guest([DiskSource(path=str(image))], readonly=True) as g:
        (root,) = g.roots()
        g.mount_root(root, writable=False)
        assert "UUID=" in g.read_text("/etc/fstab") and "/dev/sda1" not in g.read_text("/etc/fstab")
        assert "console=ttyS0,115200" in g.read_text("/boot/grub/grub.cfg")
        assert not g.exists("/etc/udev/rules.d/70-persistent-net.rules")


def test_flow_without_a_node_says_guest_preparation_did_not_run(protected: dict[str, Any]) -> None:
    report, _ = _run(protected, FakeTarget())
    (machine,) = report.machines()
    assert machine.os["guest"] is None
    assert "guest_prep_not_run" in {f["code"] for f in machine.os["findings"]}


def test_guest_preparation_failure_is_a_finding_and_the_machine_still_recovers(
    protected: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIBGUESTFS_BACKEND", "no-such-backend")  # the appliance cannot start
    report, _ = _run(protected, FakeTarget(), guest_prep=guest_prep)
    (machine,) = report.machines()
    assert report.state == "succeeded" and machine.status == "recovered"
    (failure,) = [f for f in machine.os["findings"] if f["code"] == "guest_prep_failed"]
    assert failure["severity"] == "error" and "libguestfs appliance" in failure["message"]


def test_a_site_can_turn_guest_preparation_off(protected: dict[str, Any]) -> None:
    site = protected["site"].model_copy(deep=True)
    site.recovery_target.prepare_guest = False
    report, _ = _run({**protected, "site": site}, FakeTarget(), guest_prep=guest_prep)
    (machine,) = report.machines()
    assert report.state == "succeeded" and machine.os["guest"] is None
    assert "guest_prep_off" in {f["code"] for f in machine.os["findings"]}


def test_guest_preparation_patches_an_ebs_snapshot_under_moto(
    protected: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The AWS target's disks are EBS snapshots: the appliance reads one over NBD (EBS direct
    GetSnapshotBlock) and the changes land in a new snapshot (patch_disk), read back here."""
    import boto3
    from moto import mock_aws

    from node_runtime.recovery.ebs_direct import EBS_BLOCK_SIZE
    from node_runtime.recovery.targets.aws import AwsTarget, Poll
    from node_runtime.recovery.targets.base import Target
    from shared.domain.recovery import AwsTargetConfig

    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    site = protected["site"].model_copy(update={"recovery_target": AwsTargetConfig(region="eu-west-1")})
    with mock_aws():
        ec2, ebs = boto3.client("ec2", region_name="eu-west-1"), boto3.client("ebs", region_name="eu-west-1")
        aws = AwsTarget(ec2, ebs, threads=4, poll=Poll(interval=0.01, timeout=5, snapshot_timeout=5))
        target = Target(kind="aws", disks=aws, launcher=aws, networks=aws, validator=aws, cleaner=aws)
        vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.9.0/24")["Subnet"]["SubnetId"]
        plan = protected["plan"].model_copy(deep=True)
        plan.machines[0].networks = ["lan"]
        plan.network_mapping = [
            NetworkMapping(source_network="lan", target_network=subnet, test_network=subnet)
        ]
        flow = build_flow_input(plan, site, [protected["point"]], job_id="job-aws", mode=RecoveryMode.TEST,
                                point_time=None, now=datetime.now(UTC))  # fmt: skip
        report, _ = run_recovery(
            flow, RecoveryPorts(target_for=lambda _c: target, open_repository=lambda _u, _c: protected["repo"],
                                guest_prep=guest_prep), sleep=lambda _s: None)  # fmt: skip
        assert report.state == "succeeded", report.errors
        (machine,) = report.machines()
        guest = machine.os["guest"]
        assert guest["target"] == "aws" and guest["applied"]
        assert ("linux.fstab_by_uuid", "applied") in {(c["code"], c["status"]) for c in guest["changes"]}
        assert any(
            "ens5" in (c.get("after") or "") for c in guest["changes"] if c["code"] == "linux.network_dhcp"
        )
        snapshots = [r.id for r in machine.resources if r.type == "ebs-snapshot"]
        assert snapshots, machine.resources
        point = protected["point"].disks[0]
        parent, child = snapshots  # the reconstructed snapshot, then the prepared child
        artifact = DiskArtifact(disk_id=point.disk_id, point_id=point.point_id, disk_size=point.disk_size,
                                format="ebs-snapshot", location=parent)  # fmt: skip
        disk = bytearray(aws.read_disk(artifact, 0, artifact.disk_size))
        # moto ignores ParentSnapshotId (node_runtime/recovery/targets/aws/disks.py): the child's
        # blocks are laid over the parent here, as EBS does
        listed, token = [], {}
        while True:
            page = ebs.list_snapshot_blocks(SnapshotId=child, **token)
            listed += page["Blocks"]
            if not page.get("NextToken"):
                break
            token = {"NextToken": page["NextToken"]}
        assert listed, "the prepared snapshot holds no block"
        for block in listed:
            data = ebs.get_snapshot_block(SnapshotId=child, BlockIndex=block["BlockIndex"],
                                          BlockToken=block["BlockToken"])["BlockData"].read()  # fmt: skip
            at = block["BlockIndex"] * EBS_BLOCK_SIZE  # moto's BlockSize field says 512
            disk[at : at + len(data)] = data[: max(0, len(disk) - at)]
        image = protected["root"] / "aws-recovered.img"
        image.write_bytes(bytes(disk))
    with open_guest([DiskSource(path=str(image))], readonly=True) as g:
        (root,) = g.roots()
        g.mount_root(root, writable=False)
        assert "/dev/sda1" not in g.read_text("/etc/fstab") and "UUID=" in g.read_text("/etc/fstab")
        assert "allow-hotplug ens5" in g.read_text("/etc/network/interfaces.d/lifeboat")
