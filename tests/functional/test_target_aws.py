"""The AWS recovery target under moto (``mock_aws``, in-process): the capability contract.

A 6 MiB (+ an odd tail) image with a whole-MiB hole and a zero 512 KiB block inside data
is replicated into a repository (1 MiB point blocks), then written to an EBS snapshot,
defined as an AMI, given ENIs, launched, validated and cleaned up.

moto does not check what matters most on AWS (see the module docstrings of
``node_runtime.recovery.targets.aws``): RegisterImage keeps none of the mappings, StartSnapshot ignores ParentSnapshotId, status
checks and the console are canned. Those calls are asserted on what was *sent* (a spy
client), the rest on what EC2 reports back. Waits use a fake clock: nothing sleeps.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from node_runtime.recovery.ebs_direct import EBS_BLOCK_SIZE
from node_runtime.recovery.targets.aws import AwsDisks, AwsTarget, Poll, aws_target
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
from shared.errors import InvalidInputError, TargetError
from shared.repo.keys import ZERO_ID, KdfParams
from shared.repo.points import PointRecord
from shared.repo.repository import Repository
from tests.support.disks import create

KiB, MiB = 1 << 10, 1 << 20
DISK_SIZE = 6 * MiB + 192 * KiB + 1000
REGION = "us-east-1"
RUN = "run-7"


@dataclass
class Source:
    data: bytes
    repo: Repository
    point: PointRecord

    def nonzero_blocks(self) -> set[int]:
        bs = EBS_BLOCK_SIZE
        return {i for i in range(-(-len(self.data) // bs)) if any(self.data[i * bs : (i + 1) * bs])}

    def block(self, i: int) -> bytes:
        b = self.data[i * EBS_BLOCK_SIZE : (i + 1) * EBS_BLOCK_SIZE]
        return b + bytes(EBS_BLOCK_SIZE - len(b))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    tmp = tmp_path_factory.mktemp("aws-target")
    image = create(tmp / "vm.img", DISK_SIZE, seed=3)
    data = bytearray(image.read_bytes())
    rng = random.Random(9)
    for mib in (0, 1, 3, 5):  # data where the test needs it, whatever the seed drew
        if not any(data[mib * MiB : (mib + 1) * MiB]):
            data[mib * MiB : (mib + 1) * MiB] = rng.randbytes(MiB)
    data[2 * MiB : 3 * MiB] = bytes(MiB)  # a hole in the point
    data[MiB + 512 * KiB : 2 * MiB] = bytes(512 * KiB)  # a zero EBS block inside a data block
    data[-3000:] = rng.randbytes(3000)  # data up to the last (odd) byte
    image.write_bytes(data)

    store = FolderStore(tmp / "repo", fsync=False)
    Repository.init(store, "pw", kdf=KdfParams(iterations=1, memory_kib=8192, lanes=1))
    repo = Repository.open(store, lambda: "pw")
    with FileSource(image) as src:
        opts = ReplicationOptions(block_size=MiB, pack_target=4 * MiB, streams=2, workers=2)
        point = replicate(repo, "vm-disk0", src, opts)
    assert ZERO_ID in repo.block_map(point)
    return Source(bytes(data), repo, point)


class FakeClock:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += 1
        self.now += seconds


class Spy:
    """A boto3 client that records the keyword arguments of some calls and can fail them."""

    def __init__(self, client: Any, *recorded: str) -> None:
        self._client = client
        self._recorded = set(recorded)
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.fail: dict[str, Any] = {}  # method -> callable(kwargs) raising, or None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._client, name)
        if name not in self._recorded and name not in self.fail:
            return real

        def call(**kwargs: Any) -> Any:
            with self._lock:
                self.calls.setdefault(name, []).append(kwargs)
            hook = self.fail.get(name)
            if hook is not None:
                return hook(real, kwargs)
            return real(**kwargs)

        return call


def client_error(code: str, op: str = "Op") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"}}, op)


@dataclass
class Aws:
    ec2: Any
    ebs: Any
    ec2_spy: Spy
    ebs_spy: Spy
    clock: FakeClock
    target: AwsTarget


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    import boto3
    from moto import mock_aws

    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        ebs = boto3.client("ebs", region_name=REGION)
        ec2_spy = Spy(ec2, "register_image", "run_instances", "create_network_interface")
        ebs_spy = Spy(ebs, "start_snapshot", "put_snapshot_block", "complete_snapshot", "get_snapshot_block")
        clock = FakeClock()
        poll = Poll(interval=0.5, timeout=10, snapshot_timeout=10, sleep=clock.sleep, clock=clock.clock)
        target = AwsTarget(ec2_spy, ebs_spy, threads=4, poll=poll)
        yield Aws(ec2, ebs, ec2_spy, ebs_spy, clock, target)


@dataclass
class Net:
    vpc: str
    subnet: str
    sgs: list[str]


def network(ec2: Any) -> Net:
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"][
        "SubnetId"
    ]
    sgs = [
        ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]
        for name in ("web", "admin")
    ]
    return Net(vpc, subnet, sgs)


def spec(**kw: Any) -> InstanceSpec:
    args: dict[str, Any] = {
        "machine_id": "m-1",
        "name": "web01",
        "run_id": RUN,
        "tags": {"owner": "dr-team"},
    }
    args.update(kw)
    return InstanceSpec(**args)


def snapshot_blocks(ebs: Any, snap: str) -> dict[int, bytes]:
    out = {}
    for b in ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]:
        i = int(b["BlockIndex"])
        got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockToken=b["BlockToken"])
        out[i] = got["BlockData"].read()
    return out


def tags_of(item: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", item.get("TagSet", []))}  # ENIs say TagSet


def found(target: AwsTarget) -> list[tuple[str, str]]:
    return sorted((r.type, r.id) for r in target.find_tagged(RUN))


# --- disks ----------------------------------------------------------------------------------------------
def test_write_disk_puts_exactly_the_points_non_zero_blocks(source: Source, aws: Aws) -> None:
    seen: list[tuple[int, int]] = []
    art = aws.target.write_disk(source.repo, source.point, spec(), progress=lambda d, t: seen.append((d, t)))
    snap = art.location
    assert art.format == "ebs-snapshot" and art.disk_id == source.point.disk_id
    assert art.point_id == source.point.id and art.disk_size == DISK_SIZE
    assert art.resources == [
        Resource(
            type="ebs-snapshot",
            id=snap,
            detail={"disk_id": source.point.disk_id, "point_id": source.point.id, "volume_size_gib": "1"},
        )
    ]
    assert seen and seen[-1][0] == seen[-1][1] == art.bytes_written

    (start,) = aws.ebs_spy.calls["start_snapshot"]
    assert start["VolumeSize"] == 1
    expected = source.nonzero_blocks()
    assert 3 < len(expected) < -(-DISK_SIZE // EBS_BLOCK_SIZE)  # holes and zero blocks were not sent
    assert sorted(c["BlockIndex"] for c in aws.ebs_spy.calls["put_snapshot_block"]) == sorted(expected)
    blocks = snapshot_blocks(aws.ebs, snap)
    assert set(blocks) == expected
    for i, data in blocks.items():
        assert data == source.block(i), f"block {i}"

    (described,) = aws.ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"]
    assert described["State"] == "completed" and described["VolumeSize"] == 1
    assert tags_of(described) == {
        "Name": "web01",
        "owner": "dr-team",
        "lifeboat:run": RUN,
        "lifeboat:machine": "m-1",
        "lifeboat:disk": source.point.disk_id,
        "lifeboat:point": source.point.id,
    }

    # read_disk: all of it, ranges across block boundaries, the short end, past the end.
    assert aws.target.read_disk(art, 0, DISK_SIZE + 4096) == source.data
    for off, n in [
        (EBS_BLOCK_SIZE - 10, 20),
        (2 * MiB + 5, 700 * KiB),
        (MiB + 100, MiB),
        (DISK_SIZE - 50, 200),
    ]:
        assert aws.target.read_disk(art, off, n) == source.data[off : off + n], (off, n)
    assert aws.target.read_disk(art, DISK_SIZE, 10) == b""
    gets = len(aws.ebs_spy.calls["get_snapshot_block"])
    assert gets == len(expected)  # each written block fetched once, absent ones never
    assert aws.target.read_disk(art, 100, 10) == source.data[100:110]  # from the cache
    assert len(aws.ebs_spy.calls["get_snapshot_block"]) == gets
    with pytest.raises(InvalidInputError):
        aws.target.read_disk(art, -1, 10)


def test_a_failed_write_leaves_no_snapshot(source: Source, aws: Aws) -> None:
    aws.ebs_spy.fail["put_snapshot_block"] = lambda real, kw: (_ for _ in ()).throw(
        client_error("InternalServerException", "PutSnapshotBlock")
    )
    with pytest.raises(TargetError, match="PutSnapshotBlock"):
        aws.target.write_disk(source.repo, source.point, spec())
    assert found(aws.target) == []


def test_patch_disk_writes_a_child_snapshot_of_the_touched_blocks(source: Source, aws: Aws) -> None:
    art = aws.target.write_disk(source.repo, source.point, spec())
    parent = art.location
    patches = [
        (EBS_BLOCK_SIZE - 3, b"ACROSS-A-BOUNDARY"),  # blocks 0 and 1
        (2 * MiB + 4096, b"in a hole"),  # block 4: absent from the parent
        (DISK_SIZE - 4, b"TAIL"),  # the last, partial block
        (EBS_BLOCK_SIZE - 3, b"acr"),  # a later patch wins over an earlier one
    ]
    want = bytearray(source.data)
    for off, data in patches:
        want[off : off + len(data)] = data
    puts_before = len(aws.ebs_spy.calls["put_snapshot_block"])

    patched = aws.target.patch_disk(art, patches)

    child = patched.location
    assert child != parent and art.location == parent  # the input artifact is unchanged
    assert [r.id for r in patched.resources] == [parent, child]
    assert patched.resources[1].type == "ebs-snapshot" and patched.resources[1].detail["parent"] == parent
    start = aws.ebs_spy.calls["start_snapshot"][-1]
    assert start["ParentSnapshotId"] == parent and start["VolumeSize"] == 1
    last = (DISK_SIZE - 1) // EBS_BLOCK_SIZE
    touched = {0, 1, 4, last}
    puts = aws.ebs_spy.calls["put_snapshot_block"][puts_before:]
    assert sorted(p["BlockIndex"] for p in puts) == sorted(touched)
    assert aws.ebs_spy.calls["complete_snapshot"][-1] == {"SnapshotId": child, "ChangedBlocksCount": 4}

    # The touched blocks are whole read-modify-write copies of the parent's.
    blocks = snapshot_blocks(aws.ebs, child)
    assert set(blocks) == touched  # moto: ParentSnapshotId ignored, so nothing else is there
    for i in touched:
        expected = bytes(want[i * EBS_BLOCK_SIZE : (i + 1) * EBS_BLOCK_SIZE])
        assert blocks[i] == expected + bytes(EBS_BLOCK_SIZE - len(expected)), f"block {i}"
    for off, data in patches[:3]:
        assert aws.target.read_disk(patched, off, len(data)) == bytes(want[off : off + len(data)])

    (described,) = aws.ec2.describe_snapshots(SnapshotIds=[child])["Snapshots"]
    assert tags_of(described)["lifeboat:parent-snapshot"] == parent
    assert tags_of(described)["lifeboat:run"] == RUN

    assert aws.target.patch_disk(patched, []) == patched
    with pytest.raises(InvalidInputError, match="outside"):
        aws.target.patch_disk(patched, [(DISK_SIZE - 2, b"xyz")])

    for r in reversed(patched.resources):
        assert aws.target.delete(r) is True
    assert found(aws.target) == []


# --- the whole machine ------------------------------------------------------------------------------------
def test_full_flow_then_cleanup_leaves_nothing(source: Source, aws: Aws) -> None:
    net = network(aws.ec2)
    art = aws.target.write_disk(source.repo, source.point, spec())

    inst = aws.target.create_instance(spec(instance_type="t3.medium"), [art])
    assert inst.state == "defined" and inst.machine_id == "m-1"
    ami = inst.instance_id
    assert ami.startswith("ami-") and [r.type for r in inst.resources] == ["ami"]
    assert inst.detail["instance_type"] == "t3.medium" and inst.detail["image_id"] == ami
    (reg,) = aws.ec2_spy.calls["register_image"]
    assert reg["RootDeviceName"] == "/dev/xvda" and reg["VirtualizationType"] == "hvm"
    assert reg["EnaSupport"] is True and reg["BootMode"] == "legacy-bios" and reg["Architecture"] == "x86_64"
    assert reg["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {
                "SnapshotId": art.location,
                "VolumeSize": 1,
                "VolumeType": "gp3",
                "DeleteOnTermination": True,
            },
        }
    ]
    (image,) = aws.ec2.describe_images(ImageIds=[ami])["Images"]
    assert tags_of(image)["lifeboat:run"] == RUN and tags_of(image)["lifeboat:machine"] == "m-1"

    nics = [
        NicSpec(
            source_network="vlan-10", network=net.subnet, security_groups=net.sgs, private_ip="10.20.1.25"
        )
    ]
    inst = aws.target.attach_networks(inst, nics)
    assert [r.type for r in inst.resources] == ["ami", "eni"]
    eni = inst.resources[1].id
    assert inst.addresses == ["10.20.1.25"] and inst.state == "defined"
    (described_eni,) = aws.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])["NetworkInterfaces"]
    assert described_eni["SubnetId"] == net.subnet and described_eni["Status"] == "available"
    assert sorted(g["GroupId"] for g in described_eni["Groups"]) == sorted(net.sgs)
    assert tags_of(described_eni)["lifeboat:run"] == RUN

    inst = aws.target.power_on(inst)
    assert inst.state == "running" and inst.instance_id.startswith("i-")
    assert [r.type for r in inst.resources] == ["ami", "eni", "ec2-instance"]
    assert aws.target.power_on(inst) == inst  # already running: nothing more happens
    (run,) = aws.ec2_spy.calls["run_instances"]
    assert run["NetworkInterfaces"] == [
        {"DeviceIndex": 0, "NetworkInterfaceId": eni, "DeleteOnTermination": False}
    ]
    assert {s["ResourceType"] for s in run["TagSpecifications"]} == {"instance", "volume"}
    (ec2_inst,) = aws.ec2.describe_instances(InstanceIds=[inst.instance_id])["Reservations"][0]["Instances"]
    assert ec2_inst["State"]["Name"] == "running"
    assert ec2_inst["ImageId"] == ami and ec2_inst["InstanceType"] == "t3.medium"
    assert ec2_inst["SubnetId"] == net.subnet and ec2_inst["VpcId"] == net.vpc
    assert ec2_inst["PrivateIpAddress"] == "10.20.1.25"
    assert ec2_inst["MetadataOptions"]["HttpTokens"] == "required"
    (ec2_nic,) = ec2_inst["NetworkInterfaces"]
    assert ec2_nic["NetworkInterfaceId"] == eni and ec2_nic["Attachment"]["DeviceIndex"] == 0
    assert sorted(g["GroupId"] for g in ec2_nic["Groups"]) == sorted(net.sgs)
    tags = tags_of(ec2_inst)
    assert tags["lifeboat:run"] == RUN and tags["lifeboat:machine"] == "m-1" and tags["Name"] == "web01"
    assert tags["owner"] == "dr-team"

    # Validation: moto's status checks are ok at once; its console is a canned Xen log.
    ev = aws.target.validate(inst, ValidationSpec(timeout_seconds=30))
    assert ev.ok and ev.method == "status-checks" and ev.reason == ""
    assert "instance_status=ok" in ev.excerpt and "system_status=ok" in ev.excerpt
    ev = aws.target.validate(inst, ValidationSpec(marker="Linux version", timeout_seconds=30))
    assert ev.ok and ev.method == "status-checks+console-marker" and "Linux version" in ev.excerpt
    ev = aws.target.validate(inst, ValidationSpec(marker="LIFEBOAT-BOOTED", timeout_seconds=5))
    assert not ev.ok and "LIFEBOAT-BOOTED" in ev.reason and 5 <= ev.seconds <= 6  # on the fake clock
    assert ev.detail["marker_found"] is False

    resources = [*art.resources, *inst.resources]
    assert found(aws.target) == sorted(
        [(r.type, r.id) for r in resources]
        + [("ebs-volume", v["VolumeId"]) for v in aws.ec2.describe_volumes(Filters=[tag_filter()])["Volumes"]]
    )
    assert any(t == "ebs-volume" for t, _ in found(aws.target))  # the instance's volume is tagged too

    for r in reversed(resources):
        assert aws.target.delete(r) is True, r
    assert found(aws.target) == []
    (ec2_inst,) = aws.ec2.describe_instances(InstanceIds=[inst.instance_id])["Reservations"][0]["Instances"]
    assert ec2_inst["State"]["Name"] == "terminated"
    with pytest.raises(ClientError, match="NotFound"):
        aws.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])
    assert (
        aws.ec2.describe_images(Owners=["self"], Filters=[{"Name": "image-id", "Values": [ami]}])["Images"]
        == []
    )
    with pytest.raises(ClientError, match="NotFound"):
        aws.ec2.describe_snapshots(SnapshotIds=[art.location])

    for r in reversed(resources):  # idempotent
        assert aws.target.delete(r) is False, r

    # A terminated instance does not validate.
    ev = aws.target.validate(inst, ValidationSpec(timeout_seconds=30))
    assert not ev.ok and ev.reason == "instance is terminated"


def tag_filter() -> dict[str, Any]:
    return {"Name": "tag:lifeboat:run", "Values": [RUN]}


def test_two_nics_in_device_order(source: Source, aws: Aws) -> None:
    net = network(aws.ec2)
    second = aws.ec2.create_subnet(VpcId=net.vpc, CidrBlock="10.20.2.0/24", AvailabilityZone=f"{REGION}a")[
        "Subnet"
    ]["SubnetId"]
    art = aws.target.write_disk(source.repo, source.point, spec())
    inst = aws.target.create_instance(spec(), [art])
    assert inst.detail["instance_type"] == "t3.small"  # the default
    inst = aws.target.attach_networks(
        inst,
        [
            NicSpec(source_network="prod", network=net.subnet, security_groups=[net.sgs[0]]),
            NicSpec(
                source_network="backup", network=second, security_groups=[net.sgs[1]], private_ip="10.20.2.9"
            ),
        ],
    )
    enis = [r.id for r in inst.resources if r.type == "eni"]
    assert len(enis) == 2 and inst.addresses[1] == "10.20.2.9" and inst.addresses[0].startswith("10.20.1.")
    inst = aws.target.power_on(inst)
    (ec2_inst,) = aws.ec2.describe_instances(InstanceIds=[inst.instance_id])["Reservations"][0]["Instances"]
    by_index = {n["Attachment"]["DeviceIndex"]: n for n in ec2_inst["NetworkInterfaces"]}
    assert [by_index[i]["NetworkInterfaceId"] for i in (0, 1)] == enis
    assert by_index[1]["SubnetId"] == second and [g["GroupId"] for g in by_index[1]["Groups"]] == [net.sgs[1]]
    assert ec2_inst["InstanceType"] == "t3.small"
    for r in reversed([*art.resources, *inst.resources]):
        assert aws.target.delete(r) is True
    assert found(aws.target) == []


# --- failures leave nothing behind ---------------------------------------------------------------------------
def test_an_unknown_subnet_is_invalid_input_and_leaves_no_eni(source: Source, aws: Aws) -> None:
    net = network(aws.ec2)
    art = aws.target.write_disk(source.repo, source.point, spec())
    inst = aws.target.create_instance(spec(), [art])
    before = found(aws.target)
    nics = [
        NicSpec(source_network="a", network=net.subnet, security_groups=net.sgs),
        NicSpec(source_network="b", network="subnet-0123456789abcdef0"),
    ]
    with pytest.raises(InvalidInputError, match="subnet-0123456789abcdef0") as info:
        aws.target.attach_networks(inst, nics)
    assert info.value.fields["code"] == "InvalidSubnetID.NotFound"
    assert info.value.fields["resources"] == []  # the first ENI was deleted again
    assert isinstance(info.value.__cause__, ClientError)
    assert len(aws.ec2_spy.calls["create_network_interface"]) == 2
    assert found(aws.target) == before and not any(t == "eni" for t, _ in before)

    with pytest.raises(InvalidInputError, match="subnet ids"):
        aws.target.attach_networks(inst, [NicSpec(source_network="a", network="vlan-10")])
    with pytest.raises(InvalidInputError, match="attach_networks first"):
        aws.target.power_on(inst)
    ev = aws.target.validate(inst, ValidationSpec())
    assert not ev.ok and ev.reason == "the machine was never powered on"
    with pytest.raises(InvalidInputError, match="not an EBS snapshot"):
        aws.target.create_instance(
            spec(), [DiskArtifact(disk_id="d", point_id="p", disk_size=1, format="raw", location="/x")]
        )


def test_a_failed_launch_leaves_nothing(source: Source, aws: Aws) -> None:
    net = network(aws.ec2)
    art = aws.target.write_disk(source.repo, source.point, spec())
    inst = aws.target.create_instance(spec(), [art])
    inst = aws.target.attach_networks(inst, [NicSpec(source_network="a", network=net.subnet)])
    before = found(aws.target)

    # EC2 refuses: nothing was made.
    aws.ec2_spy.fail["run_instances"] = lambda real, kw: (_ for _ in ()).throw(
        client_error("InsufficientInstanceCapacity", "RunInstances")
    )
    with pytest.raises(TargetError, match="InsufficientInstanceCapacity") as info:
        aws.target.power_on(inst)
    assert not isinstance(info.value, InvalidInputError)
    assert found(aws.target) == before

    # An unknown instance type is the caller's mistake.
    aws.ec2_spy.fail["run_instances"] = lambda real, kw: (_ for _ in ()).throw(
        client_error("InvalidParameterValue", "RunInstances")
    )
    with pytest.raises(InvalidInputError):
        aws.target.power_on(inst)

    # The call reached EC2 but the answer was lost: the instance it made is terminated.
    def launch_then_lose_the_answer(real: Any, kw: Any) -> Any:
        real(**kw)
        raise EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com")

    aws.ec2_spy.fail["run_instances"] = launch_then_lose_the_answer
    with pytest.raises(TargetError, match="Could not connect"):
        aws.target.power_on(inst)
    assert not any(t == "ec2-instance" for t, _ in found(aws.target))

    # A retry with the same AMI and ENIs reuses the client token.
    tokens = {c["ClientToken"] for c in aws.ec2_spy.calls["run_instances"]}
    assert len(tokens) == 1


def test_an_instance_that_never_runs_is_terminated(source: Source, aws: Aws) -> None:
    net = network(aws.ec2)
    art = aws.target.write_disk(source.repo, source.point, spec())
    inst = aws.target.create_instance(spec(), [art])
    inst = aws.target.attach_networks(inst, [NicSpec(source_network="a", network=net.subnet)])

    def launch_and_stop(real: Any, kw: Any) -> Any:
        out = real(**kw)
        aws.ec2.stop_instances(InstanceIds=[out["Instances"][0]["InstanceId"]])
        return out

    aws.ec2_spy.fail["run_instances"] = launch_and_stop
    with pytest.raises(TargetError, match="stopped instead of running") as info:
        aws.target.power_on(inst)
    assert info.value.fields["resources"] == []
    assert not any(t == "ec2-instance" for t, _ in found(aws.target))


# --- cleanup -----------------------------------------------------------------------------------------------
def test_eni_deletion_retries_while_in_use_and_is_bounded(aws: Aws) -> None:
    net = network(aws.ec2)
    eni = aws.ec2.create_network_interface(SubnetId=net.subnet)["NetworkInterface"]["NetworkInterfaceId"]
    refusals = [2]

    def in_use_twice(real: Any, kw: Any) -> Any:
        if refusals[0]:
            refusals[0] -= 1
            raise client_error("InvalidNetworkInterface.InUse", "DeleteNetworkInterface")
        return real(**kw)

    aws.ec2_spy.fail["delete_network_interface"] = in_use_twice
    slept = aws.clock.slept
    assert aws.target.delete(Resource(type="eni", id=eni)) is True
    assert aws.clock.slept == slept + 2

    aws.ec2_spy.fail["delete_network_interface"] = lambda real, kw: (_ for _ in ()).throw(
        client_error("InvalidNetworkInterface.InUse", "DeleteNetworkInterface")
    )
    start = aws.clock.now
    with pytest.raises(TargetError, match="timed out"):
        aws.target.delete(Resource(type="eni", id="eni-0123456789abcdef0"))
    assert 10 <= aws.clock.now - start <= 11  # Poll.timeout on the fake clock

    aws.ec2_spy.fail["delete_network_interface"] = lambda real, kw: (_ for _ in ()).throw(
        client_error("UnauthorizedOperation", "DeleteNetworkInterface")
    )
    with pytest.raises(TargetError, match="UnauthorizedOperation") as info:
        aws.target.delete(Resource(type="eni", id=eni))
    assert isinstance(info.value.__cause__, ClientError)


def test_deleting_what_never_existed_is_false(aws: Aws) -> None:
    t = aws.target
    assert t.delete(Resource(type="ec2-instance", id="i-0123456789abcdef0")) is False
    assert t.delete(Resource(type="eni", id="eni-0123456789abcdef0")) is False
    assert t.delete(Resource(type="ami", id="ami-0123456789abcdef0")) is False
    assert t.delete(Resource(type="ebs-snapshot", id="snap-0123456789abcdef0")) is False
    assert t.delete(Resource(type="ebs-volume", id="vol-0123456789abcdef0")) is False
    with pytest.raises(InvalidInputError, match="page-blob"):
        t.delete(Resource(type="page-blob", id="x"))


def test_aws_target_assembles_one_target(source: Source, aws: Aws) -> None:
    import boto3

    target = aws_target(boto3.session.Session(region_name=REGION), threads=2, architecture="arm64")
    assert isinstance(target, Target) and target.kind == "aws"
    caps = [target.disks, target.launcher, target.networks, target.validator, target.cleaner]
    assert len({id(c) for c in caps}) == 5 and len({id(c.context) for c in caps}) == 1  # type: ignore[attr-defined]
    assert isinstance(target.disks, AwsDisks) and target.disks.context.boot_mode == "uefi"
    by_region = aws_target(REGION)
    art = by_region.disks.write_disk(source.repo, source.point, spec())
    assert by_region.disks.read_disk(art, 0, 4096) == source.data[:4096]
    assert by_region.cleaner.delete(art.resources[0]) is True


def test_networks_are_attached_before_power_on(aws: Aws) -> None:
    inst = Instance(instance_id="i-1", machine_id="m", state="running", detail={"image_id": "ami-1"})
    with pytest.raises(InvalidInputError, match="before power-on"):
        aws.target.attach_networks(inst, [])


def test_a_dead_client_token_moves_on_to_the_next(source: Source, aws: Aws) -> None:
    net = network(aws.ec2)
    art = aws.target.write_disk(source.repo, source.point, spec())
    inst = aws.target.create_instance(spec(), [art])
    inst = aws.target.attach_networks(inst, [NicSpec(source_network="a", network=net.subnet)])
    used: list[str] = []

    def earlier_tokens_were_terminated(real: Any, kw: Any) -> Any:
        used.append(kw["ClientToken"])
        if len(used) == 1:
            raise client_error("IdempotentInstanceTerminated", "RunInstances")
        out = real(**kw)
        if len(used) == 2:  # EC2 replays the answer of a token whose instance is gone
            dead = out["Instances"][0]["InstanceId"]
            aws.ec2.terminate_instances(InstanceIds=[dead])
            out["Instances"][0]["State"] = {"Code": 48, "Name": "terminated"}
        return out

    aws.ec2_spy.fail["run_instances"] = earlier_tokens_were_terminated
    inst = aws.target.power_on(inst)
    assert inst.state == "running" and len(set(used)) == 3
    assert inst.detail["client_token"] == used[2]
    (ec2_inst,) = aws.ec2.describe_instances(InstanceIds=[inst.instance_id])["Reservations"][0]["Instances"]
    assert tags_of(ec2_inst)["lifeboat:launch-token"] == used[2]
    alive = [i for t, i in found(aws.target) if t == "ec2-instance"]
    assert alive == [inst.instance_id]


def test_an_ami_that_never_becomes_available_is_deregistered(source: Source, aws: Aws) -> None:
    art = aws.target.write_disk(source.repo, source.point, spec())
    second = aws.target.write_disk(source.repo, source.point, spec())

    def pending(real: Any, kw: Any) -> Any:
        out = real(**kw)
        for image in out["Images"]:
            image["State"] = "pending"
        return out

    aws.ec2_spy.fail["describe_images"] = pending
    with pytest.raises(TargetError, match="timed out") as info:
        aws.target.create_instance(spec(), [art, second])
    assert info.value.fields["resources"] == []
    (reg,) = aws.ec2_spy.calls["register_image"]
    assert [(m["DeviceName"], m["Ebs"]["SnapshotId"]) for m in reg["BlockDeviceMappings"]] == [
        ("/dev/xvda", art.location),
        ("/dev/xvdb", second.location),
    ]
    assert sorted(t for t, _ in found(aws.target)) == ["ebs-snapshot", "ebs-snapshot"]

    # If undoing fails too, the error names what was left, for the flow's cleanup.
    aws.ec2_spy.fail["deregister_image"] = lambda real, kw: (_ for _ in ()).throw(
        client_error("RequestLimitExceeded", "DeregisterImage")
    )
    with pytest.raises(TargetError, match="timed out") as info:
        aws.target.create_instance(spec(), [art])
    resources: Any = info.value.fields["resources"]
    (left,) = resources
    assert left["type"] == "ami" and ("ami", left["id"]) in found(aws.target)
    del aws.ec2_spy.fail["deregister_image"], aws.ec2_spy.fail["describe_images"]
    assert aws.target.delete(Resource(**left)) is True

    aws.ec2_spy.fail["register_image"] = lambda real, kw: (_ for _ in ()).throw(
        client_error("InvalidBlockDeviceMapping", "RegisterImage")
    )
    with pytest.raises(TargetError, match="InvalidBlockDeviceMapping"):
        aws.target.create_instance(spec(), [art])
    with pytest.raises(InvalidInputError, match="at least one disk"):
        aws.target.create_instance(spec(), [])
