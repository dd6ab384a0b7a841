"""CLI commands of the reports: ``lifeboat report rpo-compliance|readiness|storage`` (API).

Tables by default, ``--json`` for the API's document, ``--csv`` for the API's CSV as is."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.control import JsonOpt, client, out

CsvOpt = Annotated[bool, typer.Option("--csv", help="Print the report as CSV (RFC 4180, a header row).")]
PlanOpt = Annotated[str | None, typer.Option("--plan", help="Only this plan.")]


def _dur(seconds: float | None) -> str:
    """Seconds as ``1d2h``, ``3h5m``, ``7m30s``; ``-`` for none."""
    if seconds is None:
        return "-"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
    used = [f"{v}{u}" for v, u in parts if v][:2]
    return "".join(used) or "0s"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.1f}x"


def _pct(p: float | None) -> str:
    return "-" if p is None else f"{p:.2f}%"


def _fetch(path: str, params: dict[str, Any], as_csv: bool, as_json: bool) -> dict[str, Any] | None:
    """The report, or None once printed as CSV or JSON."""
    c = client()
    if as_csv:
        sys.stdout.write(c.text(path, params={**params, "format": "csv"}, accept="text/csv"))
        return None
    doc: dict[str, Any] = c.request("GET", path, params=params)
    if as_json:
        out.print_json(json.dumps(doc))
        return None
    return doc


def register(app: typer.Typer) -> None:
    """Add ``lifeboat report`` to the app."""
    report = typer.Typer(
        help="Reports: RPO compliance, recovery readiness, storage (API).", no_args_is_help=True
    )
    app.add_typer(report, name="report")

    @report.command("rpo-compliance")
    def rpo_compliance(
        start: Annotated[
            str | None, typer.Option(help="Period start, ISO 8601 (default: 30 days before --end).")
        ] = None,
        end: Annotated[
            str | None, typer.Option(help="Period end, ISO 8601, exclusive (default: now).")
        ] = None,
        plan: PlanOpt = None,
        as_csv: CsvOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Per plan and machine over [start, end): share of the period within the RPO, achieved-RPO
        percentiles and every breach interval (a breach still open at the end is marked open)."""
        doc = _fetch(
            "/reports/rpo-compliance", {"start": start, "end": end, "plan_id": plan}, as_csv, as_json
        )
        if doc is None:
            return
        out.print(f"RPO compliance {doc['period_start']} to {doc['period_end']}")
        table = Table("plan", "machine", "RPO", "within target", "breaches", "p50", "p90", "p99", "max")
        breaches = Table("plan", "start", "end", "duration", "machines", "open")
        for p in doc["plans"]:
            rows = [(p, "(plan)"), *((m, m["machine_id"]) for m in p["machines"])]
            for row, name in rows:
                a = row["achieved"]
                table.add_row(
                    p["plan_id"],
                    name,
                    _dur(p["target_seconds"]),
                    _pct(row["percent_within_target"]),
                    str(len(row["breaches"])),
                    _dur(a["p50_seconds"]),
                    _dur(a["p90_seconds"]),
                    _dur(a["p99_seconds"]),
                    _dur(a["max_seconds"]),
                )
            for b in p["breaches"]:
                breaches.add_row(
                    p["plan_id"],
                    b["start"],
                    b["end"],
                    _dur(b["seconds"]),
                    ", ".join(b["machines"]),
                    "open" if b["open"] else "",
                )
        out.print(table)
        if breaches.row_count:
            out.print(breaches)

    @report.command("readiness")
    def readiness(
        plan: PlanOpt = None,
        stale_after_days: Annotated[
            int, typer.Option(min=1, max=3650, help="A successful test older than this is stale.")
        ] = 30,
        as_csv: CsvOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Per plan: the last successful (and newer failed) test recovery, its age, the last RTO and a state."""
        params = {"plan_id": plan, "stale_after_days": stale_after_days}
        doc = _fetch("/reports/readiness", params, as_csv, as_json)
        if doc is None:
            return
        table = Table("plan", "state", "last success", "age", "last failure", "RTO", "stages", "reason")
        for p in doc["plans"]:
            ok, bad = p["last_success"], p["last_failure"]
            table.add_row(
                p["plan_id"],
                p["state"],
                ok["finished_at"] if ok else "-",
                _dur(ok["age_seconds"]) if ok else "-",
                bad["finished_at"] if bad else "-",
                _dur(p["rto_seconds"]),
                " ".join(f"{s['stage']} {_dur(s['seconds'])}" for s in p["stages"]) or "-",
                p["reason"],
            )
        out.print(table)

    @report.command("storage")
    def storage(plan: PlanOpt = None, as_csv: CsvOpt = False, as_json: JsonOpt = False) -> None:
        """Per disk and repository: bytes protected, logical and stored, points, reduction ratios."""
        doc = _fetch("/reports/storage", {"plan_id": plan}, as_csv, as_json)
        if doc is None:
            return
        disks = Table(
            "plan",
            "machine",
            "disk",
            "site",
            "points",
            "protected",
            "logical",
            "stored",
            "reduction",
            "compression",
        )
        for d in doc["disks"]:
            disks.add_row(
                d["plan_id"],
                d["machine_id"],
                d["disk_id"],
                d["site_id"],
                str(d["points"]),
                _bytes(d["protected_bytes"]),
                _bytes(d["logical_bytes"]),
                _bytes(d["stored_bytes"]),
                _ratio(d["reduction_ratio"]),
                _ratio(d["compression_ratio"]),
            )
        out.print(disks)
        repos = Table(
            "repository (site)", "points", "protected", "logical", "stored", "reduction", "compression"
        )
        for r in [*doc["repositories"], {**doc["total"], "site_id": "(total)"}]:
            repos.add_row(
                r["site_id"],
                str(r["points"]),
                _bytes(r["protected_bytes"]),
                _bytes(r["logical_bytes"]),
                _bytes(r["stored_bytes"]),
                _ratio(r["reduction_ratio"]),
                _ratio(r["compression_ratio"]),
            )
        out.print(repos)
        unrecorded = doc["total"]["unrecorded_points"]
        if unrecorded:
            out.print(
                f"{unrecorded} point(s) written before nodes recorded stored bytes add nothing to 'stored'"
            )
