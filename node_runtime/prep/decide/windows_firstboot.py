"""The Lifeboat first-boot hook for Windows: what only the running guest can do.

At the first boot on the target, as LocalSystem and before anyone logs on, a PowerShell
script (``\\Lifeboat\\firstboot.ps1`` on the system volume) sets every IP-enabled adapter to
DHCP (the recovered NIC is a new device on another network; a static address would be wrong
there), brings offline disks online and read-write, logs to ``C:\\Lifeboat\\firstboot.log``,
then deletes the service that started it, so it runs once.

Mechanism: an auto-start Win32 service (``LifeboatFirstBoot``) whose ImagePath is
``cmd.exe /c start "" powershell.exe … -File <script>``. Chosen because it starts at boot
without a logon (RunOnce waits for one), runs as SYSTEM, and lives entirely in the SYSTEM
hive, written offline with hivex: no helper binary (srvany) to ship, no local Group Policy
(gpt.ini versions, scripts.ini and the Group Policy state keys) to merge with what the guest
already has. ``cmd.exe`` is not a service program, so the service control manager logs
"did not respond" (event 7000/7009) once; ``start`` detaches PowerShell so the script is not
stopped with it, and ErrorControl 0 keeps that from affecting the boot. Not yet booted on a
real Windows guest here (no Windows image in the test environment).
"""

from __future__ import annotations

from node_runtime.prep.models import Change, RegistryType, WindowsFacts

SERVICE = "LifeboatFirstBoot"
#: the script's path on the system volume (the guest's C:)
SCRIPT_PATH = "/Lifeboat/firstboot.ps1"
_SCRIPT_WIN = r"%SystemRoot%\..\Lifeboat\firstboot.ps1"
IMAGE_PATH = (
    r'%SystemRoot%\System32\cmd.exe /c start "" %SystemRoot%\System32\WindowsPowerShell\v1.0\powershell.exe'
    rf" -NoProfile -NonInteractive -ExecutionPolicy Bypass -File {_SCRIPT_WIN}"
)
#: the service's values: (type, value) by name
SERVICE_VALUES: dict[str, tuple[RegistryType, int | str]] = {
    "Type": ("dword", 0x10),  # SERVICE_WIN32_OWN_PROCESS
    "Start": ("dword", 2),  # automatic, at boot
    "ErrorControl": ("dword", 0),  # ignore: a failure never affects the boot
    "ImagePath": ("expand_sz", IMAGE_PATH),
    "ObjectName": ("sz", "LocalSystem"),
    "DisplayName": ("sz", "Lifeboat first boot"),
    "Description": (
        "sz",
        "Runs once after recovery: DHCP on every adapter, disks online; then removes itself.",
    ),
}

SCRIPT = "\r\n".join([
    "# Lifeboat first boot: installed by Lifeboat's Prep Node, started once at boot as SYSTEM",
    f"# by the {SERVICE} service, which it removes when done.",
    "$ErrorActionPreference = 'Continue'",
    "$dir = Join-Path $env:SystemDrive 'Lifeboat'",
    "New-Item -ItemType Directory -Force -Path $dir | Out-Null",
    "$log = Join-Path $dir 'firstboot.log'",
    "function Log([string]$m) { Add-Content -Path $log -Value ('{0:s} {1}' -f (Get-Date), $m) }",
    "Log 'first boot started'",
    "foreach ($nic in Get-WmiObject Win32_NetworkAdapterConfiguration -Filter 'IPEnabled = TRUE') {",
    "    if ($nic.DHCPEnabled) { Log ('DHCP already on: ' + $nic.Description); continue }",
    "    $r = $nic.EnableDHCP()",
    "    $nic.SetDNSServerSearchOrder() | Out-Null",
    "    Log ('DHCP on: ' + $nic.Description + ' (result ' + $r.ReturnValue + ')')",
    "}",
    "if (Get-Command Get-Disk -ErrorAction SilentlyContinue) {",
    "    foreach ($disk in Get-Disk | Where-Object { $_.IsOffline -or $_.IsReadOnly }) {",
    "        Set-Disk -Number $disk.Number -IsOffline $false",
    "        Set-Disk -Number $disk.Number -IsReadOnly $false",
    "        Log ('disk online: ' + $disk.Number)",
    "    }",
    "} else {",
    "    $dp = Join-Path $dir 'online.txt'",
    "    Set-Content -Path $dp -Value 'san policy=OnlineAll'",
    "    diskpart /s $dp | ForEach-Object { Log $_ }",
    "}",
    f"sc.exe delete {SERVICE} | ForEach-Object {{ Log $_ }}",
    "Log 'first boot done'",
    "",
])  # fmt: skip


def first_boot_changes(facts: WindowsFacts, control_set: str) -> list[Change]:
    """The script and the service values that differ from what the guest has (none when installed)."""
    changes: list[Change] = []
    if facts.first_boot_script != SCRIPT:
        changes.append(Change(
            code="windows.first_boot_script", kind="write_file", where=SCRIPT_PATH, content=SCRIPT,
            before=None if facts.first_boot_script is None else f"{len(facts.first_boot_script)} bytes, other text",
            after=f"{len(SCRIPT)} bytes",
            reason="the first-boot script sets DHCP on the new network adapter and brings disks online"))  # fmt: skip
    have = {name.lower(): value for name, value in facts.first_boot_service.items()}
    key = f"{control_set}\\Services\\{SERVICE}"
    for name, (value_type, value) in SERVICE_VALUES.items():
        if have.get(name.lower()) == value:
            continue
        before = have.get(name.lower())
        changes.append(Change(
            code="windows.first_boot_service", kind="registry_set", where=f"HKLM\\SYSTEM\\{key}\\{name}",
            hive="SYSTEM", key=key, name=name, value_type=value_type, value=value,
            before=None if before is None else str(before), after=str(value),
            reason="starts the first-boot script once at boot, as SYSTEM, without waiting for a logon"))  # fmt: skip
    return changes
