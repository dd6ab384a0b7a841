"""Prepare one machine's disks for a target: inspect, decide, then (optionally) change.

``prepare_disks(disks, target=…, apply=False)`` is a dry run: the appliance opens the disks
read-only and the result lists the changes it would make. With ``apply=True`` the same
decisions are applied, each change's status recorded; a refusal (BitLocker, a hibernated or
dirty volume, an unreadable root) writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from node_runtime.prep.act.linux import apply_linux
from node_runtime.prep.act.windows import apply_windows
from node_runtime.prep.decide.linux import decide_linux
from node_runtime.prep.decide.windows import decide_windows
from node_runtime.prep.gather.linux import gather_linux
from node_runtime.prep.gather.windows import gather_windows, windows_refusals
from node_runtime.prep.guest import DiskSource, Guest, open_guest
from node_runtime.prep.models import Change, GuestPrep, OsFacts, PrepFinding
from node_runtime.prep.targets import needs
from shared.errors import GuestPrepError

Notify = Callable[[GuestPrep], None]


def _nothing(_: GuestPrep) -> None:
    return None


def prepare_disks(
    disks: list[DiskSource], *, target: str, apply: bool, before_apply: Notify = _nothing
) -> GuestPrep:
    """Inspect the machine on ``disks`` (boot disk first) and decide what ``target`` needs.

    With ``apply``, ``before_apply`` receives the planned result (so a report lists every
    change before it is made), then the changes are made. Raises GuestPrepError when the
    appliance cannot start or a disk cannot be added; anything about the guest itself is a
    finding.
    """
    needs(target)
    seconds: dict[str, float] = {}
    started = time.monotonic()
    with open_guest(disks, readonly=not apply) as guest:
        seconds["launch"] = round(time.monotonic() - started, 2)
        mark = time.monotonic()
        result = _inspect(guest, target)
        seconds["inspect"] = round(time.monotonic() - mark, 2)
        result.seconds = seconds
        if not apply or result.refused or not result.changes:
            return result
        before_apply(result.model_copy(deep=True))
        mark = time.monotonic()
        guest.remount_writable()  # inspection mounted read-only: a guest with nothing to change is never touched
        act = apply_linux if result.facts.type == "linux" else apply_windows
        result.changes = act(guest, result.changes)
        result.applied = True
        seconds["apply"] = round(time.monotonic() - mark, 2)
    return result


def _inspect(guest: Guest, target: str) -> GuestPrep:
    unreadable = guest.unreadable()
    roots = guest.roots()
    # an encrypted volume refuses preparation when no OS could be read (it is the system volume);
    # an encrypted data volume beside a readable OS is reported and left alone
    findings = [
        PrepFinding(severity="error" if not roots else "warning", code="volume_encrypted", refuses=not roots,
                    message=f"{device} is {why}: it cannot be read or prepared; decrypt it (suspend or turn off "
                            "BitLocker / LUKS) on the source and replicate again")
        for device, why in sorted(unreadable.items())
    ]  # fmt: skip
    if not roots:
        broken = guest.unmountable()
        unreadable |= broken
        findings += [
            PrepFinding(severity="error", code="filesystem_unreadable", refuses=True,
                        message=f"{device} is {why}; repair it on the source (fsck / chkdsk) and replicate again")
            for device, why in sorted(broken.items())
        ]  # fmt: skip
        findings.append(PrepFinding(
            severity="error" if unreadable else "warning", code="os_not_found", refuses=bool(unreadable),
            message="no operating system was found on the disks; nothing was checked or changed"))  # fmt: skip
        facts = OsFacts(type="unknown", unreadable=unreadable)
        return GuestPrep(target=target, facts=facts, findings=findings, refused=bool(unreadable))  # type: ignore[arg-type]
    if len(roots) > 1:
        findings.append(PrepFinding(severity="warning", code="several_operating_systems",
                                    message=f"{len(roots)} operating systems found; preparing the first, {roots[0]}"))  # fmt: skip
    root = roots[0]
    os_type = guest.root_info(root, "type")
    facts = OsFacts(type=os_type if os_type in ("linux", "windows") else "unknown", root=root,  # type: ignore[arg-type]
                    arch=guest.root_info(root, "arch"), hostname=guest.root_info(root, "hostname"),
                    unreadable=unreadable)  # fmt: skip
    if facts.type == "windows":
        findings += windows_refusals(guest, root)
    try:
        guest.mount_root(root, writable=False)
    except GuestPrepError as exc:
        findings.append(
            PrepFinding(severity="error", code="root_unmountable", refuses=True, message=str(exc))
        )
        return GuestPrep(target=target, facts=facts, findings=findings, refused=True)  # type: ignore[arg-type]
    changes: list[Change] = []
    if facts.type == "linux":
        facts.linux = gather_linux(guest, root)
        more, changes = decide_linux(facts.linux, target)
        findings += more
    elif facts.type == "windows":
        facts.windows = gather_windows(guest, root)
        more, changes = decide_windows(facts.windows, target)
        findings += more
    else:
        findings.append(PrepFinding(severity="warning", code="os_unsupported",
                                    message=f"{os_type} guests are not prepared; nothing was changed"))  # fmt: skip
    refused = any(f.refuses for f in findings)
    return GuestPrep(target=target, facts=facts, findings=findings, changes=changes, refused=refused)  # type: ignore[arg-type]
