"""What a Windows guest needs changed to boot on a target: pure, from :class:`WindowsFacts` only.

Each check compares a fact with the state the target needs and plans a :class:`Change` only
when they differ, so deciding again on the prepared guest plans nothing:

* boot storage: every driver of the target's storage group present on the volume starts at
  boot (``Start=0``; the service key is completed when only the file is there) and its device
  ids have CriticalDeviceDatabase entries; none present is an error finding naming what to
  inject (it cannot be written from here: the driver must be installed with its package);
* network: none of the target's network drivers present is a warning (no network, no RDP);
* SAN policy OnlineAll (1), so disks that appear as new devices come online;
* VMware Tools services disabled (``Start=4``): they fail or hang off VMware;
* RDP allowed (``fDenyTSConnections=0``), fast startup off (``HiberbootEnabled=0``: a
  hybrid shutdown would leave the volume hibernated for the next preparation);
* pending reboot and static addresses are findings; the first-boot hook
  (:mod:`~node_runtime.prep.decide.windows_firstboot`) sets DHCP and brings disks online.
"""

from __future__ import annotations

from node_runtime.prep.decide.windows_firstboot import first_boot_changes
from node_runtime.prep.models import Change, PrepFinding, RegistryType, WindowsFacts
from node_runtime.prep.targets import VMWARE_WINDOWS_SERVICES, WindowsDriver, needs

#: what to install when the target's drivers are missing, per target: (storage, network)
DRIVER_PACKAGES: dict[str, tuple[str, str]] = {
    "qemu": ("the virtio-win drivers (viostor or vioscsi, from the virtio-win ISO or MSI)",
             "netkvm from virtio-win"),
    "aws": ("an NVMe driver: the AWS NVMe driver (AWSNVMe) or Windows' inbox stornvme (Windows Server 2016+)",
            "the AWS ENA driver"),
    "azure": ("the Hyper-V storage driver storvsc (inbox since Windows Server 2012; Integration Services before)",
              "the Hyper-V network driver netvsc (inbox since Windows Server 2012)"),
}  # fmt: skip
SAN_ONLINE_ALL = 1
SERVICE_DISABLED = 4
BOOT_START = 0


def decide_windows(facts: WindowsFacts, target: str) -> tuple[list[PrepFinding], list[Change]]:
    """Findings and planned changes for ``target`` (qemu, aws or azure); ValueError for others."""
    target_needs = needs(target)
    cs = facts.control_set
    findings: list[PrepFinding] = []
    changes: list[Change] = []
    storage_pkg, network_pkg = DRIVER_PACKAGES[target]

    present = [d for d in target_needs.windows_storage if _service_file(facts, d.service)]
    if not present:
        names = ", ".join(d.file for d in target_needs.windows_storage)
        findings.append(PrepFinding(
            severity="error", code="windows.storage_driver_missing",
            message=f"no boot storage driver for {target_needs.name} is on the volume ({names} absent from "
                    f"System32\\drivers): Windows would stop with INACCESSIBLE_BOOT_DEVICE. Install {storage_pkg} "
                    "on the source and replicate again"))  # fmt: skip
    for driver in present:
        changes += _boot_driver(facts, driver)

    if not any(_service_file(facts, name) or _key(facts, name) for name in target_needs.windows_network):
        findings.append(PrepFinding(
            severity="warning", code="windows.network_driver_missing",
            message=f"no network driver for {target_needs.name} ({', '.join(target_needs.windows_network)}) is on "
                    f"the volume: the machine will boot without a network. Install {network_pkg} on the source"))  # fmt: skip

    changes += _dword(cs, "Services\\partmgr\\Parameters", "SanPolicy", facts.san_policy, SAN_ONLINE_ALL,
                      "windows.san_policy", "SAN policy OnlineAll: disks seen as new devices on the target come "
                      "online instead of staying offline")  # fmt: skip
    for name in VMWARE_WINDOWS_SERVICES:
        service = facts.services.get(name)
        if service is not None and service.key_present:
            changes += _dword(cs, f"Services\\{name}", "Start", service.start, SERVICE_DISABLED,
                              "windows.vmware_service", f"VMware Tools service {name} fails or waits for "
                              "VMware's virtual hardware on another platform")  # fmt: skip
    changes += _dword(cs, "Control\\Terminal Server", "fDenyTSConnections", facts.rdp_denied, 0, "windows.rdp",
                      "Remote Desktop is the way into a recovered machine (it has no console on aws/azure)")  # fmt: skip
    changes += _dword(cs, "Control\\Session Manager\\Power", "HiberbootEnabled", facts.hiberboot_enabled, 0,
                      "windows.fast_startup", "fast startup hibernates the volume at shutdown, which makes it "
                      "unsafe to prepare (or fail back) afterwards")  # fmt: skip

    if facts.pending_reboot:
        findings.append(PrepFinding(
            severity="warning", code="windows.pending_reboot",
            message="Windows has a pending reboot (" + "; ".join(facts.pending_reboot) + "): the first boot "
                    "on the target finishes that update work and may reboot once, or roll it back"))  # fmt: skip
    if facts.static_addresses:
        listed = ", ".join(f"{addr} ({guid})" for guid, addr in sorted(facts.static_addresses.items()))
        findings.append(PrepFinding(
            severity="warning", code="windows.static_address",
            message=f"static addresses {listed} belong to the source's network adapters: the first-boot hook "
                    "sets DHCP on every adapter of the recovered machine"))  # fmt: skip
    changes += first_boot_changes(facts, cs)
    return findings, changes


def _service_file(facts: WindowsFacts, name: str) -> bool:
    service = facts.services.get(name)
    return service is not None and service.file_present


def _key(facts: WindowsFacts, name: str) -> bool:
    service = facts.services.get(name)
    return service is not None and service.key_present


def _boot_driver(facts: WindowsFacts, driver: WindowsDriver) -> list[Change]:
    cs = facts.control_set
    service = facts.services[driver.service]
    reason = f"{driver.service} must start at boot to read the system disk on the target"
    wanted: list[tuple[str, RegistryType, int | str, int | str | None]] = [
        ("Type", "dword", 1, service.type),  # kernel driver
        ("ErrorControl", "dword", 1, service.error_control),
        ("Group", "sz", "SCSI miniport", service.group),
        ("ImagePath", "expand_sz", f"System32\\drivers\\{driver.file}", service.image_path),
    ]
    changes: list[Change] = []
    for name, value_type, value, before in wanted:
        if before is None:  # complete a service key Windows never registered (only the file is there)
            changes.append(_set("SYSTEM", f"{cs}\\Services\\{driver.service}", name, value_type, value, None,
                                "windows.storage_driver", reason))  # fmt: skip
    changes += _dword(cs, f"Services\\{driver.service}", "Start", service.start, BOOT_START,
                      "windows.storage_driver", reason)  # fmt: skip
    for device_id in driver.device_ids:
        entry = facts.critical_devices.get(device_id)
        key = f"{cs}\\Control\\CriticalDeviceDatabase\\{device_id}"
        why = f"binds {device_id} to {driver.service} at boot, before Plug and Play has run"
        current = (entry.service, entry.class_guid) if entry else (None, None)
        if current[0] is None or current[0].lower() != driver.service.lower():
            changes.append(_set("SYSTEM", key, "Service", "sz", driver.service, current[0],
                                "windows.critical_device", why))  # fmt: skip
        if current[1] is None or current[1].lower() != driver.class_guid.lower():
            changes.append(_set("SYSTEM", key, "ClassGUID", "sz", driver.class_guid, current[1],
                                "windows.critical_device", why))  # fmt: skip
    return changes


def _dword(
    cs: str, key: str, name: str, current: int | None, wanted: int, code: str, reason: str
) -> list[Change]:
    if current == wanted:
        return []
    return [_set("SYSTEM", f"{cs}\\{key}", name, "dword", wanted, current, code, reason)]


def _set(hive: str, key: str, name: str, value_type: RegistryType, value: int | str,
         before: int | str | None, code: str, reason: str) -> Change:  # fmt: skip
    return Change(code=code, kind="registry_set", where=f"HKLM\\{hive}\\{key}\\{name}", reason=reason,
                  hive="SYSTEM" if hive == "SYSTEM" else "SOFTWARE", key=key, name=name, value_type=value_type,
                  value=value, before=None if before is None else str(before), after=str(value))  # fmt: skip
