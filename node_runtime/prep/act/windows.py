"""Apply planned Windows changes to the mounted guest: files, then registry hives.

Files are written (parent folders created) or removed on the NTFS volume, paths resolved
case-insensitively. Registry changes are grouped per hive: each hive is downloaded once,
edited with hivex, committed and uploaded once. Every change ends ``applied`` or ``failed``
(with ``error``); one failure does not stop the others, but a hive that cannot be written
back fails every change made in it.
"""

from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path

from node_runtime.prep.guest import Guest
from node_runtime.prep.hives import Hive
from node_runtime.prep.models import Change
from shared.errors import GuestPrepError

HIVE_INSPECTION = {"SYSTEM": "windows_system_hive", "SOFTWARE": "windows_software_hive"}


def apply_windows(guest: Guest, changes: list[Change]) -> list[Change]:
    """Apply the changes in order; return them with status applied or failed (and error)."""
    done: dict[int, Change] = {}
    registry: dict[str, list[tuple[int, Change]]] = {}
    for index, change in enumerate(changes):
        if change.kind in ("registry_set", "registry_delete"):
            registry.setdefault(change.hive or "", []).append((index, change))
        else:
            done[index] = _file(guest, change)
    for hive, batch in registry.items():
        done.update(_hive(guest, hive, batch))
    return [done[index] for index in range(len(changes))]


def _outcome(change: Change, error: str | None) -> Change:
    return change.model_copy(update={"status": "failed" if error else "applied", "error": error})


def _file(guest: Guest, change: Change) -> Change:
    try:
        if change.kind == "write_file":
            if change.content is None:
                raise GuestPrepError(f"no content to write to {change.where}")
            guest.write(_real_path(guest, change.where), change.content)
        elif change.kind == "remove_file":
            real = guest.case_path(change.where)
            if real is not None:
                guest.remove(real)
        else:
            raise GuestPrepError(f"{change.kind} changes are not made in Windows guests")
    except GuestPrepError as exc:
        return _outcome(change, str(exc))
    return _outcome(change, None)


def _real_path(guest: Guest, path: str) -> str:
    """``path`` with its existing folders spelled as on the volume; missing folders are created."""
    parent, name = posixpath.split(path)
    real_parent = guest.case_path(parent) if parent != "/" else "/"
    if real_parent is None:
        real_parent = parent
        guest.call(f"creating {parent}", "mkdir_p", parent)
    existing = guest.case_path(posixpath.join(real_parent, name))
    return existing or posixpath.join(real_parent, name)


def _hive(guest: Guest, hive: str, batch: list[tuple[int, Change]]) -> dict[int, Change]:
    try:
        if hive not in HIVE_INSPECTION or guest.mounted is None:
            raise GuestPrepError(f"registry hive {hive or '(none)'} cannot be changed here")
        path = guest.case_path(guest.root_info(guest.mounted, HIVE_INSPECTION[hive]))
        if path is None:
            raise GuestPrepError(f"the registry hive {hive} is missing")
    except GuestPrepError as exc:
        return {index: _outcome(change, str(exc)) for index, change in batch}
    result: dict[int, Change] = {}
    with tempfile.TemporaryDirectory(prefix="lifeboat-hive-") as tmp:
        local = str(Path(tmp) / hive)
        try:
            guest.download(path, local)
            opened = Hive(local, write=True, label=path)
        except GuestPrepError as exc:
            return {index: _outcome(change, str(exc)) for index, change in batch}
        for index, change in batch:
            result[index] = _outcome(change, _edit(opened, change))
        if all(change.status == "failed" for change in result.values()):
            return result
        try:
            opened.commit(local)
            guest.upload(local, path)
        except GuestPrepError as exc:
            return {index: _outcome(change, f"{exc} (the hive was not written)") for index, change in batch}
    return result


def _edit(hive: Hive, change: Change) -> str | None:
    """The error of one registry change made in memory, None when it was made."""
    try:
        if not change.key:
            raise GuestPrepError(f"{change.where}: no registry key")
        if change.kind == "registry_delete":
            hive.delete(change.key, change.name)
        elif change.name is None or change.value_type is None or change.value is None:
            raise GuestPrepError(f"{change.where}: a registry_set needs a name, a type and a value")
        else:
            hive.set(change.key, change.name, change.value_type, change.value)
    except (GuestPrepError, ValueError) as exc:
        return str(exc)
    return None
