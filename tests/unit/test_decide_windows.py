"""Windows decisions on hand-built facts (pure: no appliance): what each target changes, and
that an installed state decides nothing. The same decisions on real images: tests/prep."""

from __future__ import annotations

import pytest

from node_runtime.prep.decide.windows import decide_windows
from node_runtime.prep.decide.windows_firstboot import SCRIPT, SERVICE, SERVICE_VALUES
from node_runtime.prep.models import CriticalDevice, WindowsFacts, WindowsService

CS = "ControlSet001"
SCSI_CLASS = "{4d36e97b-e325-11ce-bfc1-08002be10318}"


def _facts(**services: WindowsService) -> WindowsFacts:
    return WindowsFacts(product="Windows Server 2022 Standard", major=10, minor=0, systemroot="/Windows",
                        control_set="ControlSet002", services=services, san_policy=1, rdp_denied=0,
                        hiberboot_enabled=0)  # fmt: skip


def _installed(facts: WindowsFacts) -> WindowsFacts:
    """``facts`` with the first-boot hook already installed (as a second inspection sees it)."""
    values = {name: value for name, (_, value) in SERVICE_VALUES.items()}
    return facts.model_copy(update={"first_boot_service": values, "first_boot_script": SCRIPT,
                                    "first_boot_present": True})  # fmt: skip


def _inbox(name: str, start: int) -> WindowsService:
    return WindowsService(name=name, key_present=True, start=start, type=1, error_control=1,
                          group="SCSI miniport", image_path=f"System32\\drivers\\{name}.sys", file_present=True)  # fmt: skip


def test_aws_enables_inbox_stornvme_and_warns_without_ena() -> None:
    facts = _installed(_facts(stornvme=_inbox("stornvme", 3)))
    findings, changes = decide_windows(facts, "aws")
    assert [(f.code, f.severity) for f in findings] == [("windows.network_driver_missing", "warning")]
    assert "ENA" in findings[0].message
    assert [(c.where, c.before, c.value) for c in changes] == [
        ("HKLM\\SYSTEM\\ControlSet002\\Services\\stornvme\\Start", "3", 0),
        (
            "HKLM\\SYSTEM\\ControlSet002\\Control\\CriticalDeviceDatabase\\pci#cc_010802\\Service",
            None,
            "stornvme",
        ),
        (
            "HKLM\\SYSTEM\\ControlSet002\\Control\\CriticalDeviceDatabase\\pci#cc_010802\\ClassGUID",
            None,
            SCSI_CLASS,
        ),
    ]
    # applied, the same facts decide nothing more
    done = facts.model_copy(
        update={
            "services": {
                "stornvme": _inbox("stornvme", 0),
                "ena": WindowsService(name="ena", file_present=True),
            },
            "critical_devices": {
                "pci#cc_010802": CriticalDevice(service="stornvme", class_guid=SCSI_CLASS.upper())
            },
        }
    )
    assert decide_windows(done, "aws") == ([], [])


def test_a_driver_file_without_a_service_key_gets_a_complete_boot_service() -> None:
    facts = _installed(_facts(AWSNVMe=WindowsService(name="AWSNVMe", file_present=True)))
    _, changes = decide_windows(facts, "aws")
    service = {c.name: c.value for c in changes if c.key == "ControlSet002\\Services\\AWSNVMe"}
    assert service == {"Type": 1, "ErrorControl": 1, "Group": "SCSI miniport",
                       "ImagePath": "System32\\drivers\\AWSNVMe.sys", "Start": 0}  # fmt: skip
    assert {c.key for c in changes if c.code == "windows.critical_device"} == {
        "ControlSet002\\Control\\CriticalDeviceDatabase\\pci#ven_1d0f&dev_8061",
        "ControlSet002\\Control\\CriticalDeviceDatabase\\pci#ven_1d0f&dev_0061",
    }


def test_azure_with_hyperv_drivers_in_place_changes_only_what_differs() -> None:
    facts = _installed(_facts(storvsc=_inbox("storvsc", 0), netvsc=_inbox("netvsc", 3),
                              VMTools=WindowsService(name="VMTools", key_present=True, start=2)))  # fmt: skip
    facts.critical_devices = {"vmbus#{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}":
                              CriticalDevice(service="storvsc", class_guid=SCSI_CLASS)}  # fmt: skip
    facts.san_policy, facts.rdp_denied, facts.hiberboot_enabled = 4, None, 1
    findings, changes = decide_windows(facts, "azure")
    assert findings == []
    assert [(c.code, c.where.rsplit("\\", 2)[-2:], c.before, c.value) for c in changes] == [
        ("windows.san_policy", ["Parameters", "SanPolicy"], "4", 1),
        ("windows.vmware_service", ["VMTools", "Start"], "2", 4),
        ("windows.rdp", ["Terminal Server", "fDenyTSConnections"], None, 0),
        ("windows.fast_startup", ["Power", "HiberbootEnabled"], "1", 0),
    ]


def test_first_boot_hook_is_completed_value_by_value_and_the_script_rewritten_when_it_differs() -> None:
    facts = _installed(_facts(viostor=_inbox("viostor", 0)))
    facts.first_boot_service = {**facts.first_boot_service, "Start": 4}  # someone disabled it
    facts.first_boot_script = "old text"
    facts.critical_devices = {d: CriticalDevice(service="viostor", class_guid=SCSI_CLASS)
                              for d in ("pci#ven_1af4&dev_1001", "pci#ven_1af4&dev_1042")}  # fmt: skip
    findings, changes = decide_windows(facts, "qemu")
    assert [f.code for f in findings] == ["windows.network_driver_missing"]
    assert [(c.kind, c.where, c.before) for c in changes] == [
        ("write_file", "/Lifeboat/firstboot.ps1", "8 bytes, other text"),
        ("registry_set", f"HKLM\\SYSTEM\\ControlSet002\\Services\\{SERVICE}\\Start", "4"),
    ]


def test_an_unknown_target_is_refused() -> None:
    with pytest.raises(ValueError, match="qemu, aws, azure"):
        decide_windows(_facts(), "vmware")
