"""The PrepareOS state: boot-sector checks on every platform, then guest preparation.

Two layers run in order. The byte-level checks (:mod:`node_runtime.recovery.osprep`: MBR,
active flag, hidden sectors, a FAT boot loader's serial console) read through the target and
run anywhere, Lambda included. Guest preparation (:mod:`node_runtime.prep`: drivers,
fstab, boot loader, network, registry) needs libguestfs, so it runs where the flow runs on a
node; the composition root provides it as :attr:`RecoveryPorts.guest_prep`, and a flow
without it says so in the report. Both layers end as byte patches applied through the
target's ``patch_disk``, so every platform gets the same result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from functions.recovery.compensate import delete_all
from functions.recovery.models import MachineState, OsResult
from functions.recovery.ports import RecoveryPorts
from node_runtime.prep.models import GuestPrep
from node_runtime.recovery.osprep import DiskInspection, prepare
from node_runtime.recovery.targets.base import Target
from shared.domain.recovery import DiskArtifact, Resource
from shared.errors import GuestPrepError

Patches = dict[int, list[tuple[int, bytes]]]


def prepare_os(event: dict[str, Any], ports: RecoveryPorts) -> dict[str, Any]:
    """Inspect and remediate the machine's disks for its target; every change is in the result."""
    started = ports.now()
    ports.checkpoint()
    state = MachineState.model_validate(event)
    target = ports.target_for(state.run.target)
    artifacts = list(state.artifacts())
    readers: list[tuple[Callable[[int, int], bytes], int]] = [
        (functools.partial(target.disks.read_disk, a), a.disk_size) for a in artifacts
    ]
    prep = prepare(readers, platform=target.kind)
    by_disk: Patches = {}
    findings = [f.model_dump(mode="json") for f in prep.findings]
    for patch in prep.patches:
        artifact = artifacts[patch.disk_index]
        if target.disks.read_disk(artifact, patch.offset, len(patch.original)) != patch.original:
            findings.append({"severity": "warning", "code": "patch_skipped",
                             "message": f"not applied (the disk changed since inspection): {patch.reason}"})  # fmt: skip
            continue
        by_disk.setdefault(patch.disk_index, []).append((patch.offset, patch.data))
        findings.append({"severity": "info", "code": "patch_applied", "message": patch.reason})
    artifacts = _patch(target, artifacts, by_disk)
    os_family = prep.os_family
    guest_summary: dict[str, Any] | None = None
    guest_bytes = 0
    if not state.run.target.prepare_guest:
        findings.append({"severity": "info", "code": "guest_prep_off",
                         "message": "guest preparation is turned off for this site (recovery_target.prepare_guest)"})  # fmt: skip
    elif not _may_hold_os(prep.disks):
        findings.append({"severity": "info", "code": "guest_prep_no_os_filesystem",
                         "message": "no disk holds a file system an operating system lives on (only "
                                    f"{', '.join(sorted(_filesystems(prep.disks))) or 'none'}): guest preparation "
                                    "was not needed"})  # fmt: skip
    elif ports.guest_prep is None:
        findings.append({"severity": "info", "code": "guest_prep_not_run",
                         "message": "guest preparation (drivers, fstab, network, registry) runs on a replication "
                                    "node with libguestfs; this flow ran without one, so only boot-sector checks ran"})  # fmt: skip
    else:
        readers = [(functools.partial(target.disks.read_disk, a), a.disk_size) for a in artifacts]
        name = state.machine.machine_id

        def planned(result: GuestPrep) -> None:
            ports.notify(f"{name}: preparing the guest for {target.kind}: "
                         + ", ".join(sorted({c.code for c in result.changes})))  # fmt: skip

        try:
            guest, patches = ports.guest_prep(readers, target.kind, planned)
        except GuestPrepError as exc:
            findings.append({"severity": "error", "code": "guest_prep_failed",
                             "message": f"guest preparation failed, the disks are as recovered: {exc}"})  # fmt: skip
        else:
            guest_summary = guest.summary()
            artifacts = _patch(target, artifacts, patches)
            guest_bytes = sum(len(d) for p in patches.values() for _, d in p)
            if guest.facts.type != "unknown":
                os_family = guest.facts.type
            ports.checkpoint()
    changed = len(by_disk) + (1 if guest_bytes else 0)
    ports.notify(f"{state.machine.machine_id}: {os_family} OS, {changed} remediation(s)")
    bootable = prep.bootable and not (guest_summary and guest_summary["refused"])
    return OsResult(
        started_at=started, finished_at=ports.now(), artifacts=artifacts, os_family=os_family,
        bootable=bootable, patches_applied=sum(len(p) for p in by_disk.values()), findings=findings,
        guest=guest_summary, guest_bytes_patched=guest_bytes,
    ).model_dump(mode="json")  # fmt: skip


#: file systems a guest OS may live on (or that hide one); an unrecognised one counts too
OS_FILESYSTEMS = {"ext2", "ext3", "ext4", "xfs", "ntfs", "btrfs", "lvm2_pv", "bitlocker"}


def _filesystems(disks: list[DiskInspection]) -> set[str]:
    found = {d.whole_disk_filesystem.type for d in disks if d.whole_disk_filesystem}
    return found | {p.filesystem.type for d in disks for p in d.partitions if p.filesystem}


def _may_hold_os(disks: list[DiskInspection]) -> bool:
    """Whether an appliance could find an OS: a Linux/Windows file system, or a partition the
    byte-level inspection could not name (LUKS, ZFS…). Skipping the rest saves a launch."""
    unnamed = any(p.filesystem is None and p.size > 0 for d in disks for p in d.partitions)
    return unnamed or bool(_filesystems(disks) & OS_FILESYSTEMS)


def _patch(target: Target, artifacts: list[DiskArtifact], by_disk: Patches) -> list[DiskArtifact]:
    """Apply patches per disk; on failure delete what patching created, then raise."""
    artifacts = list(artifacts)
    new: list[Resource] = []
    try:
        for index, patches in sorted(by_disk.items()):
            before = {(r.type, r.id) for r in artifacts[index].resources}
            artifacts[index] = target.disks.patch_disk(artifacts[index], patches)
            new += [r for r in artifacts[index].resources if (r.type, r.id) not in before]
    except BaseException:
        delete_all(target.cleaner, new)
        raise
    return artifacts
