"""CLI commands of the failback cycle: ``lifeboat plans reverse-protect|failback|failback-status``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.control import JsonOpt, _show, client, out


def register(plans: typer.Typer) -> None:
    """Add the failback commands to ``lifeboat plans``."""

    @plans.command("reverse-protect")
    def reverse_protect(plan_id: str) -> None:
        """After a failover: replicate the recovered machines into the repository now (and every RPO after)."""
        out.print_json(json.dumps(client().request("POST", f"/plans/{plan_id}/reverse-protect")))

    @plans.command("failback")
    def failback(
        plan_id: str,
        verify: Annotated[bool, typer.Option(
            "--verify", help="Hash every origin block the points say is unchanged and rewrite those that differ "
            "(needed for a raw origin image or a removed bitmap).")] = False,
    ) -> None:  # fmt: skip
        """Pause the recovered machines, take a final reverse incremental, write only the differing blocks into
        the origin disks, remove the recovered machines and resume forward protection. Shut the origin VMs down first."""
        out.print_json(json.dumps(client().request("POST", f"/plans/{plan_id}/failback", {"verify": verify})))

    @plans.command("failback-status")
    def failback_status(plan_id: str, as_json: JsonOpt = False) -> None:
        """The plan's failback cycle: phase, recovered machines, reverse lineages and history."""
        record = client().request("GET", f"/plans/{plan_id}/failback")
        if as_json:
            out.print_json(json.dumps(record))
            return
        out.print(f"plan {plan_id}: [bold]{record['phase']}[/] (cycle {record['cycle']}, {record['platform']})")
        if record.get("unsupported"):
            out.print(f"[yellow]reverse protection not possible:[/] {record['unsupported']}")
        if record.get("last_error"):
            out.print(f"[red]last error:[/] {record['last_error']}")
        rows = [{"machine": m["machine_id"], "disk": d["disk_id"], "reverse lineage": d["reverse_disk_id"],
                 "origin": d["origin"] or "?"} for m in record["machines"] for d in m["disks"]]  # fmt: skip
        _show(rows, ["machine", "disk", "reverse lineage", "origin"], False)
        _show(record["history"], ["at", "phase", "actor", "job_id", "note"], False)
