"""The proof that preparation works: a real Debian that cannot boot on virtio boots after it.

The guest (:mod:`tests.prep.debian_image`) is what a VMware migration brings: an initramfs
with only IDE/SCSI drivers, its root named ``/dev/sda1`` in /etc/fstab and on the kernel
line, and a DHCP stanza for ``ens192`` only. Under QEMU (TCG) it boots on an IDE disk and
an e1000 NIC, and drops to the initramfs shell on a virtio-blk disk. After
``prepare_disks(..., target="qemu", apply=True)`` it must boot on virtio-blk with a
virtio-net NIC and get a DHCP address from QEMU's user network (10.0.2.0/24).

Each boot takes 1-2 min under TCG on a 2-core machine; the Debian root and disk are built
once per session (~1 min). Needs root, mmdebstrap and the Debian mirror, libguestfs
(``python3-guestfs``), extlinux and qemu-system-x86.
"""

from __future__ import annotations

import ipaddress
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.prep.debian_image import BOOT_MARKER, END_MARKER, FAILURE, OLD_ROOT, boot, initramfs_modules

pytestmark = [pytest.mark.prep, pytest.mark.prep_boot, pytest.mark.timeout(1200)]

BOOT_TIMEOUT_S = 240.0  # a healthy boot takes 1-2 min under TCG; a failed one ~50 s
QEMU_USER_NET = ipaddress.ip_network("10.0.2.0/24")
APPLIED_CODES = (
    "linux.initramfs_drivers",
    "linux.fstab_by_uuid",
    "linux.boot_root_by_uuid",
    "linux.network_dhcp",
)


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _report(text: str, key: str) -> list[list[str]]:
    """The marker service's ``LIFEBOAT-<key> …`` lines, split into fields."""
    return [line.split()[1:] for line in re.findall(rf"LIFEBOAT-{key} [^\r\n]*", text)]


def test_unprepared_guest_boots_on_ide_and_fails_on_virtio(
    debian_root: Path, debian_image: Path, tmp_path: Path
) -> None:
    modules = initramfs_modules(debian_root)  # lsinitramfs
    assert "ata_piix" in modules and "ext4" in modules
    assert not {m for m in modules if m.startswith("virtio")}, sorted(modules)

    with ThreadPoolExecutor(2) as pool:
        ide = pool.submit(boot, debian_image, disk_bus="ide", nic="e1000", timeout=BOOT_TIMEOUT_S,
                          log=tmp_path / "ide.log")  # fmt: skip
        virtio = pool.submit(boot, debian_image, disk_bus="virtio", nic="virtio-net-pci",
                             timeout=BOOT_TIMEOUT_S, log=tmp_path / "virtio.log")  # fmt: skip
        (ide_exit, ide_text), (virtio_exit, virtio_text) = ide.result(), virtio.result()

    # the image itself is good: on its original kind of disk it boots and powers itself off
    assert BOOT_MARKER in ide_text and END_MARKER in ide_text, _tail(ide_text)
    assert ide_exit == 0, _tail(ide_text)
    assert _report(ide_text, "ROOT") == [[OLD_ROOT]]
    assert [nic[1] for nic in _report(ide_text, "NIC")] == ["e1000"]
    # its network config names VMware's ens192 only: no address on QEMU's NIC
    assert [net[0] for net in _report(ide_text, "NET")] == ["lo"], _tail(ide_text)

    # on virtio-blk the initramfs has no driver for the disk and gives up
    assert BOOT_MARKER not in virtio_text, _tail(virtio_text)
    assert virtio_exit is None  # stopped at the failure, it did not power off
    assert FAILURE.search(virtio_text), _tail(virtio_text)
    assert f"ALERT!  {OLD_ROOT} does not exist" in virtio_text, _tail(virtio_text)


def test_prepared_guest_boots_on_virtio_with_dhcp(debian_image: Path, tmp_path: Path) -> None:
    from node_runtime.prep.guest import DiskSource
    from node_runtime.prep.run import prepare_disks

    result = prepare_disks([DiskSource(path=str(debian_image))], target="qemu", apply=True)

    assert result.facts.type == "linux" and not result.refused, result.model_dump_json(indent=1)
    assert result.applied
    status = {change.code: change.status for change in result.changes}
    failed = {c.code: c.error for c in result.changes if c.status == "failed"}
    assert not failed, failed
    for code in APPLIED_CODES:
        assert status.get(code) == "applied", f"{code}: {status.get(code)} (changes: {status})"
    assert "linux.serial_console" not in status  # extlinux's APPEND already names ttyS0

    exit_code, text = boot(debian_image, disk_bus="virtio", nic="virtio-net-pci", timeout=BOOT_TIMEOUT_S,
                           log=tmp_path / "virtio.log")  # fmt: skip

    assert not FAILURE.search(text), _tail(text)
    assert BOOT_MARKER in text and END_MARKER in text, _tail(text)
    assert exit_code == 0, _tail(text)
    assert _report(text, "ROOT") == [["/dev/vda1"]], _tail(text)
    nics = dict(_report(text, "NIC"))
    assert list(nics.values()) == ["virtio_net"], _tail(text)
    addresses = {iface: ipaddress.ip_interface(addr) for iface, addr in _report(text, "NET") if iface != "lo"}
    assert set(addresses) == set(nics), _tail(text)  # the virtio NIC, and only it, got an address
    assert all(a.ip in QEMU_USER_NET for a in addresses.values()), addresses

    # preparing is idempotent: a dry run over the prepared disk decides nothing more
    again = prepare_disks([DiskSource(path=str(debian_image))], target="qemu", apply=False)
    assert not again.changes, [(c.code, c.where, c.reason) for c in again.changes]
