"""CLI of the sites with an inventory: ``lifeboat sites vcenter`` (vmware), ``lifeboat sites kvm``
(kvm) and ``lifeboat inventory sync|list|show|machine`` (both)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.control import JsonOpt, _show, client, err, out
from shared.errors import InvalidInputError, SourceError

TERMINAL = {"succeeded", "failed", "cancelled"}


def _wait(job_id: str, timeout: float) -> dict[str, Any]:
    c = client()
    deadline = time.monotonic() + timeout
    while True:
        job = c.job(job_id)
        if job["state"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            raise SourceError(f"job {job_id} still {job['state']} after {timeout:.0f}s")
        time.sleep(1.0)


def _report_sync(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(job, default=str))
    if job["state"] != "succeeded":
        errors = job.get("errors") or ["no details"]
        raise SourceError(f"inventory sync {job['id']} {job['state']}: {errors[-1]}")
    if not as_json:
        r = job.get("result") or {}
        out.print(f"inventory synced: {r.get('vms', 0)} VMs present, {r.get('missing', 0)} items marked missing")
        unreachable = r.get("unreachable") or []  # a kvm site's sockets that did not answer
        if unreachable:
            out.print(f"{len(unreachable)} QMP socket(s) did not answer: " + "; ".join(unreachable),
                      markup=False, highlight=False)  # fmt: skip


def _set_and_sync(path: str, body: dict[str, Any], site_id: str, *, wait: bool, timeout: float, as_json: bool) -> None:
    """PUT a site's connection, then (``wait``) follow the inventory sync it queued."""
    site = client().request("PUT", path, body)
    job = site["sync_job"]
    if not wait:
        out.print_json(json.dumps(site, default=str)) if as_json else out.print(f"sync job {job['id']} queued")
        return
    err.print(f"site {site_id} connected; syncing inventory (job {job['id']})")
    _report_sync(_wait(job["id"], timeout), as_json)


def register(app: typer.Typer, sites: typer.Typer) -> None:
    @sites.command("vcenter")
    def sites_vcenter(
        site_id: str,
        url: Annotated[str, typer.Option(help="https://vcenter.example.com/sdk")],
        username: Annotated[str, typer.Option()],
        thumbprint: Annotated[
            str | None, typer.Option(help="Pin the vCenter certificate (SHA-256 hex, ':' allowed).")
        ] = None,
        ca_file: Annotated[Path | None, typer.Option(help="Trust the CA certificates in this PEM file.")] = None,
        insecure: Annotated[bool, typer.Option("--insecure", help="Skip certificate checks (labs only).")] = False,
        quiesce: Annotated[bool, typer.Option("--quiesce", help="Quiesced snapshots when Tools run.")] = False,
        wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the first inventory sync.")] = True,
        timeout: Annotated[float, typer.Option(min=1)] = 600.0,
        as_json: JsonOpt = False,
    ) -> None:
        """Connect a vmware site to its vCenter/ESXi (password from LIFEBOAT_VCENTER_PASSWORD
        or a prompt; it is sealed by the control plane and never shown again), then sync."""
        password = os.environ.get("LIFEBOAT_VCENTER_PASSWORD") or typer.prompt("vCenter password", hide_input=True)
        tls: dict[str, Any] = {"insecure": insecure}
        if thumbprint:
            tls["thumbprint"] = thumbprint
        if ca_file:
            try:
                tls["ca_pem"] = ca_file.read_text()
            except OSError as exc:
                raise InvalidInputError(f"cannot read {ca_file}: {exc.strerror}") from exc
        body = {"url": url, "username": username, "password": password, "tls": tls, "quiesce": quiesce}
        _set_and_sync(f"/sites/{site_id}/vcenter", body, site_id, wait=wait, timeout=timeout, as_json=as_json)

    @sites.command("kvm")
    def sites_kvm(
        site_id: str,
        qmp_socket: Annotated[
            list[str] | None,
            typer.Option("--qmp-socket", help="A VM's QMP unix socket on the node's host (repeat: one per VM)."),
        ] = None,
        clear: Annotated[bool, typer.Option("--clear", help="Forget the site's QMP sockets (the inventory stays).")] = False,
        wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the inventory sync it queues.")] = True,
        timeout: Annotated[float, typer.Option(min=1)] = 600.0,
        as_json: JsonOpt = False,
    ) -> None:
        """Give a kvm site the QMP sockets of its VMs (directly-run QEMU started with
        -qmp unix:PATH,server=on,wait=off; the paths are on the host of the node started with
        --source-site for the site), replacing the previous list, then sync its inventory
        (--no-wait: only queue the sync). --clear forgets the sockets; the inventory stays."""
        if clear == bool(qmp_socket):
            raise InvalidInputError("give either --qmp-socket PATH (one or more) or --clear")
        if clear:
            site = client().request("DELETE", f"/sites/{site_id}/kvm")
            out.print_json(json.dumps(site, default=str)) if as_json else out.print(f"forgot the QMP sockets of site {site_id}")
            return
        _set_and_sync(f"/sites/{site_id}/kvm", {"qmp_sockets": qmp_socket}, site_id, wait=wait, timeout=timeout,
                      as_json=as_json)  # fmt: skip

    inventory = typer.Typer(help="VMs discovered at vmware and kvm sites (API).", no_args_is_help=True)
    app.add_typer(inventory, name="inventory")

    @inventory.command("sync")
    def inventory_sync(
        site_id: str,
        wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
        timeout: Annotated[float, typer.Option(min=1)] = 600.0,
        as_json: JsonOpt = False,
    ) -> None:
        """Sync a vmware or kvm site's inventory now (run by a node started with --source-site for it)."""
        job = client().request("POST", f"/sites/{site_id}/inventory/sync", {})
        if not wait:
            out.print(job["id"])
            return
        _report_sync(_wait(job["id"], timeout), as_json)

    @inventory.command("list")
    def inventory_list(
        site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
        missing: Annotated[bool, typer.Option("--missing", help="Only VMs the last sync did not see.")] = False,
        objects: Annotated[
            str | None,
            typer.Option(help="List other objects instead (vmware sites): datacenter|cluster|host|datastore|network."),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """VMs (or other objects) of the inventory."""
        params = {"site_id": site} if site else {}
        if objects:
            rows = client().pages("/inventory/objects", {**params, "object_type": objects})
            _show(rows, ["id", "object_type", "name", "parent", "state"], as_json)
            return
        rows = client().pages("/inventory/vms", {**params, **({"state": "missing"} if missing else {})})
        for r in rows:
            r["disks_n"] = len(r.get("disks", []))
            r["memory"] = f"{r.get('memory_mb', 0)} MB"
        _show(rows, ["id", "name", "power_state", "cpus", "memory", "disks_n", "cbt_enabled", "state"], as_json)

    @inventory.command("show")
    def inventory_show(vm_id: str) -> None:
        """One inventory VM, with its NICs and disks (the device keys plans name; on KVM a disk's position)."""
        out.print_json(json.dumps(client().request("GET", f"/inventory/vms/{vm_id}")))

    @inventory.command("machine")
    def inventory_machine(
        vm_id: str, machine_id: Annotated[str | None, typer.Option(help="Machine id in the plan.")] = None
    ) -> None:
        """Print the plan machine for an inventory VM (paste it into a plan's "machines")."""
        body = {"machine_id": machine_id} if machine_id else {}
        out.print_json(json.dumps(client().request("POST", f"/inventory/vms/{vm_id}/machine", body)))
