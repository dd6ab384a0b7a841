"""Synthetic Linux guests for preparation tests: real ext4/XFS images with a distro's layout.

Each image is built with one libguestfs launch (partition, mkfs, tar in a directory tree).
The trees carry what inspection and the checks read: os-release, fstab, kernels' module
lists, an initramfs (gzip newc cpio) with only IDE/SATA drivers, boot-loader files,
network configuration with MAC pinning, VMware tools enabled. They have no binaries, so
guest commands (initramfs rebuilds) fail on them; the mmdebstrap boot proof runs those.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import guestfs

DEBIAN_KERNEL = "6.1.0-18-amd64"
RHEL_KERNEL = "5.14.0-362.8.1.el9_3.x86_64"
ATA_ONLY = (
    "kernel/drivers/ata/ata_piix.ko",
    "kernel/drivers/ata/ata_generic.ko",
    "kernel/drivers/scsi/sd_mod.ko",
)
KERNEL_MODULES = (
    *ATA_ONLY,
    "kernel/drivers/block/virtio_blk.ko", "kernel/drivers/scsi/virtio_scsi.ko", "kernel/drivers/net/virtio_net.ko",
    "kernel/drivers/nvme/host/nvme.ko", "kernel/drivers/net/ethernet/amazon/ena/ena.ko",
    "kernel/drivers/hv/hv_vmbus.ko", "kernel/drivers/scsi/hv_storvsc.ko", "kernel/drivers/net/hyperv/hv_netvsc.ko",
)  # fmt: skip
BUILTIN = ("kernel/drivers/virtio/virtio_pci.ko", "kernel/fs/ext4/ext4.ko")


def newc_cpio(files: dict[str, bytes]) -> bytes:
    """A gzip-compressed newc cpio archive, as initramfs images are."""
    out = io.BytesIO()
    for ino, (name, data) in enumerate([*files.items(), ("TRAILER!!!", b"")], start=1):
        mode = 0o100644 if name != "TRAILER!!!" else 0
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        header = b"070701" + b"".join(f"{f:08X}".encode() for f in fields)
        out.write(header + name.encode() + b"\0")
        out.write(b"\0" * ((4 - out.tell() % 4) % 4))
        out.write(data)
        out.write(b"\0" * ((4 - out.tell() % 4) % 4))
    return gzip.compress(out.getvalue())


def _modules(kernel: str, suffix: str) -> dict[str, bytes]:
    dep = "".join(f"{m}{suffix}:\n" for m in KERNEL_MODULES).encode()
    return {f"lib/modules/{kernel}/modules.dep": dep,
            f"lib/modules/{kernel}/modules.builtin": "".join(f"{m}\n" for m in BUILTIN).encode()}  # fmt: skip


def _initrd(kernel: str, suffix: str, modules: tuple[str, ...] = ATA_ONLY) -> bytes:
    return newc_cpio(
        {f"usr/lib/modules/{kernel}/{m}{suffix}": b"\x7fELF" for m in modules} | {"init": b"#!/bin/sh\n"}
    )


def debian_tree(root_on: str = "/dev/sda1", initrd: tuple[str, ...] = ATA_ONLY) -> dict[str, bytes | str]:
    """A Debian 12 root: ifupdown, initramfs-tools with MODULES=dep, GRUB, open-vm-tools enabled.
    ``initrd`` lists the modules its initramfs holds (IDE/SATA only by default)."""
    k = DEBIAN_KERNEL
    return {
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n',
        "etc/debian_version": "12.5\n",
        "etc/hostname": "web01\n",
        "etc/fstab": f"# <file system> <mount point> <type> <options> <dump> <pass>\n{root_on} / ext4 errors=remount-ro 0 1\n"
                     "/dev/sda2 none swap sw 0 0\n",
        "bin/sh": b"", "usr/sbin/update-initramfs": b"", "sbin/ifup": b"",
        "usr/bin/vmtoolsd": b"", "usr/bin/cloud-init": b"",
        "etc/initramfs-tools/initramfs.conf": "MODULES=dep\nCOMPRESS=zstd\n",
        "etc/initramfs-tools/modules": "# List of modules\n",
        **_modules(k, ""),
        f"boot/vmlinuz-{k}": b"kernel", f"boot/initrd.img-{k}": _initrd(k, "", initrd),
        "etc/default/grub": 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n',
        "boot/grub/grub.cfg": f"menuentry 'Debian GNU/Linux' {{\n\tlinux\t/boot/vmlinuz-{k} root={root_on} ro  quiet\n"
                              f"\tinitrd\t/boot/initrd.img-{k}\n}}\n",
        "etc/network/interfaces": "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
                                  "auto ens192\niface ens192 inet static\n  address 10.0.0.5/24\n  gateway 10.0.0.1\n",
        "etc/udev/rules.d/70-persistent-net.rules":
            'SUBSYSTEM=="net", ACTION=="add", ATTR{address}=="00:50:56:aa:bb:cc", NAME="ens192"\n',
        "lib/systemd/system/open-vm-tools.service": "[Unit]\nDescription=open-vm-tools\n",
        "etc/systemd/system/multi-user.target.wants/open-vm-tools.service": "->/lib/systemd/system/open-vm-tools.service",
    }  # fmt: skip


def rhel_tree() -> dict[str, bytes | str]:
    """A Rocky Linux 9 root on XFS with /boot on ext4: dracut, BLS entries, grubenv, NetworkManager
    with ifcfg and keyfile connections pinned to a MAC."""
    k = RHEL_KERNEL
    grubenv = (
        f"# GRUB Environment Block\nsaved_entry=abc-{k}\nkernelopts=root=/dev/sda2 ro crashkernel=auto\n"
    )
    return {
        "etc/os-release": 'NAME="Rocky Linux"\nVERSION="9.3 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\n'
                          'VERSION_ID="9.3"\nPRETTY_NAME="Rocky Linux 9.3 (Blue Onyx)"\n',
        "etc/redhat-release": "Rocky Linux release 9.3 (Blue Onyx)\n",
        "etc/rocky-release": "Rocky Linux release 9.3 (Blue Onyx)\n",
        "etc/fstab": "/dev/sda2 / xfs defaults 0 0\n/dev/sda1 /boot ext4 defaults 1 2\n",
        "bin/sh": b"", "usr/bin/dracut": b"", "usr/sbin/NetworkManager": b"",
        **_modules(k, ".xz"),
        f"boot/vmlinuz-{k}": b"kernel", f"boot/initramfs-{k}.img": _initrd(k, ".xz"),
        f"boot/loader/entries/abc-{k}.conf": f"title Rocky Linux\nversion {k}\nlinux /vmlinuz-{k}\n"
                                             f"initrd /initramfs-{k}.img\noptions root=/dev/sda2 ro crashkernel=auto\n",
        "boot/grub2/grubenv": grubenv + "#" * (1024 - len(grubenv)),
        "etc/sysconfig/network-scripts/ifcfg-ens192": 'DEVICE=ens192\nBOOTPROTO=none\nIPADDR=10.0.0.6\nPREFIX=24\n'
                                                      'HWADDR=00:50:56:aa:bb:cd\nONBOOT=yes\n',
        "etc/NetworkManager/system-connections/ens192.nmconnection":
            "[connection]\nid=ens192\ntype=ethernet\n[ethernet]\nmac-address=00:50:56:AA:BB:CD\n[ipv4]\nmethod=auto\n",
    }  # fmt: skip


def _tar(tree: dict[str, bytes | str], prefix: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in sorted(tree.items()):
            if not name.startswith(prefix):
                continue
            rel = name[len(prefix) :]
            info = tarfile.TarInfo(rel)
            if isinstance(data, str) and data.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                tar.addfile(info)
                continue
            raw = data.encode() if isinstance(data, str) else data
            info.size, info.mode = len(raw), 0o755 if rel.startswith(("bin/", "sbin/", "usr/")) else 0o644
            tar.addfile(info, io.BytesIO(raw))
    return out.getvalue()


def build_image(path: Path, tree: dict[str, bytes | str], layout: list[tuple[str, str, int]]) -> Path:
    """Write a raw MBR image: ``layout`` is (file system, tree prefix, MiB) per partition, in order
    (file system ``swap`` gets mkswap; prefix ``""`` is the root). One appliance launch."""
    size = (sum(mib for _, _, mib in layout) + 2) * 1024 * 1024
    with open(path, "wb") as f:
        f.truncate(size)
    g = guestfs.GuestFS(python_return_dict=True)
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    g.add_drive_opts(str(path), format="raw")
    g.launch()
    try:
        g.part_init("/dev/sda", "mbr")
        start = 2048
        for _fs, _prefix, mib in layout:
            end = start + mib * 2048 - 1
            g.part_add("/dev/sda", "p", start, end)
            start = end + 1
        g.part_set_bootable("/dev/sda", 1, True)
        mounts = []
        for n, (fs, prefix, _mib) in enumerate(layout, start=1):
            dev = f"/dev/sda{n}"
            if fs == "swap":
                g.mkswap(dev)
            else:
                g.mkfs(fs, dev)
                mounts.append((prefix, dev))
        for prefix, dev in sorted(mounts, key=lambda m: len(m[0])):
            point = "/" + prefix.rstrip("/")
            if point != "/":
                g.mkdir_p(point)
            g.mount(dev, point)
        for prefix, _dev in sorted(mounts, key=lambda m: -len(m[0])):
            data = _tar(tree, prefix)
            # the root's tar must not repeat what a deeper mount holds
            if prefix == "":
                deeper = [p for p, _ in mounts if p]
                data = _tar({k: v for k, v in tree.items() if not any(k.startswith(d) for d in deeper)}, "")
            local = path.with_suffix(f".{len(prefix)}.tar")
            local.write_bytes(data)
            g.tar_in(str(local), "/" + prefix.rstrip("/"))
            local.unlink()
        g.umount_all()
        g.sync()
        g.shutdown()
    finally:
        g.close()
    return path


def debian_image(path: Path, initrd: tuple[str, ...] = ATA_ONLY) -> Path:
    return build_image(path, debian_tree(initrd=initrd), [("ext4", "", 96), ("swap", "", 16)])


def rhel_image(path: Path) -> Path:
    """/boot (ext4, sda1) holds the tree's boot/ files at its top; / is XFS (sda2)."""
    return build_image(path, rhel_tree(), [("ext4", "boot/", 64), ("xfs", "", 320)])


def _crc32c(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """CRC-32C without the final inversion, as ext4 stores its superblock checksum."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc


def set_unknown_ext4_feature(image: Path, partition_offset: int = 1 << 20) -> None:
    """Damage an ext4 file system the way the kernel refuses to mount (an incompatible feature
    it does not know) while blkid still names it ext4: the superblock checksum stays valid."""
    at = partition_offset + 1024
    with open(image, "r+b") as f:
        f.seek(at)
        sb = bytearray(f.read(1024))
        incompat = int.from_bytes(sb[0x60:0x64], "little") | 0x10000000
        sb[0x60:0x64] = incompat.to_bytes(4, "little")
        sb[0x3FC:0x400] = _crc32c(bytes(sb[:0x3FC])).to_bytes(4, "little")
        f.seek(at)
        f.write(sb)
