"""Linux guest preparation on real ext4/XFS images through libguestfs (marker ``prep``).

The images (tests/prep/linux_images.py) carry a Debian 12 and a Rocky Linux 9 layout with
the classic cross-platform problems: an initramfs with IDE/SATA drivers only, fstab and
root= by /dev/sdX, no serial console, a static config for the source's NIC name, MAC
pinning, open-vm-tools enabled. Each image is built once per module; tests that change an
image work on their own copy. The real initramfs rebuild and boot are in test_boot_proof.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from node_runtime.prep.guest import DiskSource, open_guest
from node_runtime.prep.run import prepare_disks
from tests.prep.linux_images import ATA_ONLY, debian_image, rhel_image, set_unknown_ext4_feature

pytestmark = pytest.mark.prep
VIRTIO_INITRD = (*ATA_ONLY, "kernel/drivers/block/virtio_blk.ko")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("linux-images")
    return {
        "debian": debian_image(d / "debian.img"),
        "debian-virtio": debian_image(d / "debian-virtio.img", initrd=VIRTIO_INITRD),
        "rhel": rhel_image(d / "rhel.img"),
    }


@pytest.fixture
def copy(images: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str) -> Path:
        return Path(shutil.copy(images[name], tmp_path / f"{name}.img"))

    return make


def _codes(result) -> dict[str, list]:  # type: ignore[no-untyped-def]
    out: dict[str, list] = {}
    for c in result.changes:
        out.setdefault(c.code, []).append(c)
    return out


def test_debian_dry_run_lists_every_change_and_writes_nothing(images: dict[str, Path]) -> None:
    before = _sha(images["debian"])
    result = prepare_disks([DiskSource(path=str(images["debian"]))], target="qemu", apply=False)
    assert _sha(images["debian"]) == before
    assert not result.applied and not result.refused
    facts = result.facts.linux
    assert facts is not None and facts.family == "debian" and facts.initramfs_tool == "update-initramfs"
    assert facts.kernels[0].initramfs_modules == ["ata_generic", "ata_piix", "sd_mod"]
    assert facts.initramfs_modules_policy == "dep"
    changes = _codes(result)
    assert all(c.status == "planned" for c in result.changes)
    config, rebuild = changes["linux.initramfs_drivers"]
    assert config.where == "/etc/initramfs-tools/modules" and "virtio_blk" in (config.content or "")
    assert rebuild.argv == ["update-initramfs", "-u", "-k", "6.1.0-18-amd64"]
    (fstab,) = changes["linux.fstab_by_uuid"]
    assert "/dev/sda1" not in (fstab.content or "") and f"UUID={facts.root_uuid} / ext4" in (
        fstab.content or ""
    )
    assert fstab.before == "/dev/sda1, /dev/sda2"  # swap too
    (root,) = changes["linux.boot_root_by_uuid"]
    assert root.where == "/boot/grub/grub.cfg" and f"root=UUID={facts.root_uuid} ro" in (root.content or "")
    consoles = {c.where: c.content for c in changes["linux.serial_console"]}
    assert (
        'GRUB_CMDLINE_LINUX=" console=tty0 console=ttyS0,115200"' not in consoles["/etc/default/grub"]
    )  # no stray space
    assert 'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"' in consoles["/etc/default/grub"]
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in consoles["/etc/default/grub"]
    assert "console=ttyS0,115200" in consoles["/boot/grub/grub.cfg"] and f"root=UUID={facts.root_uuid}" in consoles[
        "/boot/grub/grub.cfg"]  # fmt: skip
    (dhcp,) = changes["linux.network_dhcp"]
    assert dhcp.where == "/etc/network/interfaces.d/lifeboat" and "inet dhcp" in (dhcp.content or "")
    assert [c.where for c in changes["linux.network_mac_unpinned"]] == [
        "/etc/udev/rules.d/70-persistent-net.rules"
    ]
    assert [c.where for c in changes["linux.vmware_tools_disabled"]] == [
        "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service"]  # fmt: skip


def test_rhel_on_xfs_uses_dracut_bls_and_grubenv(images: dict[str, Path]) -> None:
    result = prepare_disks([DiskSource(path=str(images["rhel"]))], target="azure", apply=False)
    facts = result.facts.linux
    assert facts is not None and (facts.distro, facts.family, facts.version) == ("rocky", "rhel", "9.3")
    assert facts.initramfs_tool == "dracut" and [e.mountpoint for e in facts.fstab] == ["/", "/boot"]
    changes = _codes(result)
    config, rebuild = changes["linux.initramfs_drivers"]
    assert config.where == "/etc/dracut.conf.d/90-lifeboat.conf"
    assert 'add_drivers+=" hv_storvsc hv_vmbus "' in (config.content or "")
    assert rebuild.argv[:2] == ["dracut", "-f"]
    grubenv = next(c for c in changes["linux.serial_console"] if c.where == "/boot/grub2/grubenv")
    assert len((grubenv.content or "").encode()) == 1024  # the environment block keeps its size
    assert f"kernelopts=root=UUID={facts.root_uuid} ro crashkernel=auto console=tty0" in (
        grubenv.content or ""
    )
    bls = next(c for c in changes["linux.boot_root_by_uuid"] if "/loader/entries/" in c.where)
    assert bls.where.startswith("/boot/loader/entries/")
    pinned = {c.where: c for c in changes["linux.network_mac_unpinned"]}
    ifcfg = pinned["/etc/sysconfig/network-scripts/ifcfg-ens192"]
    assert ifcfg.before == "HWADDR=00:50:56:aa:bb:cd" and "HWADDR" not in (ifcfg.content or "")
    assert "IPADDR=10.0.0.6" in (ifcfg.content or "")
    nm = pinned["/etc/NetworkManager/system-connections/ens192.nmconnection"]
    assert "mac-address" not in (nm.content or "") and "method=auto" in (nm.content or "")
    missing = {f.message.split(" is not installed")[0] for f in result.findings if f.code == "agent_missing"}
    assert missing == {"cloud-init", "waagent"}


def test_apply_changes_the_guest_and_a_second_run_changes_nothing(copy: Callable[[str], Path]) -> None:
    image = copy("debian-virtio")  # its initramfs already has virtio_blk: no rebuild (no binaries here)
    first = prepare_disks([DiskSource(path=str(image))], target="qemu", apply=True)
    assert first.applied and {c.status for c in first.changes} == {"applied"}, [
        (c.code, c.error) for c in first.changes if c.status != "applied"]  # fmt: skip
    assert "linux.initramfs_drivers" not in _codes(first)
    with open_guest([DiskSource(path=str(image))], readonly=True) as guest:
        (root,) = guest.roots()
        guest.mount_root(root, writable=False)
        uuid = first.facts.linux.root_uuid  # type: ignore[union-attr]
        assert f"UUID={uuid} / ext4" in guest.read_text("/etc/fstab")
        grub = guest.read_text("/boot/grub/grub.cfg")
        assert f"root=UUID={uuid} ro  quiet console=tty0 console=ttyS0,115200" in grub  # spacing kept
        assert "inet dhcp" in guest.read_text("/etc/network/interfaces.d/lifeboat")
        assert not guest.exists("/etc/udev/rules.d/70-persistent-net.rules")
        assert not guest.exists("/etc/systemd/system/multi-user.target.wants/open-vm-tools.service")
        assert guest.exists("/lib/systemd/system/open-vm-tools.service")  # disabled, not removed
    digest = _sha(image)
    second = prepare_disks([DiskSource(path=str(image))], target="qemu", apply=True)
    assert second.changes == [] and not second.applied
    assert _sha(image) == digest


def test_a_failed_rebuild_is_reported_and_the_other_changes_still_apply(copy: Callable[[str], Path]) -> None:
    image = copy("debian")  # update-initramfs is an empty file here: the guest command fails
    result = prepare_disks([DiskSource(path=str(image))], target="qemu", apply=True)
    statuses = {(c.code, c.kind): c for c in result.changes}
    failed = statuses[("linux.initramfs_drivers", "command")]
    assert failed.status == "failed" and "update-initramfs" in (failed.error or "")
    assert statuses[("linux.fstab_by_uuid", "write_file")].status == "applied"
    assert statuses[("linux.initramfs_drivers", "write_file")].status == "applied"


def test_corrupt_root_file_system_is_refused_and_left_unchanged(
    images: dict[str, Path], tmp_path: Path
) -> None:
    image = Path(shutil.copy(images["debian"], tmp_path / "corrupt.img"))
    set_unknown_ext4_feature(image)  # still ext4 to blkid, refused by the kernel
    digest = _sha(image)
    result = prepare_disks([DiskSource(path=str(image))], target="qemu", apply=True)
    assert result.refused and not result.applied and result.changes == []
    codes = {f.code: f for f in result.findings}
    assert "filesystem_unreadable" in codes and "os_not_found" in codes
    assert "/dev/sda1 is an ext4 file system that does not mount" in codes["filesystem_unreadable"].message
    assert _sha(image) == digest


def test_cli_inspect_and_apply_are_dry_runs_unless_write(
    images: dict[str, Path], copy: Callable[[str], Path]
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    image = copy("debian-virtio")
    digest = _sha(image)
    dry = runner.invoke(app, ["prep", "apply", str(image), "--target", "qemu", "--json"])
    assert dry.exit_code == 0, dry.output
    planned = json.loads(dry.output)
    assert {c["status"] for c in planned["changes"]} == {"planned"} and not planned["applied"]
    assert _sha(image) == digest  # a dry run writes nothing
    wrote = runner.invoke(app, ["prep", "apply", str(image), "-t", "qemu", "--write"])
    assert wrote.exit_code == 0, wrote.output
    assert "linux.fstab_by_uuid" in wrote.output and "applied" in wrote.output
    again = runner.invoke(app, ["prep", "inspect", str(image), "-t", "qemu"])
    assert again.exit_code == 0 and "nothing to change" in again.output
    bad = runner.invoke(app, ["prep", "inspect", str(image), "-t", "vmware"])
    assert bad.exit_code != 0 and "--target must be one of qemu, aws, azure" in str(
        bad.exception or bad.output
    )
    missing = runner.invoke(app, ["prep", "inspect", str(image.with_name("nope.img")), "-t", "qemu"])
    assert missing.exit_code != 0 and "no such disk" in str(missing.exception or missing.output)
