"""Windows guest preparation on real NTFS images with real hives, through real libguestfs appliances.

Images are built once for the module in one appliance (tests/prep/windows_image.py); each
appliance launch costs ~15 s under TCG, so each fixture below is one launch whose result
several tests check. Decisions for hand-built facts are in tests/unit/test_decide_windows.py.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from node_runtime.prep.act.windows import apply_windows
from node_runtime.prep.decide.windows import decide_windows
from node_runtime.prep.decide.windows_firstboot import IMAGE_PATH, SCRIPT, SERVICE, SERVICE_VALUES
from node_runtime.prep.guest import DiskSource, open_guest
from node_runtime.prep.models import Change, CriticalDevice, GuestPrep, WindowsService
from node_runtime.prep.run import prepare_disks
from tests.prep.windows_image import (
    REG_DWORD,
    REG_EXPAND_SZ,
    REG_MULTI_SZ,
    REG_SZ,
    TCPIP_GUID,
    HiveSpec,
    WindowsSpec,
    build_windows_disks,
    hash_file,
    hiberfil,
    hive_has_key,
    ntfs_cat,
    read_hive_value,
    set_ntfs_dirty,
    write_bitlocker_disk,
)

pytestmark = pytest.mark.prep

CS = "ControlSet001"
SCSI_CLASS = "{4d36e97b-e325-11ce-bfc1-08002be10318}"
VMTOOLS_EXE = "/Program Files/VMware/VMware Tools/vmtoolsd.exe"


def _system(extra: HiveSpec | None = None) -> HiveSpec:
    svc = f"{CS}\\Services"
    return {
        "Select": {"Current": (REG_DWORD, 1), "Default": (REG_DWORD, 1), "LastKnownGood": (REG_DWORD, 1)},
        f"{CS}\\Control\\ComputerName\\ComputerName": {"ComputerName": (REG_SZ, "WIN-LB01")},
        f"{svc}\\Tcpip\\Parameters": {"Hostname": (REG_SZ, "WIN-LB01")},
        **(extra or {}),
    }


SOFTWARE = {
    "Microsoft\\Windows NT\\CurrentVersion": {
        "ProductName": (REG_SZ, "Windows Server 2019 Datacenter"), "EditionID": (REG_SZ, "ServerDatacenter"),
        "InstallationType": (REG_SZ, "Server"), "CurrentVersion": (REG_SZ, "6.3"),
        "CurrentMajorVersionNumber": (REG_DWORD, 10), "CurrentMinorVersionNumber": (REG_DWORD, 0),
        "CurrentBuild": (REG_SZ, "17763"), "CurrentBuildNumber": (REG_SZ, "17763"),
    },
}  # fmt: skip
MAIN = WindowsSpec(
    system=_system({
        f"{CS}\\Services\\Tcpip\\Parameters\\Interfaces\\{TCPIP_GUID}": {
            "EnableDHCP": (REG_DWORD, 0), "IPAddress": (REG_MULTI_SZ, ["10.20.30.40"]),
            "SubnetMask": (REG_MULTI_SZ, ["255.255.255.0"])},
        f"{CS}\\Services\\Tcpip\\Parameters\\Interfaces\\{{0a0b0c0d-1111-2222-3333-444455556666}}": {
            "EnableDHCP": (REG_DWORD, 1)},
        f"{CS}\\Services\\viostor": {
            "Type": (REG_DWORD, 1), "Start": (REG_DWORD, 3), "ErrorControl": (REG_DWORD, 1),
            "Group": (REG_SZ, "SCSI miniport"), "ImagePath": (REG_EXPAND_SZ, "System32\\drivers\\viostor.sys")},
        f"{CS}\\Services\\netkvm": {"Type": (REG_DWORD, 1), "Start": (REG_DWORD, 3)},
        f"{CS}\\Services\\VMTools": {
            "Type": (REG_DWORD, 16), "Start": (REG_DWORD, 2),
            "ImagePath": (REG_EXPAND_SZ, '"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe"')},
        f"{CS}\\Services\\vmvss": {"Type": (REG_DWORD, 16), "Start": (REG_DWORD, 3)},
        f"{CS}\\Services\\partmgr\\Parameters": {"SanPolicy": (REG_DWORD, 2)},
        f"{CS}\\Control\\Terminal Server": {"fDenyTSConnections": (REG_DWORD, 1)},
        f"{CS}\\Control\\Session Manager\\Power": {"HiberbootEnabled": (REG_DWORD, 1)},
        f"{CS}\\Control\\Session Manager": {
            "PendingFileRenameOperations": (REG_MULTI_SZ, ["\\??\\C:\\Windows\\Temp\\old.dll", ""])},
        # half an entry: the right class but no service, so only Service is planned
        f"{CS}\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1042": {"ClassGUID": (REG_SZ, SCSI_CLASS)},
    }),
    software={**SOFTWARE, "Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired": {}},
    files={"/Windows/System32/drivers/viostor.sys": b"MZ viostor", "/Windows/System32/drivers/netkvm.sys": b"MZ",
           VMTOOLS_EXE: b"MZ vmtoolsd"},
)  # fmt: skip


@dataclass
class Disks:
    main: Path
    hibernated: Path
    dirty: Path
    bitlocker: Path
    scratch: Path


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> Disks:
    """All the module's images, formatted in one appliance."""
    tmp = tmp_path_factory.mktemp("windows")
    made = Disks(*(tmp / f"{name}.img" for name in ("main", "hibernated", "dirty", "bitlocker", "scratch")))
    plain = WindowsSpec(system=_system(), software=SOFTWARE, size=32 << 20)
    build_windows_disks({
        made.main: MAIN,
        made.hibernated: WindowsSpec(system=_system(), software=SOFTWARE, size=32 << 20,
                                     files={"/hiberfil.sys": hiberfil()}),
        made.dirty: plain,
        made.scratch: WindowsSpec(system=_system(), software=SOFTWARE, size=32 << 20,
                                  files={"/Windows/Temp/stale.txt": b"stale"}),
    })  # fmt: skip
    set_ntfs_dirty(made.dirty)
    write_bitlocker_disk(made.bitlocker)
    return made


@dataclass
class Prepared:
    planned: GuestPrep
    first: GuestPrep
    files: dict[str, bytes | None]
    second: GuestPrep
    hash_after_first: str
    hash_after_second: str
    files_after_second: dict[str, bytes | None]
    hives: Path  # SYSTEM and SOFTWARE as the first run left them


PREPARED_FILES = (
    "/Windows/System32/config/SYSTEM",
    "/Windows/System32/config/SOFTWARE",
    "/Lifeboat/firstboot.ps1",
)


@pytest.fixture(scope="module")
def prepared(disks: Disks, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """prepare_disks(apply=True) end to end (its planned result kept), the files read back with
    ntfscat, then prepare_disks(apply=True) again. Two appliance launches."""
    source = [DiskSource(path=str(disks.main))]
    planned: list[GuestPrep] = []
    first = prepare_disks(source, target="qemu", apply=True, before_apply=planned.append)
    hash_after_first = hash_file(disks.main)
    work = tmp_path_factory.mktemp("readback")
    files = {path: ntfs_cat(disks.main, path, work) for path in PREPARED_FILES}
    second = prepare_disks(source, target="qemu", apply=True)
    files_after = {path: ntfs_cat(disks.main, path, work) for path in PREPARED_FILES}
    for path in PREPARED_FILES[:2]:
        (work / posixpath.basename(path)).write_bytes(files[path] or b"")
    return Prepared(
        planned[0], first, files, second, hash_after_first, hash_file(disks.main), files_after, work
    )


def test_gather_reads_version_drivers_and_settings_from_the_hives(prepared: Prepared) -> None:
    assert prepared.planned.facts.windows is not None
    facts = prepared.planned.facts.windows
    assert not prepared.planned.refused and not any(f.refuses for f in prepared.planned.findings)
    assert (facts.product, facts.edition, facts.major, facts.minor, facts.build) == (
        "Windows Server 2019 Datacenter",
        "ServerDatacenter",
        10,
        0,
        "17763",
    )
    assert facts.systemroot == "/Windows" and facts.control_set == CS
    viostor = facts.services["viostor"]
    assert (viostor.key_present, viostor.start, viostor.file_present) == (True, 3, True)
    assert facts.services["vioscsi"] == WindowsService(name="vioscsi")  # neither key nor file
    assert facts.services["netkvm"].file_present and facts.services["netkvm"].key_present
    vmtools = facts.services["VMTools"]
    assert (vmtools.start, vmtools.file_present) == (2, True)  # ImagePath resolved to C:\Program Files\…
    assert facts.services["vmvss"].key_present and not facts.services["vmvss"].file_present
    assert not facts.services["VGAuthService"].key_present
    assert facts.critical_devices == {"pci#ven_1af4&dev_1042": CriticalDevice(class_guid=SCSI_CLASS)}
    assert (facts.san_policy, facts.rdp_denied, facts.hiberboot_enabled) == (2, 1, 1)
    assert facts.pending_reboot == [
        "PendingFileRenameOperations (1 files)",
        "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\RebootRequired",
    ]
    assert facts.static_addresses == {TCPIP_GUID: "10.20.30.40"}
    assert not facts.hibernated and not facts.dirty
    assert (facts.first_boot_present, facts.first_boot_service, facts.first_boot_script) == (False, {}, None)


def _by_where(changes: list[Change]) -> dict[str, Change]:
    return {c.where.split(f"{CS}\\", 1)[-1]: c for c in changes}


def test_qemu_decisions_for_the_real_image(prepared: Prepared) -> None:
    findings = [f for f in prepared.planned.findings if f.code.startswith("windows.")]
    changes = prepared.planned.changes
    assert sorted(f.code for f in findings) == ["windows.pending_reboot", "windows.static_address"]
    assert all(f.severity == "warning" and not f.refuses for f in findings)
    static = next(f for f in findings if f.code == "windows.static_address")
    assert "10.20.30.40" in static.message and "DHCP" in static.message
    planned = {w: (c.before, c.value) for w, c in _by_where(changes).items() if c.kind == "registry_set"}
    assert {w: v for w, v in planned.items() if not w.startswith(f"Services\\{SERVICE}")} == {
        "Services\\viostor\\Start": ("3", 0),
        "Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001\\Service": (None, "viostor"),
        "Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001\\ClassGUID": (None, SCSI_CLASS),
        "Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1042\\Service": (None, "viostor"),
        "Services\\partmgr\\Parameters\\SanPolicy": ("2", 1),
        "Services\\VMTools\\Start": ("2", 4),
        "Services\\vmvss\\Start": ("3", 4),
        "Control\\Terminal Server\\fDenyTSConnections": ("1", 0),
        "Control\\Session Manager\\Power\\HiberbootEnabled": ("1", 0),
    }
    assert {w.rsplit("\\", 1)[1] for w in planned if w.startswith(f"Services\\{SERVICE}")} == set(
        SERVICE_VALUES
    )
    script = [c for c in changes if c.kind == "write_file"]
    assert [(c.where, c.content) for c in script] == [("/Lifeboat/firstboot.ps1", SCRIPT)]
    assert all(c.reason and c.status == "planned" and c.hive in (None, "SYSTEM") for c in changes)


def test_aws_and_azure_on_the_same_image_miss_their_boot_drivers(prepared: Prepared) -> None:
    assert prepared.planned.facts.windows is not None
    for target, driver, network in (("aws", "AWSNVMe", "ENA"), ("azure", "storvsc", "netvsc")):
        findings, changes = decide_windows(prepared.planned.facts.windows, target)
        errors = [f for f in findings if f.severity == "error"]
        assert [f.code for f in errors] == ["windows.storage_driver_missing"], target
        assert driver in errors[0].message and "INACCESSIBLE_BOOT_DEVICE" in errors[0].message
        warning = next(f for f in findings if f.code == "windows.network_driver_missing")
        assert network in warning.message
        assert not any(c.code in ("windows.storage_driver", "windows.critical_device") for c in changes)
        assert any(c.code == "windows.san_policy" for c in changes)  # the rest is still decided


def test_prepare_disks_applies_every_change_into_the_hives(prepared: Prepared) -> None:
    first = prepared.first
    assert first.applied and not first.refused and first.facts.type == "windows"
    assert first.facts.windows is not None and first.facts.windows.product == "Windows Server 2019 Datacenter"
    assert first.changes and all(c.status == "applied" and c.error is None for c in first.changes)
    system = prepared.hives / "SYSTEM"
    svc = f"{CS}\\Services"
    cdd = f"{CS}\\Control\\CriticalDeviceDatabase"
    assert read_hive_value(system, f"{svc}\\viostor", "Start") == 0
    for device in ("pci#ven_1af4&dev_1001", "pci#ven_1af4&dev_1042"):
        assert read_hive_value(system, f"{cdd}\\{device}", "Service") == "viostor"
        assert read_hive_value(system, f"{cdd}\\{device}", "ClassGUID") == SCSI_CLASS
    assert not hive_has_key(system, f"{cdd}\\pci#ven_1af4&dev_1004")  # vioscsi is not on the volume
    assert read_hive_value(system, f"{svc}\\vioscsi", "Start") is None
    assert read_hive_value(system, f"{svc}\\partmgr\\Parameters", "SanPolicy") == 1
    assert read_hive_value(system, f"{svc}\\VMTools", "Start") == 4
    assert read_hive_value(system, f"{svc}\\vmvss", "Start") == 4
    assert read_hive_value(system, f"{CS}\\Control\\Terminal Server", "fDenyTSConnections") == 0
    assert read_hive_value(system, f"{CS}\\Control\\Session Manager\\Power", "HiberbootEnabled") == 0
    assert read_hive_value(system, f"{svc}\\{SERVICE}", "Start") == 2
    assert read_hive_value(system, f"{svc}\\{SERVICE}", "Type") == 0x10
    assert read_hive_value(system, f"{svc}\\{SERVICE}", "ObjectName") == "LocalSystem"
    assert read_hive_value(system, f"{svc}\\{SERVICE}", "ImagePath") == IMAGE_PATH
    # untouched values survive the rewrite of the hive
    assert read_hive_value(system, f"{svc}\\Tcpip\\Parameters", "Hostname") == "WIN-LB01"
    assert read_hive_value(prepared.hives / "SOFTWARE", "Microsoft\\Windows NT\\CurrentVersion",
                           "CurrentBuild") == "17763"  # fmt: skip
    assert prepared.files["/Lifeboat/firstboot.ps1"] == SCRIPT.encode()
    assert "EnableDHCP" in SCRIPT and "Set-Disk" in SCRIPT and "firstboot.log" in SCRIPT


def test_the_second_preparation_changes_nothing(prepared: Prepared) -> None:
    second = prepared.second
    assert second.changes == [] and not second.applied and not second.refused
    # what stays true of the guest is still reported, as findings (not changes)
    assert {f.code for f in second.findings} == {"windows.pending_reboot", "windows.static_address"}
    assert second.facts.windows is not None and second.facts.windows.first_boot_present
    assert prepared.files_after_second == prepared.files
    assert prepared.hash_after_second == prepared.hash_after_first  # not a byte of the image changed


@pytest.fixture(scope="module")
def refused(disks: Disks) -> Iterator[dict[str, tuple[GuestPrep, str, str]]]:
    """prepare_disks(apply=True) on each volume that must be refused: result, hash before, after."""
    found: dict[str, tuple[GuestPrep, str, str]] = {}
    for name in ("bitlocker", "hibernated", "dirty"):
        path: Path = getattr(disks, name)
        before = hash_file(path)
        found[name] = (
            prepare_disks([DiskSource(path=str(path))], target="qemu", apply=True),
            before,
            hash_file(path),
        )
    yield found


@pytest.mark.parametrize(("name", "code", "advice"), [
    ("bitlocker", "volume_encrypted", "BitLocker"),
    ("hibernated", "windows.hibernated", "shut it down fully"),
    ("dirty", "windows.dirty_volume", "chkdsk /f"),
])  # fmt: skip
def test_unsafe_volumes_are_refused_and_left_byte_identical(
    refused: dict[str, tuple[GuestPrep, str, str]], name: str, code: str, advice: str
) -> None:
    result, before, after = refused[name]
    assert result.refused and not result.applied
    finding = next(f for f in result.findings if f.code == code)
    assert finding.severity == "error" and finding.refuses and advice in finding.message
    assert all(c.status == "planned" for c in result.changes)
    assert after == before
    if name != "bitlocker":  # the Windows tree was still read (read-only), so the report says what it is
        assert result.facts.windows is not None
        assert (result.facts.windows.hibernated, result.facts.windows.dirty) == (
            name == "hibernated",
            name == "dirty",
        )


def test_apply_records_each_failure_and_still_makes_the_other_changes(disks: Disks, tmp_path: Path) -> None:
    def reg(hive: str, name: str, value_type: str, value: object) -> Change:
        return Change.model_validate({"code": "test", "kind": "registry_set", "where": f"{hive}\\Lifeboat\\{name}",
                                      "reason": "test", "hive": hive, "key": "Lifeboat\\Test", "name": name,
                                      "value_type": value_type, "value": value})  # fmt: skip

    changes = [
        reg("SYSTEM", "Good", "dword", 7),
        reg("SYSTEM", "Bad", "dword", "not a number"),
        reg("SOFTWARE", "Names", "multi_sz", ["a", "b"]),
        Change(code="test", kind="write_file", where="/LIFEBOAT/New/x.txt", reason="test", content="x"),
        Change(code="test", kind="command", where="guest", reason="test", argv=["true"]),
        Change(code="test", kind="remove_file", where="/windows/temp/STALE.txt", reason="test"),
    ]
    with open_guest([DiskSource(path=str(disks.scratch))], readonly=False) as guest:
        root = guest.roots()[0]
        guest.mount_root(root, writable=True)
        done = apply_windows(guest, changes)
    assert [c.status for c in done] == ["applied", "failed", "applied", "applied", "failed", "applied"]
    assert "dword needs an int" in (done[1].error or "") and "command" in (done[4].error or "")
    system, software = tmp_path / "SYSTEM", tmp_path / "SOFTWARE"
    for hive in (system, software):
        hive.write_bytes(ntfs_cat(disks.scratch, f"/Windows/System32/config/{hive.name}", tmp_path) or b"")
    assert read_hive_value(system, "Lifeboat\\Test", "Good") == 7
    assert read_hive_value(system, "Lifeboat\\Test", "Bad") is None
    assert read_hive_value(software, "Lifeboat\\Test", "Names") == ["a", "b"]
    assert read_hive_value(system, "Select", "Current") == 1  # the rest of the hive is intact
    assert ntfs_cat(disks.scratch, "/LIFEBOAT/New/x.txt", tmp_path) == b"x"
    assert ntfs_cat(disks.scratch, "/Windows/Temp/stale.txt", tmp_path) is None
