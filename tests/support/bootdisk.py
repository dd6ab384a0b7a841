"""A tiny BIOS-bootable raw disk for recovery boot tests, built without mounts or root.

Layout: an MBR (syslinux ``mbr.bin`` + one bootable FAT16 partition at LBA 2048) whose
partition holds syslinux, a Debian kernel and a busybox initramfs. The initramfs
``/init`` prints ``BOOT-OK <marker> kernel=... uptime=...`` on the serial console
(ttyS0) and powers the machine off; under ``qemu -accel tcg`` that takes ~6 s. A disk
built with ``stay=True`` (``bootstay=1`` on the kernel command line) prints the same
line and then, instead of powering off, a ``HEARTBEAT <marker> uptime=...`` line every
:data:`HEARTBEAT_SECONDS` seconds until it is stopped, like a recovered server would.

The marker is on the kernel command line (``bootmarker=<marker>`` in
``/syslinux.cfg``), so two disks are told apart by their marker; :func:`copy_with_marker`
makes a second disk by rewriting only that file (keeping the source's ``stay``), and
:func:`disk_marker` / :func:`disk_stays` read them back.

Everything comes from Debian packages (see :data:`TOOLS`): the kernel is the one the
``linux-image-amd64`` metapackage currently depends on, fetched once with
``apt-get download`` and extracted with ``dpkg-deb`` into ``$LIFEBOAT_KERNEL_CACHE``
(default ``~/.cache/lifeboat-kernel``); ``$LIFEBOAT_KERNEL`` names a kernel file to
use instead. The initramfs is written as a ``newc`` cpio by this module (which can
declare ``/dev/console`` without ``mknod``), so ``cpio`` itself is not needed.

    python -m tests.support.bootdisk OUT.img --marker abc [--size-mib 64] [--stay]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path

MiB = 1 << 20
PART_START = 1 * MiB  # LBA 2048
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")
BUSYBOX = Path("/bin/busybox")
KERNEL_METAPACKAGE = "linux-image-amd64"
MIN_SIZE_MIB = 16
MARKER_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
HEARTBEAT_SECONDS = 3

#: tool -> Debian package providing it
TOOLS = {
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "mtype": "mtools",
    "syslinux": "syslinux",
    "sfdisk": "fdisk",
    "apt-cache": "apt",
    "apt-get": "apt",
    "dpkg-deb": "dpkg",
}

INIT_SCRIPT = f"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
M=
S=
for w in $(cat /proc/cmdline); do
  case $w in bootmarker=*) M=${{w#bootmarker=}};; bootstay=1) S=1;; esac
done
echo "BOOT-OK $M kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/console
case $S in 1) while :; do
  sleep {HEARTBEAT_SECONDS}
  echo "HEARTBEAT $M uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/console
done;; esac
poweroff -f
"""

APPLETS = ("sh", "mount", "cat", "cut", "echo", "poweroff", "uname", "sleep")


class BootDiskError(RuntimeError):
    """The boot disk could not be built."""


class KernelUnavailableError(BootDiskError):
    """No kernel could be found or fetched (no apt lists, no network, no cache)."""


class MissingToolError(BootDiskError):
    """A tool (or file) from a Debian package is absent; ``package`` names the package."""

    def __init__(self, what: str, package: str) -> None:
        super().__init__(
            f"{what} not found: install the Debian package {package!r} (apt-get install {package})"
        )
        self.what = what
        self.package = package


def boot_line(marker: str) -> str:
    """The serial-console text that proves a disk with ``marker`` booted (match as a substring)."""
    return f"BOOT-OK {marker} "


# --- tools ---------------------------------------------------------------------------------------
def _tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/sbin") if os.access(p := f"{d}/{name}", os.X_OK)), None
    )
    if not found:
        raise MissingToolError(name, TOOLS[name])
    return found


def _run(args: list[str], *, input: bytes | None = None, cwd: Path | None = None) -> bytes:
    args = [_tool(args[0]), *args[1:]]
    proc = subprocess.run(args, input=input, cwd=cwd, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
        raise BootDiskError(f"{' '.join(args)} failed (exit {proc.returncode}): {err}")
    return proc.stdout


def check_tools(*, need_kernel_download: bool = False) -> None:
    """Raise :class:`MissingToolError` for the first absent tool or file."""
    for name in ("mkfs.fat", "mcopy", "mtype", "syslinux", "sfdisk"):
        _tool(name)
    if not MBR_BIN.is_file():
        raise MissingToolError(str(MBR_BIN), "syslinux-common")
    _static_busybox()
    if need_kernel_download:
        for name in ("apt-cache", "apt-get", "dpkg-deb"):
            _tool(name)


def _static_busybox() -> Path:
    """``/bin/busybox`` if it is statically linked (Debian ``busybox-static``)."""
    if not BUSYBOX.is_file():
        raise MissingToolError(str(BUSYBOX), "busybox-static")
    with open(BUSYBOX, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            raise BootDiskError(f"{BUSYBOX} is not a 64-bit little-endian ELF executable")
        phoff = struct.unpack_from("<Q", head, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    if any(struct.unpack_from("<I", table, i * phentsize)[0] == 3 for i in range(phnum)):  # PT_INTERP
        raise MissingToolError(f"a statically linked {BUSYBOX} (found a dynamic one)", "busybox-static")
    return BUSYBOX


# --- kernel --------------------------------------------------------------------------------------
def kernel_cache_dir() -> Path:
    configured = os.environ.get("LIFEBOAT_KERNEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "lifeboat-kernel"


def _kernel_package() -> str | None:
    """The ``linux-image-*`` package ``linux-image-amd64`` depends on, or None if apt does not know."""
    try:
        out = _run(["apt-cache", "depends", KERNEL_METAPACKAGE]).decode()
    except BootDiskError:
        return None
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m:
            return m.group(1)
    return None


def ensure_kernel() -> Path:
    """Path of a bootable x86-64 kernel, downloading and extracting it once if needed.

    ``$LIFEBOAT_KERNEL`` wins. Otherwise the kernel of the current ``linux-image-amd64``
    dependency is taken from the cache, fetched into it when missing. When apt cannot
    resolve the dependency (no package lists), any cached kernel is reused.
    """
    configured = os.environ.get("LIFEBOAT_KERNEL")
    if configured:
        if not Path(configured).is_file():
            raise BootDiskError(f"LIFEBOAT_KERNEL={configured!r} is not a file")
        return Path(configured)
    cache = kernel_cache_dir()
    package = _kernel_package()
    if package is None:
        cached = sorted(cache.glob("linux-image-*/vmlinuz"))
        if cached:
            return cached[-1]
        if not shutil.which("apt-cache"):
            raise MissingToolError("apt-cache", "apt")
        raise KernelUnavailableError(
            f"apt does not know {KERNEL_METAPACKAGE!r} and {cache} holds no kernel: run apt-get update"
        )
    target = cache / package / "vmlinuz"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download at a time; the loser reuses the result
        if not target.is_file():
            _download_kernel(package, target)
    return target


def _download_kernel(package: str, target: Path) -> None:
    for name in ("apt-get", "dpkg-deb"):
        _tool(name)
    with tempfile.TemporaryDirectory(dir=target.parent.parent, prefix=".download-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # lets apt's sandbox user write here when run as root
        try:
            _run(["apt-get", "download", "-q", package], cwd=work)
        except BootDiskError as e:
            raise KernelUnavailableError(f"could not download the kernel package {package}: {e}") from e
        debs = sorted(work.glob("*.deb"))
        if not debs:
            raise BootDiskError(f"apt-get download {package} produced no .deb")
        out = work / "vmlinuz"
        proc = subprocess.Popen(
            [_tool("dpkg-deb"), "--fsys-tarfile", str(debs[0])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None
        found = False
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    if member.isfile() and re.fullmatch(r"(\./)?boot/vmlinuz-[^/]+", member.name):
                        src = tar.extractfile(member)
                        assert src is not None
                        with open(out, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                        found = True
                        break
        finally:
            proc.kill()  # stop streaming the rest (the modules) once the kernel is out
            _, err = proc.communicate()
        if not found:
            raise BootDiskError(f"no boot/vmlinuz-* in {debs[0].name}: {err.decode(errors='replace')}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(out, target)


# --- initramfs -----------------------------------------------------------------------------------
def _cpio_entry(ino: int, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One ``newc`` record: a header of 13 hex fields, the name, the data, each padded to 4 bytes."""
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    header = b"070701" + b"".join(b"%08X" % v for v in fields) + name.encode() + b"\0"
    pad = b"\0" * (-len(header) % 4)
    return header + pad + data + b"\0" * (-len(data) % 4)


def build_initramfs() -> bytes:
    """A gzipped ``newc`` cpio: static busybox, its applet links, ``/dev/console`` and ``/init``."""
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        *((d, 0o040755, b"", (0, 0)) for d in ("bin", "dev", "proc", "sys")),
        ("dev/console", 0o020600, b"", (5, 1)),  # a char device, declared without mknod
        ("bin/busybox", 0o100755, _static_busybox().read_bytes(), (0, 0)),
        *((f"bin/{a}", 0o120777, b"busybox", (0, 0)) for a in APPLETS),
        ("init", 0o100755, INIT_SCRIPT.encode(), (0, 0)),
    ]
    parts = [_cpio_entry(i, name, mode, data, rdev) for i, (name, mode, data, rdev) in enumerate(entries, 1)]
    parts.append(_cpio_entry(0, "TRAILER!!!", 0))
    return gzip.compress(b"".join(parts), compresslevel=6, mtime=0)


# --- disk ----------------------------------------------------------------------------------------
def _syslinux_cfg(marker: str, *, stay: bool = False) -> bytes:
    return (
        "SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n"
        "  KERNEL /vmlinuz\n  INITRD /initrd.gz\n"
        f"  APPEND console=ttyS0,115200 quiet loglevel=3 panic=-1 bootmarker={marker}"
        + (" bootstay=1" if stay else "")
        + "\n"
    ).encode()


def _check_marker(marker: str) -> None:
    if not MARKER_RE.match(marker):
        raise ValueError(
            f"marker {marker!r} must match {MARKER_RE.pattern} (it goes on the kernel command line)"
        )


def _copy_sparse(src: Path, dst_fd: int, offset: int) -> None:
    """Copy ``src`` into ``dst_fd`` at ``offset``, leaving all-zero MiBs as holes."""
    zero = bytes(MiB)
    with open(src, "rb") as f:
        pos = offset
        while chunk := f.read(MiB):
            if chunk != zero[: len(chunk)]:
                os.pwrite(dst_fd, chunk, pos)
            pos += len(chunk)


def build_boot_disk(path: Path | str, *, marker: str, size_mib: int = 64, stay: bool = False) -> Path:
    """Write a BIOS-bootable raw disk of ``size_mib`` MiB to ``path`` that prints :func:`boot_line`.

    The guest then powers off, or with ``stay`` keeps running and prints a heartbeat line
    every :data:`HEARTBEAT_SECONDS` seconds.
    """
    _check_marker(marker)
    if size_mib < MIN_SIZE_MIB:
        raise ValueError(f"size_mib must be at least {MIN_SIZE_MIB} (the kernel alone is ~8 MiB)")
    path = Path(path)
    check_tools()
    kernel = ensure_kernel()
    with tempfile.TemporaryDirectory(prefix="lifeboat-bootdisk-") as tmp:
        work = Path(tmp)
        part = work / "part.img"
        # -h 2048: BPB hidden sectors = partition start, so the boot sector finds ldlinux.sys
        _run(
            ["mkfs.fat", "-F", "16", "-h", "2048", "-n", "BOOT", "-C", str(part), str((size_mib - 1) * 1024)]
        )
        (work / "initrd.gz").write_bytes(build_initramfs())
        (work / "syslinux.cfg").write_bytes(_syslinux_cfg(marker, stay=stay))
        for src, name in (
            (kernel, "vmlinuz"),
            (work / "initrd.gz", "initrd.gz"),
            (work / "syslinux.cfg", "syslinux.cfg"),
        ):
            _run(["mcopy", "-i", str(part), str(src), f"::/{name}"])
        _run(["syslinux", "--install", str(part)])

        tmp_out = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp_out.unlink()
        with open(tmp_out, "wb") as f:
            f.truncate(size_mib * MiB)
        try:
            _run(["sfdisk", "-q", str(tmp_out)], input=b"label: dos\nstart=2048, type=e, bootable\n")
            fd = os.open(tmp_out, os.O_WRONLY)
            try:
                os.pwrite(fd, MBR_BIN.read_bytes()[:440], 0)  # boot code only: keep the partition table
                _copy_sparse(part, fd, PART_START)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_out, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp_out.unlink()
            raise
    return path


def copy_with_marker(src: Path | str, dst: Path | str, *, marker: str) -> Path:
    """A copy of boot disk ``src`` at ``dst`` that prints ``marker`` instead (rewrites one file).

    The copy stays up or powers off as ``src`` does.
    """
    _check_marker(marker)
    src, dst = Path(src), Path(dst)
    stay = disk_stays(src)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = os.fstat(fin.fileno()).st_size
        fout.truncate(size)
    fd = os.open(dst, os.O_WRONLY)
    try:
        _copy_sparse(src, fd, 0)
    finally:
        os.close(fd)
    with tempfile.TemporaryDirectory(prefix="lifeboat-bootdisk-") as tmp:
        cfg = Path(tmp) / "syslinux.cfg"
        cfg.write_bytes(_syslinux_cfg(marker, stay=stay))
        _run(["mcopy", "-o", "-i", f"{dst}@@{PART_START}", str(cfg), "::/syslinux.cfg"])
    return dst


def _read_cfg(path: Path | str) -> str:
    return _run(["mtype", "-i", f"{path}@@{PART_START}", "::/syslinux.cfg"]).decode()


def disk_marker(path: Path | str) -> str:
    """The marker written into boot disk ``path``."""
    cfg = _read_cfg(path)
    m = re.search(r"bootmarker=(\S+)", cfg)
    if not m:
        raise BootDiskError(f"{path}: no bootmarker= in /syslinux.cfg")
    return m.group(1)


def disk_stays(path: Path | str) -> bool:
    """True if boot disk ``path`` keeps running after its boot line (built with ``stay=True``)."""
    return re.search(r"(^|\s)bootstay=1(\s|$)", _read_cfg(path), re.MULTILINE) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--marker", required=True)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument(
        "--stay", action="store_true", help="keep running with a heartbeat instead of powering off"
    )
    args = parser.parse_args(argv)
    build_boot_disk(args.out, marker=args.marker, size_mib=args.size_mib, stay=args.stay)
    print(f"{args.out} marker={args.marker} stay={args.stay} kernel={ensure_kernel()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "BootDiskError",
    "KernelUnavailableError",
    "MissingToolError",
    "boot_line",
    "build_boot_disk",
    "copy_with_marker",
    "disk_marker",
    "disk_stays",
    "ensure_kernel",
]
