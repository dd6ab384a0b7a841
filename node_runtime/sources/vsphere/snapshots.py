"""Replication snapshots and Changed Block Tracking on one VM.

A replication snapshot is named ``lifeboat-<node id>-<job id>`` and described with the
same, so a node recognises its own leftovers after a crash and removes them when it
starts (:func:`sweep`). CBT is switched on by reconfiguring the VM; vSphere only starts
tracking after the next snapshot create/remove (a "stun-unstun" cycle), which
:func:`ensure_cbt` does at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from pyVmomi import vim, vmodl

from node_runtime.sources.port import Extent
from node_runtime.sources.vsphere.connection import Session, fault_message
from shared.errors import SourceError

log = logging.getLogger(__name__)

SNAPSHOT_PREFIX = "lifeboat-"
TASK_TIMEOUT_S = 1800


def snapshot_name(node_id: str, job_id: str) -> str:
    return f"{SNAPSHOT_PREFIX}{node_id}-{job_id}"[:80]


def wait_task(task: Any, what: str, *, timeout: float = TASK_TIMEOUT_S) -> Any:
    """Wait for a vSphere task; its fault becomes SourceError naming ``what``."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        state = task.info.state
        if state == vim.TaskInfo.State.success:
            return task.info.result
        if state == vim.TaskInfo.State.error:
            raise SourceError(f"{what} failed: {fault_message(task.info.error)}")
        if time.monotonic() > deadline:
            raise SourceError(f"{what} did not finish in {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def ensure_cbt(vm: Any) -> bool:
    """Switch Changed Block Tracking on (and activate it); True when it was off."""
    if vm.config.changeTrackingEnabled:
        return False
    log.info("enabling changed block tracking on %s", vm.name)
    wait_task(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)), f"enabling CBT on {vm.name}")
    snap = create(vm, f"{SNAPSHOT_PREFIX}cbt-activate", "Lifeboat: activates changed block tracking", quiesce=False)
    remove(snap, f"{vm.name} CBT activation snapshot")
    return True


def create(vm: Any, name: str, description: str, *, quiesce: bool) -> Any:
    """A snapshot without memory; quiesced only if asked and VMware Tools are running."""
    quiesce = quiesce and str(getattr(vm.guest, "toolsRunningStatus", "")) == "guestToolsRunning"
    task = vm.CreateSnapshot_Task(name=name, description=description, memory=False, quiesce=quiesce)
    return wait_task(task, f"snapshot of {vm.name}")


def remove(snapshot: Any, what: str) -> None:
    wait_task(snapshot.RemoveSnapshot_Task(removeChildren=False), f"removing {what}")


def walk(snapshots: Any) -> Iterator[Any]:
    """Every snapshot tree node of ``vm.snapshot.rootSnapshotList``, depth first."""
    for node in snapshots or []:
        yield node
        yield from walk(node.childSnapshotList)


def remove_leftovers(vm: Any, node_id: str) -> list[str]:
    """Remove the snapshots of ``vm`` this node left behind (a crash mid-run)."""
    prefix = f"{SNAPSHOT_PREFIX}{node_id}-"
    try:
        nodes = list(walk(vm.snapshot.rootSnapshotList)) if vm.snapshot else []
    except vmodl.fault.ManagedObjectNotFound:
        return []
    removed = []
    for node in nodes:
        if node.name.startswith(prefix):
            log.warning("removing leftover replication snapshot %s of %s", node.name, vm.name)
            remove(node.snapshot, f"leftover snapshot {node.name} of {vm.name}")
            removed.append(node.name)
    return removed


def sweep(session: Session, node_id: str) -> list[str]:
    """Remove every snapshot this node left behind on the site; returns their names."""
    return [name for vm in list(session.vms()) for name in remove_leftovers(vm, node_id)]


class InvalidChangeIdError(SourceError):
    """The change id is unknown to the disk (CBT was reset): the caller reads everything."""


def changed_areas(vm: Any, snapshot: Any, device_key: int, capacity: int, change_id: str) -> list[Extent]:
    """Every area changed since ``change_id`` (``"*"``: every allocated area), paging through
    ``QueryChangedDiskAreas`` until the disk's end."""
    out: list[Extent] = []
    offset = 0
    while offset < capacity:
        try:
            info = vm.QueryChangedDiskAreas(
                snapshot=snapshot, deviceKey=device_key, startOffset=offset, changeId=change_id
            )
        except (vmodl.fault.InvalidArgument, vim.fault.FileFault) as exc:
            raise InvalidChangeIdError(
                f"{vm.name} disk {device_key}: changeId {change_id!r} refused ({fault_message(exc)})"
            ) from exc
        except vmodl.MethodFault as exc:
            raise SourceError(f"{vm.name} disk {device_key}: QueryChangedDiskAreas failed: {fault_message(exc)}") from exc
        for area in info.changedArea or []:
            start, length = int(area.start), int(area.length)
            end = min(start + length, capacity)
            if end > start:
                out.append((start, end - start))
        next_offset = int(info.startOffset) + int(info.length)
        if next_offset <= offset:
            raise SourceError(f"{vm.name} disk {device_key}: QueryChangedDiskAreas made no progress at {offset}")
        offset = next_offset
    return out
