"""Linux decisions and kernel command-line edits on hand-built facts (pure: no appliance)."""

from __future__ import annotations

from node_runtime.prep.decide.cmdline import add_serial_console, cmdlines, edit_cmdlines, replace_root
from node_runtime.prep.decide.linux import (
    IFUPDOWN_FILE,
    NETPLAN_DHCP,
    NETPLAN_FILE,
    decide_linux,
    ifupdown_dhcp,
)
from node_runtime.prep.models import BootEntryFile, FstabEntry, KernelFacts, LinuxFacts
from node_runtime.prep.targets import needs

UUID = "0b7f2a53-1c55-4f3e-9d4e-7e1a2c3b4d5e"


def _facts(**over: object) -> LinuxFacts:
    base = LinuxFacts(
        distro="debian", family="debian", version="12.5", product="Debian 12", root_device="/dev/sda1",
        root_uuid=UUID, initramfs_tool="update-initramfs", initramfs_modules_policy="most",
        kernels=[KernelFacts(version="6.1.0", initramfs="/boot/initrd.img-6.1.0",
                             initramfs_modules=["ata_piix", "sd_mod", "virtio_blk"], builtin=["virtio_pci"],
                             available=["virtio_blk", "virtio_net", "nvme", "ena", "hv_vmbus", "hv_storvsc",
                                        "hv_netvsc"])],
        fstab=[FstabEntry(spec=f"UUID={UUID}", mountpoint="/", fstype="ext4", uuid=UUID)],
        fstab_text=f"UUID={UUID} / ext4 defaults 0 1\n",
        boot_files=[BootEntryFile(path="/boot/grub/grub.cfg",
                                  text=f"\tlinux /vmlinuz root=UUID={UUID} ro console=ttyS0,115200\n")],
        network_stack=["ifupdown"], network_files={IFUPDOWN_FILE: ifupdown_dhcp(needs("qemu")),
                       "/etc/network/interfaces": "source /etc/network/interfaces.d/*\n"},
    )  # fmt: skip
    return base.model_copy(update=over)


def test_a_prepared_guest_decides_nothing() -> None:
    findings, changes = decide_linux(_facts(), "qemu")
    assert changes == [] and [f.severity for f in findings] == []


def test_a_builtin_driver_needs_no_rebuild_and_a_missing_one_is_an_error() -> None:
    kernel = (
        _facts()
        .kernels[0]
        .model_copy(update={"initramfs_modules": ["sd_mod"], "builtin": ["nvme", "virtio_pci"]})
    )
    _, changes = decide_linux(_facts(kernels=[kernel]), "aws")
    assert [c.code for c in changes if c.code == "linux.initramfs_drivers"] == []  # nvme is built in
    bare = kernel.model_copy(update={"builtin": [], "available": ["virtio_blk"]})
    findings, changes = decide_linux(_facts(kernels=[bare]), "azure")
    errors = [f for f in findings if f.severity == "error"]
    assert [f.code for f in errors] == ["driver_not_in_kernel"]  # one per kernel, naming every bus
    assert "no hv_vmbus, hv_storvsc driver" in errors[0].message and not any(
        c.kind == "command" for c in changes
    )


def test_dracut_guests_rebuild_with_dracut_and_list_the_drivers_in_a_conf_file() -> None:
    kernel = (
        _facts()
        .kernels[0]
        .model_copy(update={"initramfs": "/boot/initramfs-5.14.img", "initramfs_modules": []})
    )
    _, changes = decide_linux(_facts(family="rhel", initramfs_tool="dracut", kernels=[kernel]), "qemu")
    config, rebuild = [c for c in changes if c.code == "linux.initramfs_drivers"]
    assert config.where == "/etc/dracut.conf.d/90-lifeboat.conf" and "virtio_blk" in (config.content or "")
    assert rebuild.argv == ["dracut", "-f", "/boot/initramfs-5.14.img", "6.1.0"]


def test_each_target_gets_dhcp_stanzas_for_its_nic_names_and_netplan_any_ethernet() -> None:
    _, changes = decide_linux(_facts(), "aws")  # the file was written for qemu's names
    (dhcp,) = [c for c in changes if c.code == "linux.network_dhcp"]
    assert "allow-hotplug ens5\niface ens5 inet dhcp" in (dhcp.content or "") and "ens3" not in (
        dhcp.content or ""
    )
    netplan = _facts(
        network_stack=["netplan"], network_files={"/etc/netplan/50-cloud.yaml": "match:\n macaddress: x"}
    )
    findings, changes = decide_linux(netplan, "azure")
    assert [(c.where, c.content) for c in changes if c.code == "linux.network_dhcp"] == [
        (NETPLAN_FILE, NETPLAN_DHCP)
    ]
    assert "netplan_mac_match" in {f.code for f in findings}
    assert {"cloud-init", "waagent"} == {f.message.split()[0] for f in findings if f.code == "agent_missing"}


def test_command_line_edits_per_loader() -> None:
    grub = "menuentry 'x' {\n\tlinux\t/vmlinuz-6 root=/dev/sda2 ro quiet\n\tinitrd /initrd\n}\n"
    edited = edit_cmdlines("/boot/grub/grub.cfg", grub, replace_root(UUID))
    assert f"\tlinux\t/vmlinuz-6 root=UUID={UUID} ro quiet\n" in edited
    ext = "LABEL linux\n  KERNEL /vmlinuz\n  APPEND root=/dev/vda1 ro\n"
    assert cmdlines("/boot/extlinux/extlinux.conf", ext) == ["root=/dev/vda1 ro"]
    assert "APPEND root=/dev/vda1 ro console=tty0 console=ttyS0,115200" in edit_cmdlines(
        "/boot/extlinux/extlinux.conf", ext, add_serial_console)  # fmt: skip
    default = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n'
    assert edit_cmdlines("/etc/default/grub", default, add_serial_console) == (
        'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200"\n')  # fmt: skip
    env = "# GRUB Environment Block\nkernelopts=root=/dev/nvme0n1p2 ro\n"
    env += "#" * (1024 - len(env))
    new = edit_cmdlines("/boot/grub2/grubenv", env, replace_root(UUID))
    assert len(new.encode()) == 1024 and f"kernelopts=root=UUID={UUID} ro\n" in new
    assert add_serial_console("ro console=ttyS1,9600") == "ro console=ttyS1,9600"  # a serial console is kept
    assert replace_root(UUID)("root=/dev/mapper/vg-root ro") == "root=/dev/mapper/vg-root ro"  # LVM stays


def test_fstab_bus_names_become_uuids_and_lvm_or_unresolved_names_do_not() -> None:
    fstab = [FstabEntry(spec="/dev/xvda1", mountpoint="/", fstype="ext4", uuid=UUID),
             FstabEntry(spec="/dev/mapper/vg-data", mountpoint="/data", fstype="xfs", uuid="u2"),
             FstabEntry(spec="/dev/sdc1", mountpoint="/old", fstype="ext4", uuid=None)]  # fmt: skip
    text = "/dev/xvda1 / ext4 defaults 0 1\n/dev/mapper/vg-data /data xfs defaults 0 0\n/dev/sdc1 /old ext4 0 0\n"
    findings, changes = decide_linux(_facts(fstab=fstab, fstab_text=text), "qemu")
    (change,) = [c for c in changes if c.code == "linux.fstab_by_uuid"]
    assert change.content == text.replace("/dev/xvda1", f"UUID={UUID}")
    assert "fstab_device_unresolved" in {f.code for f in findings}
