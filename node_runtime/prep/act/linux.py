"""Apply decided changes to a mounted Linux guest: write or remove files, run guest commands.

Commands run chrooted in the guest (its own update-initramfs or dracut, with the appliance's
/dev, /proc and /sys). A failed change is recorded with its error; the next one still runs.
"""

from __future__ import annotations

import shlex

from node_runtime.prep.guest import Guest
from node_runtime.prep.models import Change
from shared.errors import GuestPrepError


def apply_linux(guest: Guest, changes: list[Change]) -> list[Change]:
    done = []
    for change in changes:
        try:
            _apply(guest, change)
        except GuestPrepError as exc:
            done.append(change.model_copy(update={"status": "failed", "error": str(exc)[-2000:]}))
            continue
        done.append(change.model_copy(update={"status": "applied"}))
    return done


def _apply(guest: Guest, change: Change) -> None:
    if change.kind == "write_file":
        if change.content is None:
            raise GuestPrepError(f"{change.code}: no content to write to {change.where}")
        directory = change.where.rsplit("/", 1)[0] or "/"
        if not guest.exists(directory):
            guest.call(f"creating {directory}", "mkdir_p", directory)
        guest.write(change.where, change.content)
    elif change.kind == "remove_file":
        guest.remove(change.where)
    elif change.kind == "command":
        if not change.argv:
            raise GuestPrepError(f"{change.code}: no command to run")
        guest.sh(f"{shlex.join(change.argv)} 2>&1")
    else:
        raise GuestPrepError(f"{change.code}: a Linux guest has no {change.kind} changes")
