"""Freeze a QEMU VM's disks at one instant and export that view over NBD (pull-mode backup).

This is what libvirt's pull-mode backup (``virDomainBackupBegin``) does: for each disk a
scratch qcow2 node whose backing is the live disk, and a ``blockdev-backup sync=none``
job from the disk into it. From the moment of the transaction, the job copies every block
the guest is about to overwrite into the scratch image first (copy-before-write), so the
scratch node reads as the disk *was* at that instant while the guest keeps running and
writing. The chosen alternative, an external snapshot overlay, would move the guest's
writes into a new file that has to be block-committed back: slower, and a crash in the
middle leaves the VM on an overlay the operator never asked for. Fleecing leaves the VM's
storage untouched; the scratch only holds blocks the guest overwrote during the read.

The scratch node and the freeze bitmaps, the new generation and the backup job are created
in one QMP ``transaction`` for all the machine's disks: one crash-consistent instant.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node_runtime.recovery.qemu import QEMU_IMG, find_tool
from node_runtime.sources.kvm import bitmaps
from node_runtime.sources.kvm.qmp import BlockDisk, Qmp
from shared.errors import SourceError

log = logging.getLogger(__name__)


def _short(kind: str, disk_id: str) -> str:
    """A QEMU node/job/export id for one disk: QEMU caps node names at 31 characters."""
    return f"lb{kind}-{hashlib.sha256(disk_id.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class FleeceDisk:
    disk_id: str
    disk: BlockDisk
    freeze: bitmaps.Freeze
    scratch: Path

    @property
    def node(self) -> str:
        return _short("f", self.disk_id)

    @property
    def job(self) -> str:
        return _short("j", self.disk_id)

    @property
    def export(self) -> str:
        return _short("e", self.disk_id)

    @property
    def frozen(self) -> list[str]:
        return [bitmaps.frozen_name(self.disk_id, g) for g in self.freeze.frozen]


def sweep(qmp: Qmp, disk_ids: Iterable[str]) -> list[str]:
    """Remove what a killed run left for these disks (exports, jobs, scratch nodes). Returns what went."""
    ids = list(disk_ids)
    removed: list[str] = []
    exports = {e["id"] for e in qmp.cmd("query-block-exports")}
    jobs = {j["device"] for j in qmp.cmd("query-block-jobs")}
    nodes = qmp.nodes()
    for disk_id in ids:
        export, job, node = _short("e", disk_id), _short("j", disk_id), _short("f", disk_id)
        if export in exports:
            _del_export(qmp, export)
            removed.append(f"export {export}")
        if job in jobs:
            _cancel_job(qmp, job)
            removed.append(f"job {job}")
        if node in nodes:
            qmp.cmd("blockdev-del", **{"node-name": node})
            removed.append(f"node {node}")
    return removed


def freeze(qmp: Qmp, disks: Sequence[FleeceDisk]) -> None:
    """Create the scratch nodes, then freeze every disk in one transaction."""
    for d in disks:
        for name in d.freeze.stale_frozen:
            qmp.cmd("block-dirty-bitmap-remove", node=d.disk.node, name=name)
        for g in d.freeze.dropped:
            log.warning("dropping old dirty bitmap %s", bitmaps.bitmap_name(d.disk_id, g))
            qmp.cmd("block-dirty-bitmap-remove", node=d.disk.node, name=bitmaps.bitmap_name(d.disk_id, g))
    added: list[FleeceDisk] = []
    try:
        for d in disks:
            _scratch_image(d.scratch, d.disk.size)
            qmp.cmd("blockdev-add", driver="qcow2", **{"node-name": d.node},
                    file={"driver": "file", "filename": str(d.scratch)}, backing=d.disk.node)  # fmt: skip
            added.append(d)
        actions: list[tuple[str, dict[str, Any]]] = []
        for d in disks:
            for g, frozen in zip(d.freeze.frozen, d.frozen, strict=True):
                actions.append(("block-dirty-bitmap-add",
                                {"node": d.disk.node, "name": frozen, "persistent": False, "disabled": True}))  # fmt: skip
                actions.append(("block-dirty-bitmap-merge", {"node": d.disk.node, "target": frozen,
                                                             "bitmaps": [bitmaps.bitmap_name(d.disk_id, g)]}))  # fmt: skip
            actions.append(("block-dirty-bitmap-add", {
                "node": d.disk.node, "name": bitmaps.bitmap_name(d.disk_id, d.freeze.next_generation),
                "persistent": d.freeze.persistent,
            }))  # fmt: skip
            actions.append(("blockdev-backup", {"job-id": d.job, "device": d.disk.node, "target": d.node,
                                                "sync": "none", "auto-finalize": True, "auto-dismiss": True}))  # fmt: skip
        qmp.transaction(actions)
    except BaseException:
        for d in added:
            _quietly(qmp.cmd, "blockdev-del", **{"node-name": d.node})
        for d in disks:
            d.scratch.unlink(missing_ok=True)
        raise


def export(qmp: Qmp, socket_path: Path, disks: Sequence[FleeceDisk]) -> None:
    """Serve every frozen view (with its frozen bitmaps) on one NBD unix socket."""
    _start_server(qmp, socket_path)
    for d in disks:
        qmp.cmd("block-export-add", type="nbd", id=d.export, **{"node-name": d.node}, name=d.export,
                writable=False, bitmaps=d.frozen)  # fmt: skip


def release(qmp: Qmp, disks: Sequence[FleeceDisk], *, committed: Iterable[str]) -> list[str]:
    """Undo :func:`freeze` and :func:`export`; forget old generations of the ``committed``
    disks. Runs every step even if one fails; returns the failures (empty: all released)."""
    done = set(committed)
    failures: list[str] = []
    exports = {e["id"] for e in _try(qmp, "query-block-exports", failures, default=[])}
    for d in disks:
        if d.export in exports:
            _step(failures, f"export {d.export}", _del_export, qmp, d.export)
    if not any(e.startswith("lbe-") for e in exports - {d.export for d in disks}):
        _step(failures, "NBD server", _stop_server, qmp)
    jobs = {j["device"] for j in _try(qmp, "query-block-jobs", failures, default=[])}
    for d in disks:
        if d.job in jobs:
            _step(failures, f"job {d.job}", _cancel_job, qmp, d.job)
        nodes = _try(qmp, "query-named-block-nodes", failures, default=[], flat=True)
        if any(n.get("node-name") == d.node for n in nodes):
            _step(failures, f"node {d.node}", qmp.cmd, "blockdev-del", **{"node-name": d.node})
        for name in d.frozen:
            _step(failures, f"bitmap {name}", qmp.cmd, "block-dirty-bitmap-remove", node=d.disk.node, name=name)
        if d.disk_id in done:
            for g in d.freeze.frozen:
                name = bitmaps.bitmap_name(d.disk_id, g)
                _step(failures, f"bitmap {name}", qmp.cmd, "block-dirty-bitmap-remove", node=d.disk.node, name=name)
        try:
            d.scratch.unlink(missing_ok=True)
        except OSError as exc:
            failures.append(f"scratch {d.scratch}: {exc.strerror}")
    return failures


# --- steps -----------------------------------------------------------------------------------
def _scratch_image(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    proc = subprocess.run([find_tool(QEMU_IMG), "create", "-q", "-f", "qcow2", str(path), str(size)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise SourceError(f"cannot create the fleecing scratch image {path}: {proc.stderr.strip()}", path=str(path))


def _start_server(qmp: Qmp, socket_path: Path) -> None:
    socket_path.unlink(missing_ok=True)
    try:
        qmp.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": str(socket_path)}})
    except SourceError as exc:
        if "already running" not in str(exc):
            raise
        others = [e["id"] for e in qmp.cmd("query-block-exports") if not str(e["id"]).startswith("lbe-")]
        if others:
            raise SourceError(
                f"QEMU at {qmp.socket_path} already runs an NBD server exporting {others} (another backup "
                "tool?); Lifeboat needs the VM's NBD server while it reads", socket=qmp.socket_path,
            ) from exc  # fmt: skip
        qmp.cmd("nbd-server-stop")  # a server a killed run of ours left behind
        qmp.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": str(socket_path)}})


def _stop_server(qmp: Qmp) -> None:
    try:
        qmp.cmd("nbd-server-stop")
    except SourceError as exc:
        if "not running" not in str(exc):
            raise


def _del_export(qmp: Qmp, export_id: str) -> None:
    qmp.cmd("block-export-del", id=export_id, mode="hard")
    qmp.wait_until(f"export {export_id} to go",
                   lambda: all(e["id"] != export_id for e in qmp.cmd("query-block-exports")))  # fmt: skip


def _cancel_job(qmp: Qmp, job: str) -> None:
    qmp.cmd("block-job-cancel", device=job, force=True)
    qmp.wait_until(f"job {job} to end", lambda: all(j["device"] != job for j in qmp.cmd("query-block-jobs")))


def _step(failures: list[str], what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except SourceError as exc:
        failures.append(f"{what}: {exc}")


def _try(qmp: Qmp, command: str, failures: list[str], *, default: Any, **args: Any) -> Any:
    try:
        return qmp.cmd(command, **args)
    except SourceError as exc:
        failures.append(f"{command}: {exc}")
        return default


def _quietly(fn: Any, *args: Any, **kwargs: Any) -> None:
    try:
        fn(*args, **kwargs)
    except SourceError as exc:
        log.warning("cleanup step failed: %s", exc)
