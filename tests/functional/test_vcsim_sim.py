"""The vCenter simulator (tools/vcsim) itself, driven through pyvmomi over HTTPS.

What a vSphere replication source relies on: login, inventory through the
PropertyCollector, snapshots whose frozen base keeps its data, Changed Block Tracking
(QueryChangedDiskAreas with "*", with a changeId, paging, faults) and datastore file reads
with HTTP ranges.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from tests.support.vcsim import Vcsim, start_vcsim

pytestmark = pytest.mark.vsphere

MiB = 1 << 20
KiB = 1 << 10
GRAIN = 64 * KiB
UNVERIFIED = ssl._create_unverified_context()


# --- helpers -------------------------------------------------------------------------------
@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Vcsim]:
    with start_vcsim(tmp_path) as s:
        yield s


def connect(sim: Vcsim, *, user: str | None = None, pwd: str | None = None) -> Any:
    return SmartConnect(
        host=sim.host,
        port=sim.port,
        user=sim.username if user is None else user,
        pwd=sim.password if pwd is None else pwd,
        sslContext=UNVERIFIED,
    )


@pytest.fixture
def si(sim: Vcsim) -> Iterator[Any]:
    conn = connect(sim)
    yield conn
    with contextlib.suppress(Exception):  # a test may have logged out already
        Disconnect(conn)


def find_vm(si: Any, name: str) -> Any:
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        for vm in view.view:
            if vm.name == name:
                return vm
    finally:
        view.Destroy()
    raise AssertionError(f"no VM {name}")


def disks_of(devices: Any) -> list[Any]:
    return [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]


def first_disk(vm: Any) -> Any:
    return disks_of(vm.config.hardware.device)[0]


def snapshot(vm: Any, name: str) -> Any:
    task = vm.CreateSnapshot_Task(name=name, description=f"{name} for tests", memory=False, quiesce=False)
    WaitForTask(task)
    return task.info.result


def enable_cbt(vm: Any) -> None:
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)))


def snapshot_disk(snap: Any, key: int) -> Any:
    return next(d for d in disks_of(snap.config.hardware.device) if d.key == key)


def all_changed(
    vm: Any, snap: Any, key: int, change_id: str, capacity: int
) -> tuple[list[tuple[int, int]], int]:
    """Page through QueryChangedDiskAreas like a backup client; (areas, number of calls)."""
    areas: list[tuple[int, int]] = []
    start, calls = 0, 0
    while start < capacity:
        info = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=start, changeId=change_id)
        calls += 1
        assert info.startOffset == start
        assert 0 < info.length <= capacity - start
        for a in info.changedArea:
            assert start <= a.start and a.start + a.length <= start + info.length
            areas.append((a.start, a.length))
        start = info.startOffset + info.length
    return areas, calls


def covers(areas: list[tuple[int, int]], offset: int, length: int) -> bool:
    return all(any(s <= b < s + n for s, n in areas) for b in (offset, offset + length - 1))


def folder_url(sim: Vcsim, ds_path: str, *, flat: bool = False) -> str:
    m = re.fullmatch(r"\[(.+?)\] (.+)", ds_path)
    assert m, ds_path
    ds, rel = m.groups()
    if flat:
        rel = rel[: -len(".vmdk")] + "-flat.vmdk"
    query = urllib.parse.urlencode({"dcPath": "DC0", "dsName": ds})
    return f"https://{sim.host}:{sim.port}/folder/{urllib.parse.quote(rel)}?{query}"


def http_get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, context=UNVERIFIED, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def session_cookie(si: Any) -> str:
    # pyvmomi keeps the Set-Cookie value; send back just the session cookie, as a client does.
    m = re.search(r"vmware_soap_session=([^;]+)", si._stub.cookie)
    assert m, si._stub.cookie
    return f"vmware_soap_session={m.group(1)}"


# --- login -------------------------------------------------------------------------------
def test_login_and_wrong_credentials_fail_with_invalid_login(sim: Vcsim) -> None:
    conn = connect(sim)
    about = conn.RetrieveContent().about
    assert about.apiType == "VirtualCenter"
    assert conn.RetrieveContent().sessionManager.currentSession.userName == sim.username
    Disconnect(conn)

    with pytest.raises(vim.fault.InvalidLogin):
        connect(sim, pwd="wrong")
    with pytest.raises(vim.fault.InvalidLogin):
        connect(sim, user="someone-else")


def test_only_the_configured_credentials_log_in(tmp_path: Path) -> None:
    with start_vcsim(tmp_path, vms=1, username="administrator@vsphere.local", password="S3cret!") as s:
        conn = connect(s)
        assert conn.RetrieveContent().about.apiType == "VirtualCenter"
        Disconnect(conn)
        with pytest.raises(vim.fault.InvalidLogin):
            connect(s, user="user", pwd="pass")


def test_serves_https_with_the_given_certificate(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vcsim.lifeboat.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "cert.pem"
    key_pem = tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with start_vcsim(tmp_path, vms=1, tls_cert=cert_pem, tls_key=key_pem) as s:
        served = ssl.get_server_certificate((s.host, s.port))
        assert x509.load_pem_x509_certificate(served.encode()) == cert
        conn = connect(s)
        assert conn.RetrieveContent().about.apiType == "VirtualCenter"
        Disconnect(conn)


# --- inventory ---------------------------------------------------------------------------
def retrieve(si: Any, kind: Any, paths: list[str]) -> list[Any]:
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[
            pc.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[
                    pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
                ],
            )
        ],
        propSet=[pc.PropertySpec(type=kind, pathSet=paths)],
    )
    objects = []
    result = content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions(maxObjects=2))
    while result is not None:
        objects.extend(result.objects)
        if not result.token:
            break
        result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
    view.Destroy()
    return objects


def props(obj: Any) -> dict[str, Any]:
    assert not obj.missingSet, obj.missingSet
    return {p.name: p.val for p in obj.propSet}


VM_PATHS = [
    "name",
    "config.instanceUuid",
    "config.guestId",
    "runtime.powerState",
    "guest.toolsRunningStatus",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.firmware",
    "config.changeTrackingEnabled",
    "snapshot",
    "network",
    "datastore",
    "summary",
]


def test_property_collector_returns_a_realistic_inventory(sim: Vcsim, si: Any) -> None:
    vms = [props(o) for o in retrieve(si, vim.VirtualMachine, VM_PATHS)]
    assert len(vms) == 4  # 2 per pool: the standalone host's and the cluster's
    hooks = {v["name"]: v for v in sim.vms()}
    assert set(hooks) == {v["name"] for v in vms}
    firmwares: set[str] = set()
    guests: set[str] = set()
    networks: set[str] = set()
    for v in vms:
        hook = hooks[v["name"]]
        assert v["config.instanceUuid"] == hook["uuid"]
        assert v["runtime.powerState"] in ("poweredOn", "poweredOff")
        assert v["guest.toolsRunningStatus"] == (
            "guestToolsRunning" if v["runtime.powerState"] == "poweredOn" else "guestToolsNotRunning"
        )
        assert v["config.hardware.numCPU"] >= 1 and v["config.hardware.memoryMB"] >= 1024
        assert "snapshot" not in v  # unset, like vCenter
        firmwares.add(v["config.firmware"])
        guests.add(v["config.guestId"])
        assert v["summary"].config.name == v["name"]
        assert v["datastore"] and v["network"]
        networks.update(n.name for n in v["network"])

        devices = v["config.hardware.device"]
        controllers = {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)}
        assert controllers
        nics = [d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]
        assert nics and re.fullmatch(r"00:0c:29(:[0-9a-f]{2}){3}", str(nics[0].macAddress))
        assert isinstance(
            nics[0].backing,
            (
                vim.vm.device.VirtualEthernetCard.NetworkBackingInfo,
                vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo,
            ),
        )
        (disk,) = disks_of(devices)
        assert disk.controllerKey in controllers
        assert disk.capacityInBytes == 8 * MiB and disk.capacityInKB == 8 * 1024
        backing = disk.backing
        assert isinstance(backing, vim.vm.device.VirtualDisk.FlatVer2BackingInfo)
        assert backing.fileName == f"[LocalDS_0] {v['name']}/{v['name']}.vmdk"
        assert re.fullmatch(
            r"6000C29[0-9a-f]-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", str(backing.uuid)
        )
        assert backing.changeId is None  # CBT is off

        # The backing is a genuine descriptor next to a sparse flat file of the capacity.
        (hook_disk,) = hook["disks"]
        assert hook_disk["key"] == disk.key and hook_disk["file"] == backing.fileName
        descriptor = sim.datastore_dir / "LocalDS_0" / v["name"] / f"{v['name']}.vmdk"
        text = descriptor.read_text()
        assert text.startswith("# Disk DescriptorFile")
        assert f'RW {8 * MiB // 512} VMFS "{v["name"]}-flat.vmdk"' in text
        flat = Path(hook_disk["flat_path"])
        assert flat == descriptor.with_name(f"{v['name']}-flat.vmdk")
        assert flat.stat().st_size == 8 * MiB
        assert flat.stat().st_blocks * 512 < MiB  # sparse

    assert firmwares == {"bios", "efi"}
    assert len(guests) >= 2
    assert "VM Network" in networks and any(n.startswith("DC0_DVPG") for n in networks)

    hosts = [props(o) for o in retrieve(si, vim.HostSystem, ["name", "summary", "datastore", "network"])]
    assert len(hosts) == 4 and all(h["datastore"] for h in hosts)
    datastores = [props(o) for o in retrieve(si, vim.Datastore, ["name", "summary"])]
    assert [d["name"] for d in datastores] == ["LocalDS_0"]
    assert "/" not in datastores[0]["summary"].datastore._moId
    assert datastores[0]["summary"].capacity > 0
    nets = {props(o)["name"] for o in retrieve(si, vim.Network, ["name", "summary"])}
    assert {"VM Network", "DC0_DVPG0", "DC0_DVPG1"} <= nets
    clusters = [props(o) for o in retrieve(si, vim.ClusterComputeResource, ["name", "summary", "host"])]
    assert [c["name"] for c in clusters] == ["DC0_C0"] and len(clusters[0]["host"]) == 3
    assert [props(o)["name"] for o in retrieve(si, vim.Datacenter, ["name"])] == ["DC0"]


def test_unset_properties_read_as_none(si: Any) -> None:
    vm = find_vm(si, "DC0_H0_VM0")
    assert vm.snapshot is None
    assert vm.config.changeTrackingEnabled in (None, False)
    assert vm.rootSnapshot == []
    assert vm.guest.toolsRunningStatus == "guestToolsRunning"
    assert vm.config.firmware == "efi"


# --- snapshots ---------------------------------------------------------------------------
def test_snapshot_freezes_the_base_and_removal_consolidates(sim: Vcsim, si: Any) -> None:
    vm = find_vm(si, "DC0_H0_VM0")
    key = first_disk(vm).key
    base = f"[LocalDS_0] {vm.name}/{vm.name}.vmdk"
    folder = sim.datastore_dir / "LocalDS_0" / vm.name
    sim.write(vm._moId, key, 0, b"before" * 100)

    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    snap = snapshot(vm, "replication-1")
    tree = vm.snapshot.rootSnapshotList
    assert len(tree) == 1
    assert (tree[0].name, tree[0].description) == ("replication-1", "replication-1 for tests")
    assert tree[0].snapshot == snap and tree[0].id >= 1 and tree[0].createTime >= before
    assert vm.snapshot.currentSnapshot == snap

    # The snapshot keeps the base; the VM now writes to a delta whose parent is the base.
    assert snapshot_disk(snap, key).backing.fileName == base
    current = first_disk(vm).backing
    assert current.fileName == f"[LocalDS_0] {vm.name}/{vm.name}-000001.vmdk"
    assert current.parent.fileName == base
    delta_descriptor = (folder / f"{vm.name}-000001.vmdk").read_text()
    assert f'RW {8 * MiB // 512} VMFS "{vm.name}-000001-flat.vmdk"' in delta_descriptor
    assert f'parentFileNameHint="{vm.name}.vmdk"' in delta_descriptor
    assert sim.vm(vm._moId)["snapshots"] == 1

    sim.write(vm._moId, key, 4096, b"after")
    assert (folder / f"{vm.name}-flat.vmdk").read_bytes()[4096:4101] == b"\0" * 5  # the base is frozen
    assert sim.read_current(vm._moId, key)[4096:4101] == b"after"

    task = snap.RemoveSnapshot_Task(removeChildren=False)
    WaitForTask(task)
    assert task.info.entity == vm and task.info.entityName == vm.name  # the VM, not the snapshot
    assert vm.snapshot is None
    assert first_disk(vm).backing.fileName == base
    assert first_disk(vm).backing.parent is None
    assert not (folder / f"{vm.name}-000001.vmdk").exists()
    assert not (folder / f"{vm.name}-000001-flat.vmdk").exists()
    data = (folder / f"{vm.name}-flat.vmdk").read_bytes()
    assert data[:6] == b"before" and data[4096:4101] == b"after"  # the delta was merged back
    assert sim.vm(vm._moId)["snapshots"] == 0


def test_snapshots_stack_and_remove_all(sim: Vcsim, si: Any) -> None:
    vm = find_vm(si, "DC0_C0_RP0_VM0")
    key = first_disk(vm).key
    s1 = snapshot(vm, "one")
    sim.write(vm._moId, key, 0, b"1")
    s2 = snapshot(vm, "two")
    sim.write(vm._moId, key, 0, b"2")
    tree = vm.snapshot.rootSnapshotList
    assert tree[0].snapshot == s1 and tree[0].childSnapshotList[0].snapshot == s2
    assert s1.childSnapshot == [s2]
    assert first_disk(vm).backing.fileName.endswith("-000002.vmdk")
    assert snapshot_disk(s2, key).backing.fileName.endswith("-000001.vmdk")

    WaitForTask(vm.RemoveAllSnapshots_Task())
    assert vm.snapshot is None
    assert first_disk(vm).backing.fileName.endswith(f"{vm.name}.vmdk")
    assert sim.read_current(vm._moId, key)[:1] == b"2"


# --- changed block tracking --------------------------------------------------------------
def test_changed_disk_areas_star_and_since_a_change_id(sim: Vcsim, si: Any) -> None:
    vm = find_vm(si, "DC0_H0_VM1")
    disk = first_disk(vm)
    key, capacity = disk.key, disk.capacityInBytes
    enable_cbt(vm)
    assert vm.config.changeTrackingEnabled is True
    sim.write(vm._moId, key, 0, b"\x01" * 1000)  # before tracking is active

    s1 = snapshot(vm, "full")  # the first snapshot after enabling starts tracking
    c1 = snapshot_disk(s1, key).backing.changeId
    assert re.fullmatch(r"52( [0-9a-f]{2}){7}-[0-9a-f]{2}( [0-9a-f]{2}){7}/\d+", c1), c1
    star, calls = all_changed(vm, s1, key, "*", capacity)
    assert star == [(0, GRAIN)] and calls == 1  # the default window (64 MiB) covers the disk

    sim.write(vm._moId, key, 3 * MiB + 5, b"\x02" * 100)
    sim.write(vm._moId, key, 5 * MiB - 10, b"\x03" * 70000)  # spans two grains
    # Not part of s1: the frozen base did not change.
    assert all_changed(vm, s1, key, c1, capacity)[0] == []
    WaitForTask(s1.RemoveSnapshot_Task(removeChildren=False))

    s2 = snapshot(vm, "incremental")
    c2 = snapshot_disk(s2, key).backing.changeId
    assert c2.split("/")[0] == c1.split("/")[0] and int(c2.split("/")[1]) > int(c1.split("/")[1])
    changed, _ = all_changed(vm, s2, key, c1, capacity)
    assert covers(changed, 3 * MiB + 5, 100) and covers(changed, 5 * MiB - 10, 70000)
    assert not covers(changed, 0, 1000)
    assert all(s % GRAIN == 0 and n % GRAIN == 0 for s, n in changed)
    assert sum(n for _, n in changed) <= 4 * GRAIN
    assert changed == sorted(changed)
    assert all_changed(vm, s2, key, c2, capacity)[0] == []  # nothing since s2 itself

    star2, _ = all_changed(vm, s2, key, "*", capacity)
    assert covers(star2, 0, 1000) and covers(star2, 3 * MiB + 5, 100) and covers(star2, 5 * MiB - 10, 70000)
    WaitForTask(s2.RemoveSnapshot_Task(removeChildren=False))


def test_changed_disk_areas_are_paged(tmp_path: Path) -> None:
    with start_vcsim(tmp_path, vms=1, max_changed_bytes=1 * MiB) as s:
        conn = connect(s)
        vm = find_vm(conn, "DC0_H0_VM0")
        key = first_disk(vm).key
        enable_cbt(vm)
        s1 = snapshot(vm, "base")
        c1 = snapshot_disk(s1, key).backing.changeId
        writes = [(0, 10), (MiB - 1, 2), (3 * MiB + 7, 5000), (8 * MiB - 1, 1)]
        for off, n in writes:
            s.write(vm._moId, key, off, b"\xff" * n)
        WaitForTask(s1.RemoveSnapshot_Task(removeChildren=False))
        s2 = snapshot(vm, "next")
        changed, calls = all_changed(vm, s2, key, c1, 8 * MiB)
        assert calls == 8  # 1 MiB per call over an 8 MiB disk
        for off, n in writes:
            assert covers(changed, off, n)
        star, calls = all_changed(vm, s2, key, "*", 8 * MiB)
        assert calls == 8 and all(covers(star, off, n) for off, n in writes)
        info = vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=key, startOffset=7 * MiB + 512, changeId=c1)
        assert info.startOffset == 7 * MiB + 512 and info.length == MiB - 512
        Disconnect(conn)


def test_changed_disk_areas_faults(sim: Vcsim, si: Any) -> None:
    vm = find_vm(si, "DC0_C0_RP0_VM1")
    key = first_disk(vm).key
    plain = snapshot(vm, "no-cbt")
    with pytest.raises(vim.fault.FileFault):  # CBT is off
        vm.QueryChangedDiskAreas(snapshot=plain, deviceKey=key, startOffset=0, changeId="*")
    WaitForTask(plain.RemoveSnapshot_Task(removeChildren=False))

    enable_cbt(vm)
    s1 = snapshot(vm, "tracked")
    c1 = snapshot_disk(s1, key).backing.changeId
    cbt_id, seq = c1.rsplit("/", 1)
    with pytest.raises(vmodl.fault.InvalidArgument) as e:
        vm.QueryChangedDiskAreas(snapshot=s1, deviceKey=key + 999, startOffset=0, changeId="*")
    assert e.value.invalidProperty == "deviceKey"
    for bad in ("garbage", f"{cbt_id}/{int(seq) + 5}", "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1"):
        with pytest.raises(vmodl.fault.InvalidArgument) as e:
            vm.QueryChangedDiskAreas(snapshot=s1, deviceKey=key, startOffset=0, changeId=bad)
        assert e.value.invalidProperty == "changeId"
    with pytest.raises(vmodl.fault.InvalidArgument) as e:
        vm.QueryChangedDiskAreas(snapshot=s1, deviceKey=key, startOffset=64 * MiB, changeId="*")
    assert e.value.invalidProperty == "startOffset"
    WaitForTask(s1.RemoveSnapshot_Task(removeChildren=False))

    # A CBT reset (storage vMotion, restore): earlier changeIds are refused, "*" still works.
    sim.reset_cbt(vm._moId, key)
    sim.write(vm._moId, key, 2 * MiB, b"x")
    s2 = snapshot(vm, "after-reset")
    c2 = snapshot_disk(s2, key).backing.changeId
    assert c2.rsplit("/", 1)[0] != cbt_id
    with pytest.raises(vmodl.fault.InvalidArgument) as e:
        vm.QueryChangedDiskAreas(snapshot=s2, deviceKey=key, startOffset=0, changeId=c1)
    assert e.value.invalidProperty == "changeId"
    star, _ = all_changed(vm, s2, key, "*", 8 * MiB)
    assert covers(star, 2 * MiB, 1)
    WaitForTask(s2.RemoveSnapshot_Task(removeChildren=False))


# --- datastore files ---------------------------------------------------------------------
def test_datastore_get_serves_the_frozen_base_with_ranges(sim: Vcsim, si: Any) -> None:
    vm = find_vm(si, "DC0_H0_VM0")
    key = first_disk(vm).key
    pattern = bytes(range(256)) * 16  # 4 KiB
    sim.write(vm._moId, key, MiB, pattern)
    snap = snapshot(vm, "read-me")
    base = snapshot_disk(snap, key).backing.fileName
    url = folder_url(sim, base, flat=True)
    sim.write(vm._moId, key, MiB, b"\xee" * 4096)  # after the snapshot: goes to the delta
    sim.write(vm._moId, key, 0, b"new")

    status, _, _ = http_get(url, {})
    assert status == 401  # no session
    status, _, _ = http_get(url, {"Cookie": "vmware_soap_session=not-a-session"})
    assert status == 401

    cookie = session_cookie(si)
    status, headers, body = http_get(url, {"Cookie": cookie, "Range": f"bytes={MiB}-{MiB + 4095}"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {MiB}-{MiB + 4095}/{8 * MiB}"
    assert body == pattern
    status, _, body = http_get(url, {"Cookie": cookie, "Range": "bytes=0-15"})
    assert status == 206 and body == b"\0" * 16

    status, _, whole = http_get(url, {"Cookie": cookie})
    assert status == 200 and len(whole) == 8 * MiB
    assert whole[MiB : MiB + 4096] == pattern
    status, _, text = http_get(folder_url(sim, base), {"Cookie": cookie})
    assert status == 200 and text.startswith(b"# Disk DescriptorFile")

    current = sim.read_current(vm._moId, key)
    assert current[MiB : MiB + 4096] == b"\xee" * 4096 and current[:3] == b"new"
    assert hashlib.sha256(current).digest() != hashlib.sha256(whole).digest()
    WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))
    status, _, after = http_get(url, {"Cookie": cookie, "Range": f"bytes={MiB}-{MiB + 4095}"})
    assert status == 206 and after == b"\xee" * 4096  # consolidated
    Disconnect(si)
    status, _, _ = http_get(url, {"Cookie": cookie})
    assert status == 401  # logged out


# --- test hooks ---------------------------------------------------------------------------
def test_add_disk_and_load_an_image(sim: Vcsim, si: Any, tmp_path: Path) -> None:
    vm = find_vm(si, "DC0_C0_RP0_VM0")
    first = first_disk(vm)
    key = sim.add_disk(vm._moId, 16 * MiB)
    disks = {d.key: d for d in disks_of(vm.config.hardware.device)}
    assert set(disks) == {first.key, key}
    new = disks[key]
    assert new.controllerKey == first.controllerKey and new.unitNumber == first.unitNumber + 1
    assert new.capacityInBytes == 16 * MiB
    assert new.backing.fileName == f"[LocalDS_0] {vm.name}/{vm.name}_1.vmdk"
    assert new.backing.uuid and new.backing.uuid != first.backing.uuid
    flat = Path(sim.disk(vm._moId, key)["flat_path"])
    assert flat.name == f"{vm.name}_1-flat.vmdk" and flat.stat().st_size == 16 * MiB

    image = tmp_path / "image.raw"
    image.write_bytes(b"\x00" * MiB + b"lifeboat" + b"\x00" * (2 * MiB) + b"end")
    sim.load(vm._moId, key, image)
    assert disks_of(vm.config.hardware.device)[1].capacityInBytes == 4 * MiB
    data = sim.read_current(vm._moId, key)
    assert len(data) == 4 * MiB and data[: image.stat().st_size] == image.read_bytes()
    assert (
        f'RW {4 * MiB // 512} VMFS "{vm.name}_1-flat.vmdk"'
        in (flat.with_name(f"{vm.name}_1.vmdk")).read_text()
    )

    enable_cbt(vm)
    s1 = snapshot(vm, "both-disks")
    for d in disks_of(s1.config.hardware.device):
        assert d.backing.changeId
    WaitForTask(s1.RemoveSnapshot_Task(removeChildren=False))
