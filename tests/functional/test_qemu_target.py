"""The local QEMU recovery target, end to end: a replicated boot disk is written back,
defined as a VM, given an isolated NIC, powered on (a real, detached QEMU under TCG),
validated on its serial console, and cleaned up resource by resource.

The disk is ``tests/support/bootdisk.py``'s, built with ``stay=True`` so the recovered
machine keeps running (with a heartbeat) until cleanup, like a real server. Each boot
takes ~8-12 s under TCG; this module boots three times (one of them fails in ~2 s).
Needs Debian ``qemu-system-x86 qemu-utils`` and the bootdisk tools; missing ones fail
these tests (they are not skipped).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node_runtime.recovery.targets.base import (
    DiskArtifact,
    InstanceSpec,
    NicSpec,
    Resource,
    Target,
    ValidationSpec,
)
from node_runtime.recovery.targets.qemu import (
    INSTANCE_TYPES,
    QemuDisks,
    QemuTarget,
    parse_instance_type,
    qemu_target,
)
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.files import FileSource
from shared.adapters.local.folder_store import FolderStore
from shared.domain.hardware import Firmware
from shared.errors import InvalidInputError, TargetError
from shared.repo.points import PointRecord
from shared.repo.repository import Repository
from tests.support import bootdisk
from tests.support.disks import sha256

MiB = 1 << 20
BOOT_TIMEOUT_S = 120  # generous for a loaded CI machine; a healthy boot needs ~6-12 s
MBR_GAP = 4096  # between the MBR and the partition at 1 MiB: unused, safe to patch


@dataclass
class Source:
    image: Path
    marker: str
    repo: Repository
    point: PointRecord  # of the stay=True disk
    poweroff_point: PointRecord  # of a disk that powers off after its boot line


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    for tool, package in (
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("qemu-img", "qemu-utils"),
        ("qemu-io", "qemu-utils"),
    ):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: install the Debian package {package!r}", pytrace=False)
    tmp = tmp_path_factory.mktemp("qemu-target")
    marker = f"lb-{uuid.uuid4().hex[:12]}"
    try:
        image = bootdisk.build_boot_disk(tmp / "boot.img", marker=marker, size_mib=32, stay=True)
        other = bootdisk.build_boot_disk(tmp / "off.img", marker="powers-off", size_mib=32)
    except (bootdisk.MissingToolError, bootdisk.KernelUnavailableError) as e:
        pytest.fail(str(e), pytrace=False)
    assert bootdisk.disk_stays(image) and not bootdisk.disk_stays(other)
    repo = Repository.init(FolderStore(tmp / "repo", fsync=False), None)
    opts = ReplicationOptions(pack_target=4 * MiB, streams=2, workers=2)
    with FileSource(image) as src:
        point = replicate(repo, "boot", src, opts)
    with FileSource(other) as src:
        poweroff_point = replicate(repo, "boot-off", src, opts)
    return Source(image, marker, repo, point, poweroff_point)


class Run:
    """A target under a fresh work dir that deletes whatever a test left, even on failure."""

    def __init__(self, work_dir: Path, **options: object) -> None:
        self.work_dir = work_dir
        self.target = QemuTarget(work_dir, settle_seconds=1.0, **options)
        self.created: list[Resource] = []

    def track(self, resources: list[Resource]) -> None:
        self.created += [r for r in resources if r not in self.created]

    def cleanup(self) -> None:
        for resource in reversed(self.created):
            try:
                self.target.delete(resource)
            except Exception as e:  # keep cleaning; the test itself reports failures
                print(f"cleanup of {resource} failed: {e}")
        for pid in qemu_pids_under(self.work_dir):  # belt and braces: never leak a QEMU
            os.kill(pid, 9)


def qemu_pids_under(work_dir: Path) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].endswith(b"qemu-system-x86_64")
            and any(str(work_dir).encode() in a for a in argv)
        ):
            pids.append(int(cmdline.parent.name))
    return pids


def alive(pid: int) -> bool:
    """True if ``pid`` is a live process (zombies count as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path / "work")
    try:
        yield r
    finally:
        r.cleanup()


def spec(machine_id: str = "web-1", instance_type: str | None = "1c384m") -> InstanceSpec:
    return InstanceSpec(
        machine_id=machine_id,
        name=f"{machine_id} (test recovery)",
        run_id="run-1",
        instance_type=instance_type,
        tags={"lifeboat:plan": "plan-7"},
    )


# --- the whole life of a recovered machine ------------------------------------------------------
def test_a_recovered_machine_boots_keeps_running_and_is_cleaned_up(source: Source, run: Run) -> None:
    target, work = run.target, run.work_dir
    seen: list[tuple[int, int]] = []
    started = time.monotonic()
    disk = target.write_disk(source.repo, source.point, spec(), progress=lambda d, t: seen.append((d, t)))
    run.track(disk.resources)
    machine_dir = work / "run-1" / "web-1"
    assert disk.location == str(machine_dir / "boot.raw") and disk.format == "raw"
    assert [r.type for r in disk.resources] == ["file"] and disk.resources[0].id == disk.location
    assert disk.resources[0].detail["lifeboat:run"] == "run-1"
    assert disk.resources[0].detail["lifeboat:machine"] == "web-1"
    assert sha256(Path(disk.location)) == sha256(source.image)
    assert os.stat(disk.location).st_blocks * 512 < disk.disk_size, "holes stay sparse"
    assert seen[-1][0] == seen[-1][1] == disk.bytes_written > 0

    assert target.read_disk(disk, 510, 2) == b"\x55\xaa"  # the MBR signature
    assert target.read_disk(disk, disk.disk_size - 10, 100) == source.image.read_bytes()[-10:]
    assert target.read_disk(disk, disk.disk_size, 10) == b""
    target.patch_disk(disk, [(MBR_GAP, b"lifeboat prepared this disk")])
    assert target.read_disk(disk, MBR_GAP, 27) == b"lifeboat prepared this disk"

    instance = target.create_instance(spec(), [disk])
    run.track(instance.resources)
    vm_dir = machine_dir / "vm"
    assert instance.state == "defined"
    assert [(r.type, r.id) for r in instance.resources] == [("qemu-vm", str(vm_dir))]
    vm = json.loads((vm_dir / "vm.json").read_text())
    assert (vm["cpus"], vm["memory_mib"]) == (1, 384)
    assert vm["disks"] == [
        {"disk_id": "boot", "path": disk.location, "format": "raw", "cache": vm["disks"][0]["cache"]}
    ]
    assert vm["disks"][0]["cache"] in ("none", "writeback")
    assert vm["tags"] == {"lifeboat:plan": "plan-7", "lifeboat:run": "run-1", "lifeboat:machine": "web-1"}

    instance = target.attach_networks(
        instance, [NicSpec(source_network="prod-lan", network="test-bubble", isolated=True)]
    )
    assert instance.addresses == ["dhcp"]
    nic = json.loads((vm_dir / "vm.json").read_text())["nics"][0]
    assert nic["network"] == "test-bubble" and nic["restrict"] is True
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", nic["mac"])

    instance = target.power_on(instance)
    run.track(instance.resources)
    assert instance.state == "running"
    process = instance.resources[-1]
    assert process.type == "qemu-process" and process.detail["pidfile"] == str(vm_dir / "qemu.pid")
    pid = int(process.id)
    assert alive(pid) and instance.detail["pid"] == pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"tcg" in argv and b"-daemonize" in argv and b"-no-reboot" in argv
    assert any(b"restrict=on" in a for a in argv) and any(nic["mac"].encode() in a for a in argv)
    # detached: not our child, not in our session, so it outlives the caller
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid() and os.getsid(pid) != os.getsid(0)
    assert target.power_on(instance) == instance, "powering on a running machine changes nothing"

    evidence = target.validate(
        instance, ValidationSpec(marker=bootdisk.boot_line(source.marker), timeout_seconds=BOOT_TIMEOUT_S)
    )
    assert evidence.ok, f"{evidence.reason}\n{evidence.excerpt}"
    assert evidence.method == "serial-marker" and "marker seen" in evidence.reason
    assert bootdisk.boot_line(source.marker) in evidence.excerpt
    assert "\x1b" not in evidence.excerpt and 0 < evidence.seconds < BOOT_TIMEOUT_S
    print(
        f"write + define + boot to marker: {time.monotonic() - started:.1f}s (validate {evidence.seconds:.1f}s)"
    )

    up = target.validate(instance, ValidationSpec())
    assert up.ok and up.method == "power-state", up.reason
    assert alive(pid), "a stay=True guest keeps running after its boot line"

    # a marker this machine never prints: the timeout ends validation, the machine stays up
    wrong = target.validate(instance, ValidationSpec(marker="BOOT-OK someone-else ", timeout_seconds=3))
    assert not wrong.ok and wrong.method == "serial-marker"
    assert wrong.reason == "marker not seen within 3s" and wrong.detail["timed_out"] is True
    assert 3 <= wrong.seconds < 10
    assert f"HEARTBEAT {source.marker}" in wrong.excerpt
    assert alive(pid)
    # validated again later: the excerpt still ends at the marker's line, not at the heartbeats
    again = target.validate(
        instance, ValidationSpec(marker=bootdisk.boot_line(source.marker), timeout_seconds=10)
    )
    assert again.ok and bootdisk.boot_line(source.marker) in again.excerpt.splitlines()[-1]

    # the same pid, but not the command line we started: never signalled
    impostor = process.model_copy(update={"detail": {**process.detail, "cmdline_sha256": "0" * 64}})
    assert target.delete(impostor) is False
    assert alive(pid)

    everything = [*disk.resources, *instance.resources]
    assert [r.type for r in everything] == ["file", "qemu-vm", "qemu-process"]
    assert [target.delete(r) for r in reversed(everything)] == [True, True, True]
    assert not alive(pid) and not qemu_pids_under(work)
    assert not (work / "run-1").exists() and work.is_dir()
    assert [target.delete(r) for r in reversed(everything)] == [False, False, False], "idempotent"


def test_qcow2_disks_read_patch_and_boot_and_a_guest_power_off_ends_validation(
    source: Source, tmp_path: Path
) -> None:
    r = Run(tmp_path / "work", image_format="qcow2")
    try:
        target = r.target
        disk = target.write_disk(source.repo, source.poweroff_point, spec("db-1"))
        r.track(disk.resources)
        image = Path(disk.location)
        assert image.name == "boot-off.qcow2" and disk.format == "qcow2"
        assert image.read_bytes()[:4] == b"QFI\xfb"
        assert not image.with_suffix(".raw").exists(), "the raw intermediate is dropped"
        assert [(x.type, x.id) for x in disk.resources] == [("file", str(image))]
        assert disk.resources[0].detail["format"] == "qcow2"

        # the expected bytes: the same point written as a raw image
        check = QemuTarget(tmp_path / "check").write_disk(source.repo, source.poweroff_point, spec("db-1"))
        raw = Path(check.location).read_bytes()
        for offset, length in ((0, 512), (510, 2), (MiB - 7, 3 * MiB + 11), (disk.disk_size - 5, 50)):
            assert target.read_disk(disk, offset, length) == raw[offset : offset + length]
        target.patch_disk(disk, [(MBR_GAP, b"qcow2 patch"), (MBR_GAP + 100, b"\x00\x01\x02")])
        assert target.read_disk(disk, MBR_GAP, 11) == b"qcow2 patch"
        assert target.read_disk(disk, MBR_GAP + 100, 3) == b"\x00\x01\x02"
        with pytest.raises(InvalidInputError, match="outside the disk"):
            target.patch_disk(disk, [(disk.disk_size - 1, b"xy")])

        instance = target.power_on(target.create_instance(spec("db-1", "tiny"), [disk]))
        r.track(instance.resources)
        vm = json.loads((Path(instance.resources[0].id) / "vm.json").read_text())
        assert vm["disks"][0]["cache"] == "writeback" and vm["nics"] == []
        evidence = target.validate(
            instance, ValidationSpec(marker="never-printed", timeout_seconds=BOOT_TIMEOUT_S)
        )
        assert not evidence.ok and "exited" in evidence.reason and "without the marker" in evidence.reason
        assert "BOOT-OK powers-off " in evidence.excerpt, evidence.excerpt  # it booted from the qcow2
        assert evidence.seconds < BOOT_TIMEOUT_S
        assert target.delete(instance.resources[-1]) is False, "the process had already exited"
    finally:
        r.cleanup()
    assert not (tmp_path / "work" / "run-1").exists()


def test_an_unbootable_disk_fails_validation_on_the_firmwares_message(source: Source, run: Run) -> None:
    target = run.target
    disk = target.write_disk(source.repo, source.point, spec())
    run.track(disk.resources)
    target.patch_disk(disk, [(0, bytes(512))])  # no boot code, no partition table
    instance = target.power_on(target.create_instance(spec(), [disk]))
    run.track(instance.resources)
    evidence = target.validate(
        instance, ValidationSpec(marker=bootdisk.boot_line(source.marker), timeout_seconds=60)
    )
    assert not evidence.ok and evidence.detail["failed_on"] == "No bootable device", evidence.excerpt
    assert "No bootable device" in evidence.excerpt
    assert evidence.seconds < 30, "SeaBIOS gives up in about a second"
    # without a marker the power-state check must not call it booted either (SeaBIOS keeps running)
    bare = target.validate(instance, ValidationSpec(marker=None, timeout_seconds=60))
    assert not bare.ok and bare.method == "power-state" and bare.detail["failed_on"] == "No bootable device"


def test_a_machine_qemu_refuses_to_start_is_a_target_error_and_leaves_no_process(run: Run) -> None:
    disk = fake_disk(run.target).model_copy(update={"format": "qcow2"})  # a raw file called qcow2
    instance = run.target.create_instance(spec(), [disk])
    run.track(instance.resources)
    with pytest.raises(TargetError, match="qcow2") as failure:
        run.target.power_on(instance)
    assert "starting QEMU for run-1.web-1" in str(failure.value)
    assert not qemu_pids_under(run.work_dir)


# --- no QEMU needed -----------------------------------------------------------------------------
def fake_disk(target: QemuTarget, machine_id: str = "web-1", size: int = MiB) -> DiskArtifact:
    path = target.work_dir / "run-1" / machine_id / "boot.raw"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return DiskArtifact(disk_id="boot", point_id="p1", disk_size=size, format="raw", location=str(path))


def test_instance_types() -> None:
    assert parse_instance_type(None) == INSTANCE_TYPES["small"] == (1, 512)
    assert [parse_instance_type(t) for t in ("tiny", "medium", "large")] == [(1, 256), (2, 1024), (2, 2048)]
    assert parse_instance_type("1c384m") == (1, 384)
    assert parse_instance_type("4c8192m") == (4, 8192)
    for bad in ("huge", "t3.small", "0c512m", "1c10m", "65c512m", "1c384", ""):
        with pytest.raises(InvalidInputError, match="unknown instance type"):
            parse_instance_type(bad)


def test_an_unknown_instance_type_is_invalid_input_and_creates_nothing(run: Run) -> None:
    disk = fake_disk(run.target)
    with pytest.raises(InvalidInputError, match=r"unknown instance type 'm5\.large'"):
        run.target.create_instance(spec(instance_type="m5.large"), [disk])
    assert not (run.work_dir / "run-1" / "web-1" / "vm").exists()
    with pytest.raises(InvalidInputError, match="at least one disk"):
        run.target.create_instance(spec(), [])
    with pytest.raises(InvalidInputError, match="cannot name a directory"):
        run.target.create_instance(spec(machine_id="../escape"), [disk])
    instance = run.target.create_instance(spec(instance_type=None), [disk])
    run.track(instance.resources)
    assert (instance.detail["cpus"], instance.detail["memory_mib"]) == (1, 512)
    with pytest.raises(InvalidInputError, match="already defined"):
        run.target.create_instance(spec(), [disk])


def test_networks_are_recorded_with_stable_macs_and_fixed_leases(run: Run) -> None:
    target = run.target
    instance = target.create_instance(spec(), [fake_disk(target)])
    nics = [
        NicSpec(source_network="prod", network="bubble", isolated=True),
        NicSpec(source_network="dmz", network="dr-dmz", private_ip="192.168.50.10", security_groups=["web"]),
    ]
    first = target.attach_networks(instance, nics)
    assert first.addresses == ["dhcp", "192.168.50.10"]
    vm = json.loads((Path(instance.resources[0].id) / "vm.json").read_text())
    assert [(n["network"], n["restrict"]) for n in vm["nics"]] == [("bubble", True), ("dr-dmz", False)]
    assert vm["nics"][1]["user_net"] == {
        "net": "192.168.50.0/24",
        "host": "192.168.50.1",
        "dns": "192.168.50.2",
        "dhcpstart": "192.168.50.10",
    }
    assert vm["nics"][1]["security_groups"] == ["web"]
    again = target.attach_networks(instance, nics)
    assert again.detail["nics"] == first.detail["nics"], "MACs are deterministic"
    assert len({n["mac"] for n in first.detail["nics"]}) == 2
    with pytest.raises(InvalidInputError, match="not an IPv4 address"):
        target.attach_networks(instance, [NicSpec(source_network="a", network="b", private_ip="fe80::1")])
    running = instance.model_copy(update={"state": "running"})
    with pytest.raises(InvalidInputError, match="before power_on"):
        target.attach_networks(running, nics)
    assert target.delete(instance.resources[0]) is True


def test_validating_a_machine_that_was_never_powered_on_fails_with_a_reason(run: Run) -> None:
    instance = run.target.create_instance(spec(), [fake_disk(run.target)])
    run.track(instance.resources)
    evidence = run.target.validate(instance, ValidationSpec(marker="x", timeout_seconds=1))
    assert not evidence.ok and "not powered on" in evidence.reason


def test_a_pid_reused_by_another_process_is_never_killed(run: Run) -> None:
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        reused = Resource(
            type="qemu-process",
            id=str(other.pid),
            detail={
                "pidfile": str(run.work_dir / "run-1" / "web-1" / "vm" / "qemu.pid"),
                "cmdline_sha256": "0" * 64,
            },
        )
        assert run.target.delete(reused) is False
        time.sleep(0.2)
        assert other.poll() is None, "the unrelated process is still running"
        gone = reused.model_copy(update={"id": "999999999"})
        assert run.target.delete(gone) is False
        with pytest.raises(InvalidInputError, match="fingerprint"):
            run.target.delete(reused.model_copy(update={"detail": {}}))
    finally:
        other.kill()
        other.wait(timeout=10)


def test_delete_is_idempotent_and_refuses_paths_outside_the_work_dir(run: Run, tmp_path: Path) -> None:
    target = run.target
    disk = fake_disk(target)
    resource = Resource(type="file", id=disk.location)
    assert target.delete(resource) is True
    assert target.delete(resource) is False
    assert not (run.work_dir / "run-1").exists(), "emptied directories are pruned up to work_dir"
    assert run.work_dir.is_dir()

    outside = tmp_path / "precious.img"
    outside.write_bytes(b"keep me")
    for path in (str(outside), str(run.work_dir / ".." / "precious.img"), str(run.work_dir)):
        with pytest.raises(InvalidInputError, match="outside"):
            target.delete(Resource(type="file", id=path))
    with pytest.raises(InvalidInputError, match="outside"):
        target.delete(Resource(type="qemu-vm", id=str(tmp_path)))
    link = run.work_dir / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(InvalidInputError, match="outside"):
        target.delete(Resource(type="file", id=str(link / "precious.img")))
    assert target.delete(Resource(type="file", id=str(link))) is True, "the link goes, not its target"
    assert outside.read_bytes() == b"keep me"
    with pytest.raises(InvalidInputError, match="no 'ebs-snapshot' resources"):
        target.delete(Resource(type="ebs-snapshot", id="snap-1"))


def test_a_failed_write_leaves_nothing_behind(source: Source, run: Run) -> None:
    def fail(done: int, total: int) -> None:
        raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected"):
        run.target.write_disk(source.repo, source.point, spec(), progress=fail)
    assert not (run.work_dir / "run-1").exists()


def test_the_bundle_is_one_object_per_capability_over_one_context(tmp_path: Path) -> None:
    bundle = qemu_target(tmp_path / "w", "qcow2")
    assert isinstance(bundle, Target) and bundle.kind == "qemu"
    caps = [bundle.disks, bundle.launcher, bundle.networks, bundle.validator, bundle.cleaner]
    assert len({id(c) for c in caps}) == 5 and len({id(c.context) for c in caps}) == 1  # type: ignore[attr-defined]
    assert isinstance(bundle.disks, QemuDisks) and bundle.disks.context.image_format == "qcow2"
    with pytest.raises(InvalidInputError):
        QemuTarget(tmp_path / "w", image_format="vmdk")


def test_an_efi_machine_starts_under_ovmf_with_its_own_variable_store(source: Source, run: Run) -> None:
    target = run.target
    efi = spec().model_copy(update={"firmware": Firmware.EFI})
    disk = target.write_disk(source.repo, source.point, efi)
    run.track(disk.resources)
    instance = target.power_on(target.create_instance(efi, [disk]))
    run.track(instance.resources)
    vm_dir = Path(instance.detail["vm_dir"])
    assert json.loads((vm_dir / "vm.json").read_text())["firmware"] == "efi"
    assert (vm_dir / "efivars.fd").stat().st_size == Path("/usr/share/OVMF/OVMF_VARS_4M.fd").stat().st_size
    cmdline = Path(f"/proc/{(vm_dir / 'qemu.pid').read_text().strip()}/cmdline").read_bytes().split(b"\0")
    assert any(b"if=pflash" in a and b"OVMF_CODE" in a and b"readonly=on" in a for a in cmdline)
    # the BIOS-only test disk has no EFI boot loader: OVMF itself must be what runs and says so
    evidence = target.validate(instance, ValidationSpec(marker=bootdisk.boot_line(source.marker), timeout_seconds=20))
    assert not evidence.ok
    serial = Path(instance.detail["serial_log"]).read_text(errors="replace")
    assert "BdsDxe" in serial or "UEFI" in serial, serial[-2000:]
