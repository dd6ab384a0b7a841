"""One libguestfs appliance over a machine's disks: inspect, mount, read, change.

Every libguestfs failure becomes :class:`~shared.errors.GuestPrepError` naming what was
being done. Disks are raw or qcow2 images or block devices; a disk that lives elsewhere is
opened as a qcow2 overlay backed by an NBD export of it (:mod:`node_runtime.prep.remote`),
so nothing is copied before inspection. The appliance runs with the ``direct`` backend unless ``LIBGUESTFS_BACKEND``
says otherwise; ``LIBGUESTFS_BACKEND_SETTINGS=force_tcg`` runs it without KVM.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shared.errors import GuestPrepError

log = logging.getLogger("lifeboat.prep")

# file systems libguestfs sees on a partition but cannot mount
UNREADABLE_TYPES = {"BitLocker": "BitLocker-encrypted", "crypto_LUKS": "LUKS-encrypted"}


@dataclass(frozen=True)
class DiskSource:
    """A disk for the appliance: an image file or block device and its format (raw, qcow2)."""

    path: str
    format: str = "raw"


def _guestfs() -> Any:
    try:
        import guestfs
    except ImportError as exc:  # Debian-only binding, linked in by tools/debian_modules.py
        raise GuestPrepError(
            "guest preparation needs libguestfs' Python binding: apt-get install libguestfs-tools "
            "python3-guestfs linux-image-amd64, then python3 tools/debian_modules.py"
        ) from exc
    return guestfs


class Guest:
    """A launched appliance. Use :func:`open_guest`; every method raises GuestPrepError."""

    def __init__(self, handle: Any, disks: list[DiskSource], readonly: bool) -> None:
        self.g = handle
        self.disks = disks
        self.readonly = readonly
        self.mounted: str | None = None

    def call(self, what: str, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.g, name)(*args, **kwargs)
        except RuntimeError as exc:  # guestfs raises RuntimeError for every failed call
            raise GuestPrepError(f"{what}: {exc}", call=name) from exc

    # --- inspection ---------------------------------------------------------------------
    def roots(self) -> list[str]:
        return list(self.call("inspecting the disks", "inspect_os"))

    def root_info(self, root: str, name: str) -> str:
        """``inspect_get_<name>(root)``; 'unknown' when libguestfs cannot tell."""
        try:
            return str(getattr(self.g, f"inspect_get_{name}")(root))
        except RuntimeError:
            return "unknown"

    def unreadable(self) -> dict[str, str]:
        """Partitions whose file system cannot be read (encrypted), device -> why."""
        found: dict[str, str] = {}
        for part in self.call("listing partitions", "list_partitions"):
            try:
                kind = self.g.vfs_type(part)
            except RuntimeError:
                continue
            if kind in UNREADABLE_TYPES:
                found[part] = UNREADABLE_TYPES[kind]
        return found

    def unmountable(self) -> dict[str, str]:
        """File systems that fail to mount read-only (corrupt, or a type the appliance lacks), device -> why."""
        found: dict[str, str] = {}
        for device, kind in self.call("listing file systems", "list_filesystems").items():
            if kind in ("swap", "unknown", "") or kind in UNREADABLE_TYPES:
                continue
            try:
                self.g.mount_ro(device, "/")
            except RuntimeError as exc:
                found[device] = (
                    f"an {kind} file system that does not mount (corrupt?): {' '.join(str(exc).split())[-300:]}"
                )
                continue
            self.g.umount_all()
        return found

    def mount_root(self, root: str, *, writable: bool) -> None:
        """Mount ``root``'s file systems as its fstab (or drive letters) says, shortest path first."""
        if writable and self.readonly:
            raise GuestPrepError("the disks were opened read-only")
        points = self.call("reading the guest's mount points", "inspect_get_mountpoints", root)
        for mountpoint, device in sorted(points.items(), key=lambda kv: len(kv[0])):
            try:
                if writable:  # noatime: reading the guest (inspection) must not change its bytes
                    self.g.mount_options("noatime", device, mountpoint)
                else:
                    self.g.mount_ro(device, mountpoint)
            except RuntimeError as exc:
                if mountpoint == "/":
                    raise GuestPrepError(
                        f"mounting the root file system {device}: {exc}", device=device
                    ) from exc
                # a data volume that does not mount (swap-like, missing) is not the guest's boot
        self.mounted = root

    def remount_writable(self) -> None:
        """Mount the inspected root again, read-write (the disks must not be read-only)."""
        if self.mounted is None:
            raise GuestPrepError("no guest root is mounted")
        root = self.mounted
        self.call("unmounting the guest", "umount_all")
        self.mount_root(root, writable=True)

    # --- files --------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return bool(self.call(f"checking {path}", "exists", path))

    def is_file(self, path: str) -> bool:
        return bool(self.call(f"checking {path}", "is_file", path, followsymlinks=True))

    def read_text(self, path: str) -> str:
        return bytes(self.call(f"reading {path}", "read_file", path)).decode("utf-8", "replace")

    def read_optional(self, path: str) -> str | None:
        return self.read_text(path) if self.exists(path) and self.is_file(path) else None

    def glob(self, pattern: str) -> list[str]:
        return sorted(self.call(f"listing {pattern}", "glob_expand", pattern))

    def ls(self, directory: str) -> list[str]:
        return sorted(self.call(f"listing {directory}", "ls", directory)) if self.exists(directory) else []

    def case_path(self, path: str) -> str | None:
        """The real path of a case-insensitive (NTFS) ``path``, or None when it does not exist."""
        try:
            real = self.g.case_sensitive_path(path)
        except RuntimeError:
            return None
        return str(real) if self.exists(real) else None

    def write(self, path: str, content: str) -> None:
        self.call(f"writing {path}", "write", path, content.encode())

    def remove(self, path: str) -> None:
        self.call(f"removing {path}", "rm_f", path)

    def sh(self, command: str) -> str:
        """Run ``command`` in the guest (chrooted into the mounted root) and return its output."""
        return str(self.call(f"running `{command}` in the guest", "sh", command))

    def download(self, path: str, local: str) -> None:
        self.call(f"downloading {path}", "download", path, local)

    def upload(self, local: str, path: str) -> None:
        self.call(f"uploading {path}", "upload", local, path)

    # --- the end ------------------------------------------------------------------------
    def sync(self) -> None:
        self.call("unmounting the guest", "umount_all")
        self.call("flushing the guest's disks", "sync")
        self.mounted = None


def _launch(disks: list[DiskSource], readonly: bool, settings: list[str] | None) -> Any:
    g = _guestfs().GuestFS(python_return_dict=True)
    try:
        if settings is not None:
            g.set_backend_settings(settings)
        for disk in disks:
            try:
                g.add_drive_opts(disk.path, format=disk.format, readonly=readonly)
            except RuntimeError as exc:
                raise GuestPrepError(f"adding disk {disk.path}: {exc}") from exc
        try:
            g.launch()
        except RuntimeError as exc:
            raise GuestPrepError(f"starting the libguestfs appliance: {exc}") from exc
    except BaseException:
        g.close()
        raise
    return g


def _started(disks: list[DiskSource], readonly: bool) -> Any:
    """A launched handle. When KVM is present but unusable (nested virtualisation that aborts
    QEMU) and no backend settings were given, the launch is retried once without KVM (TCG)."""
    os.environ.setdefault("LIBGUESTFS_BACKEND", "direct")
    try:
        return _launch(disks, readonly, None)
    except GuestPrepError as exc:
        if "LIBGUESTFS_BACKEND_SETTINGS" in os.environ or "starting the libguestfs appliance" not in str(exc):
            raise
        log.warning("the libguestfs appliance did not start with KVM; retrying without it (force_tcg)")
        return _launch(disks, readonly, ["force_tcg"])


@contextmanager
def open_guest(disks: list[DiskSource], *, readonly: bool) -> Iterator[Guest]:
    """Launch one appliance over ``disks`` (boot disk first); shut it down on exit.

    ``readonly`` opens every disk read-only (writes then land in a throw-away overlay).
    """
    if not disks:
        raise GuestPrepError("guest preparation needs at least the boot disk")
    g = _started(disks, readonly)
    try:
        guest = Guest(g, disks, readonly)
        yield guest
        if not readonly:
            guest.sync()
        try:
            g.shutdown()
        except RuntimeError as exc:
            raise GuestPrepError(f"shutting the appliance down (changes may not be written): {exc}") from exc
    finally:
        g.close()
