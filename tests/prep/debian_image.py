"""A real minimal Debian on a disk image, for proving that guest preparation makes it boot.

The image is built as a machine migrated from VMware would look: its initramfs has only the
IDE/SATA drivers (built with ``MODULES=list``: ``ata_piix ata_generic sd_mod ext4``, no virtio;
``initramfs.conf`` then says ``MODULES=dep`` again, as on the source), its
root is named by the old device name ``/dev/sda1`` (in ``/etc/fstab`` and on extlinux's
kernel line) and its only network stanza is for VMware's ``ens192``. It boots under QEMU
on an IDE disk and fails on a virtio-blk disk (``ALERT! /dev/sda1 does not exist``) until
it is prepared.

On boot, ``lifeboat-marker.service`` writes to the serial port::

    LIFEBOAT-BOOT-OK
    LIFEBOAT-ROOT /dev/vda1
    LIFEBOAT-NET lo 127.0.0.1/8
    LIFEBOAT-NET ens3 10.0.2.15/24
    LIFEBOAT-NIC ens3 virtio_net
    LIFEBOAT-END

(the NET lines after waiting up to :data:`NET_WAIT_S` seconds for a global IPv4 address
while a DHCP client runs),
then powers the machine off, so QEMU (``-no-reboot``) exits.

Needs Debian ``mmdebstrap`` (and network access to the Debian mirror apt uses here),
``e2fsprogs`` (``mkfs.ext4 -d``), ``fdisk`` (sfdisk), ``syslinux-common`` (mbr.bin),
``extlinux`` + ``libguestfs-tools`` (guestfish installs extlinux into the image) and
``qemu-system-x86``. Timings on a 2-core machine: root 25-80 s (mirror speed), image 20-35 s, a boot to
the marker 1-2 min under TCG.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

MiB = 1 << 20
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "ifupdown",
    "isc-dhcp-client",
    "kmod",
    "iproute2",
)
#: the drivers a VMware/IDE machine's initramfs carries: no virtio
INITRAMFS_MODULES = ("ata_piix", "ata_generic", "sd_mod", "ext4")
#: the device name the image's root has on its original (IDE/SCSI) platform
OLD_ROOT = "/dev/sda1"
HOSTNAME = "lifeboat-debian"
NET_WAIT_S = 60
NET_SETTLE_S = 8

BOOT_MARKER = "LIFEBOAT-BOOT-OK"
END_MARKER = "LIFEBOAT-END"
#: serial text meaning the boot failed for good (the initramfs dropped to a shell, a panic)
FAILURE = re.compile(r"ALERT! |Kernel panic|Gave up waiting for root")

GUESTFS_ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}

FSTAB = f"""\
# <file system> <mount point> <type> <options> <dump> <pass>
{OLD_ROOT} / ext4 errors=remount-ro 0 1
"""

INTERFACES = """\
# interfaces(5) file used by ifup(8) and ifdown(8)
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

# the VMware vmxnet3 NIC of the source machine
allow-hotplug ens192
iface ens192 inet dhcp
"""

MARKER_UNIT = """\
[Unit]
Description=Lifeboat boot marker: report root and IPv4 addresses on ttyS0, then power off
After=network-online.target networking.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lifeboat-marker

[Install]
WantedBy=multi-user.target
"""

MARKER_SCRIPT = f"""\
#!/bin/sh
# Lifeboat boot-proof marker (tests/prep/debian_image.py)
out=/dev/ttyS0
echo "{BOOT_MARKER}" > $out
echo "LIFEBOAT-ROOT $(findmnt -n -o SOURCE /)" > $out
# wait for a global IPv4 address while DHCP is at work (or for the first {NET_SETTLE_S} s)
configuring() {{ grep -qsxE 'dhclient|ifup|systemd-network' /proc/[0-9]*/comm; }}
i=0
while [ $i -lt {NET_WAIT_S} ] && ! ip -4 -o addr show scope global | grep -q inet; do
    [ $i -ge {NET_SETTLE_S} ] && ! configuring && break
    sleep 1
    i=$((i + 1))
done
ip -4 -o addr show | while read -r _ iface _ addr _; do
    echo "LIFEBOAT-NET $iface $addr" > $out
done
for dev in /sys/class/net/*; do
    [ -e "$dev/device/driver" ] || continue
    echo "LIFEBOAT-NIC ${{dev##*/}} $(basename "$(readlink "$dev/device/driver")")" > $out
done
echo "{END_MARKER}" > $out
systemctl --no-block poweroff
"""


class MissingToolError(RuntimeError):
    pass


def need_tools() -> None:
    """Raise MissingToolError naming the Debian packages of the tools that are missing."""
    tools = {
        "mmdebstrap": "mmdebstrap",
        "mkfs.ext4": "e2fsprogs",
        "sfdisk": "fdisk",
        "guestfish": "libguestfs-tools",
        "extlinux": "extlinux",
        "qemu-system-x86_64": "qemu-system-x86",
    }
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    if not Path("/usr/lib/syslinux/mbr/mbr.bin").exists():
        missing.append("syslinux-common")
    if missing:
        raise MissingToolError(f"apt-get install {' '.join(missing)} (needed to build the Debian test image)")


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (``/etc/apt/sources.list*``), else deb.debian.org."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for file in files:
        try:
            text = file.read_text()
        except OSError:
            continue
        if file.suffix == ".sources":  # deb822: URIs: … / Suites: …
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if SUITE in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                    return fields["URIs"].split()[0]
        else:  # one-line: deb [opts] URI SUITE COMPONENTS
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and m.group(2) == SUITE:
                    return m.group(1)
    return DEFAULT_MIRROR


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} failed ({proc.returncode}): {proc.stderr[-3000:] or proc.stdout[-3000:]}"
        )
    return proc.stdout


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def build_debian_root(dest_dir: Path) -> Path:
    """A configured Debian bookworm root in ``dest_dir/root`` (mmdebstrap, ~40 s, ~410 MB).

    ``MODULES=dep`` cannot work inside the build chroot (there is no root device to look
    at), so the build runs with ``MODULES=list`` from an initramfs-tools conf.d snippet and
    regenerates the initramfs with only :data:`INITRAMFS_MODULES`. The finished root says
    ``MODULES=dep`` in initramfs.conf (the snippet is removed), as a VM trimmed to its own
    hardware would: update-initramfs works with ``dep`` in the libguestfs appliance (it
    looks at the appliance's root device), so preparation has to add the virtio drivers
    to /etc/initramfs-tools/modules rather than rely on the policy.
    """
    need_tools()
    root = Path(dest_dir) / "root"
    conf_d = "$1/etc/initramfs-tools/conf.d/lifeboat-build"
    essential = f'mkdir -p "$1/etc/initramfs-tools/conf.d" && echo MODULES=list > "{conf_d}"'
    _run(
        [
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            f"--essential-hook={essential}",
            SUITE,
            str(root),
            debian_mirror(),
        ],
        timeout=900,
    )
    _write(root / "etc/hostname", HOSTNAME + "\n")
    _write(root / "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n")
    _write(root / "etc/fstab", FSTAB)
    _write(root / "etc/network/interfaces", INTERFACES)
    _write(root / "etc/systemd/system/lifeboat-marker.service", MARKER_UNIT)
    _write(root / "usr/local/sbin/lifeboat-marker", MARKER_SCRIPT, 0o755)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "lifeboat-marker.service").symlink_to("/etc/systemd/system/lifeboat-marker.service")
    _write(root / "etc/initramfs-tools/modules", "".join(m + "\n" for m in INITRAMFS_MODULES))
    _run(["chroot", str(root), "update-initramfs", "-u", "-k", "all"], timeout=600)
    conf = root / "etc/initramfs-tools/initramfs.conf"
    conf.write_text(re.sub(r"^MODULES=.*$", "MODULES=dep", conf.read_text(), flags=re.M))
    (root / "etc/initramfs-tools/conf.d/lifeboat-build").unlink()
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (root / cache).glob("*"):
            if item.is_file():
                item.unlink()
    return root


def kernel_version(root_dir: Path) -> str:
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (Path(root_dir) / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise RuntimeError(f"no kernel in {root_dir}/boot")
    return kernels[-1]


def initramfs_modules(root_dir: Path) -> set[str]:
    """Module names (``virtio_blk``) in the root's initramfs, listed with ``lsinitramfs``."""
    initrd = Path(root_dir) / "boot" / f"initrd.img-{kernel_version(root_dir)}"
    listing = _run(["chroot", str(root_dir), "lsinitramfs", f"/boot/{initrd.name}"])
    return {
        Path(line).name.split(".ko")[0].replace("-", "_") for line in listing.splitlines() if ".ko" in line
    }


def extlinux_conf(version: str) -> str:
    return (
        "DEFAULT linux\n"
        "TIMEOUT 1\n"
        "LABEL linux\n"
        f"  KERNEL /boot/vmlinuz-{version}\n"
        f"  APPEND root={OLD_ROOT} ro console=ttyS0,115200\n"
        f"  INITRD /boot/initrd.img-{version}\n"
    )


def make_disk(root_dir: Path, image_path: Path, size: str = "2G") -> Path:
    """A raw MBR disk: one bootable ext4 partition at 1 MiB holding ``root_dir``, extlinux.

    The file system is made from the directory by ``mkfs.ext4 -d`` (no mounts), the syslinux
    MBR code written into the first 440 bytes, and extlinux installed into /boot/extlinux by
    guestfish (one libguestfs appliance launch, ~15 s). ``root_dir``'s
    /boot/extlinux/extlinux.conf is (re)written.
    """
    need_tools()
    root_dir, image_path = Path(root_dir), Path(image_path)
    version = kernel_version(root_dir)
    _write(root_dir / "boot/extlinux/extlinux.conf", extlinux_conf(version))
    image_path.unlink(missing_ok=True)
    _run(["truncate", "-s", size, str(image_path)])
    subprocess.run(
        ["sfdisk", "--quiet", str(image_path)],
        input="label: dos\nstart=2048, type=83, bootable\n",
        text=True,
        check=True,
        capture_output=True,
    )
    part_bytes = image_path.stat().st_size - MiB
    part = image_path.with_name(image_path.name + ".part")
    try:
        _run(["truncate", "-s", str(part_bytes), str(part)])
        _run(["mkfs.ext4", "-q", "-F", "-L", "debroot", "-d", str(root_dir), str(part)], timeout=600)
        _run(["dd", f"if={part}", f"of={image_path}", "bs=4M", f"seek={MiB}", "oflag=seek_bytes",
              "conv=notrunc,sparse", "status=none"])  # fmt: skip
    finally:
        part.unlink(missing_ok=True)
    _run(["dd", "if=/usr/lib/syslinux/mbr/mbr.bin", f"of={image_path}", "bs=440", "count=1",
          "conv=notrunc", "status=none"])  # fmt: skip
    env = {k: os.environ.get(k, v) for k, v in GUESTFS_ENV.items()}
    _run(["guestfish", "-a", str(image_path), "-m", "/dev/sda1", "--", "extlinux", "/boot/extlinux"], env=env)
    return image_path


def boot(
    image: Path,
    *,
    disk_bus: str = "ide",
    nic: str = "e1000",
    timeout: float = 180,
    stop_on: str | None = None,
    log: Path | None = None,
) -> tuple[int | None, str]:
    """Boot ``image`` (never changed: ``snapshot=on``) under QEMU TCG; ``(exit code, serial text)``.

    Returns when QEMU exits (the marker service powers the guest off: exit 0), when the
    serial shows :data:`FAILURE` (the initramfs shell, a panic: QEMU is killed, exit None),
    when ``stop_on`` appears (killed, None) or after ``timeout`` seconds (killed, None).
    ``log`` receives the serial text as well.
    """
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-nographic", "-no-reboot",
        "-serial", "mon:stdio",
        "-drive", f"file={image},format=raw,if={disk_bus},snapshot=on",
        "-nic", f"user,model={nic}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = bytearray()
    deadline = time.monotonic() + timeout
    stopping = False  # a failure or stop_on was seen: read a little longer, then kill
    exited = False
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            data = os.read(proc.stdout.fileno(), 65536) if ready else b""
            if ready and not data:  # EOF: QEMU exited
                exited = True
                break
            out += data
            if not stopping and data:
                text = out.decode(errors="replace")
                if stop_on and stop_on in text:
                    break
                if FAILURE.search(text):  # let the initramfs print why, then stop
                    stopping = True
                    deadline = min(deadline, time.monotonic() + 3)
    finally:
        if not exited:
            proc.kill()
        code = proc.wait()
        out += proc.stdout.read()
        proc.stdout.close()
    text = out.decode(errors="replace").replace("\r\n", "\n")
    if log is not None:
        log.write_text(text)
    return (code if exited else None), text
