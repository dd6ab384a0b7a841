"""The failback job on a node (shared/services/failback.py builds its params).

1. Refuse before touching anything when an origin disk is not reachable or not allowed.
2. Pause the recovered machines (QMP ``stop``): nothing they write after this is lost.
3. Final reverse incremental of the paused machines (the job context's replication).
4. Write each origin disk back to its reverse point, only the blocks that differ.
5. Remove the recovered machines (the failover's resources), like a test cleanup.

A failure before step 5 resumes the recovered machines, which stay the live copy; a
cleanup problem in step 5 is reported in the result and does not undo the failback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from functions.recovery.local_runner import RecoveryFlowError, run_cleanup
from functions.recovery.ports import RecoveryPorts
from node_runtime.agent import JobContext, JobOutcome
from node_runtime.recovery.failback import FailbackResult, failback_disk
from node_runtime.sources.files import check_allowed
from node_runtime.sources.kvm.qmp import Qmp
from shared.errors import LifeboatError, PermissionDeniedError, SourceError
from shared.repo.repository import Repository

log = logging.getLogger("lifeboat.failback")


def _check_origins(params: dict[str, Any], ctx: JobContext) -> None:
    policy = ctx.source_policy
    for m in params["machines"]:
        for d in m["disks"]:
            origin = d["origin"]
            if m.get("vm"):
                if not policy.may_read_site(str(params.get("origin_site_id", ""))):
                    raise PermissionDeniedError(f"this node may not write the VMs of site {params.get('origin_site_id')} "
                                                "(start it with --source-site)")  # fmt: skip
            else:
                check_allowed(origin, policy.allowed_roots)
            if not Path(origin).exists():
                raise SourceError(f"failback refused: the origin disk {origin} of {d['disk_id']} is not reachable "
                                  "from this node", path=origin)  # fmt: skip


def _qmp_each(sockets: list[str], command: str) -> list[str]:
    done: list[str] = []
    for sock in sockets:
        with Qmp(sock) as qmp:
            qmp.cmd(command)
        done.append(sock)
    return done


def _resume(paused: list[str]) -> None:
    for sock in paused:
        try:
            _qmp_each([sock], "cont")
        except SourceError as exc:
            log.error("could not resume recovered machine at %s: %s", sock, exc)


def failback_job(job: dict[str, Any], ctx: JobContext, *, ports: Callable[[], RecoveryPorts],
                 open_repository: Callable[[str, str | None], Repository]) -> JobOutcome:  # fmt: skip
    params = job["params"]
    result: dict[str, Any] = {}
    paused: list[str] = []
    try:
        _check_origins(params, ctx)
        ctx.message(f"pausing {len(params['pause'])} recovered machine(s)")
        paused = _qmp_each(params["pause"], "stop")
        ctx.message("final reverse incremental of the paused machines")
        result["replication"] = ctx.replicate(params["final_replication"])
        reverse = {d["disk_id"]: d["point_id"] for m in result["replication"]["machines"] for d in m["disks"]}
        repo = open_repository(params["final_replication"]["repository_url"],
                               params["final_replication"].get("credentials_ref"))  # fmt: skip
        machines, written = [], []
        for m in params["machines"]:
            disks, times = [], []
            for d in m["disks"]:
                ctx.message(f"writing {d['disk_id']} back into {d['origin']}")
                point = repo.read_point(d["reverse_disk_id"], reverse[d["reverse_disk_id"]])
                r = failback_disk(repo, disk_id=d["disk_id"], reverse=point, origin=d["origin"],
                                  verify=bool(params.get("verify")), scratch_dir=ctx.source_policy.scratch_dir)  # fmt: skip
                disks.append({"disk_id": d["disk_id"], "point_id": r.point.id, "disk_size": r.point.disk_size,
                              "read": "failback", "change_token": r.point.change_token})  # fmt: skip
                written.append(_summary(d["disk_id"], r))
                times.append(r.point.time)
            machines.append({"machine_id": m["machine_id"], "time": max(times).isoformat(), "disks": disks})
        result["failback"] = {"machines": machines, "written": written}
    except LifeboatError as exc:
        _resume(paused)
        return JobOutcome("failed", result, f"failback failed, the recovered machines keep running: {exc}")
    if not params.get("cleanup", {}).get("target"):
        return JobOutcome("succeeded", result)
    ctx.message("removing the recovered machines")
    try:  # the origin holds the data now: a cleanup problem is reported, it does not undo the failback
        outcome = run_cleanup(params["cleanup"], ports())
        result["cleanup"] = outcome.model_dump(mode="json")
        if outcome.failed:
            ctx.message(f"failed back; {len(outcome.failed)} recovered resource(s) could not be deleted")
    except (LifeboatError, RecoveryFlowError) as exc:
        result["cleanup_error"] = str(exc)
        ctx.message(f"failed back; removing the recovered machines failed: {exc}")
    return JobOutcome("succeeded", result)


def _summary(disk_id: str, r: FailbackResult) -> dict[str, Any]:
    return {"disk_id": disk_id, "point_id": r.point.id, "blocks": r.blocks, "written_blocks": r.written_blocks,
            "written_bytes": r.written_bytes, "changed_blocks": r.changed_blocks, "dirty_blocks": r.dirty_blocks,
            "diverged_blocks": r.diverged_blocks, "verified": r.verified}  # fmt: skip
