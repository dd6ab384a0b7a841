"""The reports as CSV (RFC 4180: a header row, CRLF line ends, quoting by the csv module).

One row per plan and per machine (RPO compliance), per plan (readiness), per disk, machine,
repository and the total (storage). Times are ISO 8601, durations seconds, sizes bytes;
an empty cell is "none" (no sample, never tested, nothing stored). Text that a spreadsheet
would read as a formula (starting with ``= + - @``, a tab or CR: a plan's name, a reason)
gets a leading ``'``."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from shared.policies.readiness import PlanReadiness
from shared.policies.rpo_compliance import AchievedRpo, BreachInterval, PlanCompliance
from shared.policies.storage_report import StorageFigures, StorageReport

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, str) and v.startswith(_FORMULA):
        return "'" + v  # a spreadsheet must not run a plan name as a formula (CSV injection)
    return v


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)  # excel dialect: RFC 4180 quoting and CRLF line ends
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue()


def _intervals(breaches: Sequence[BreachInterval]) -> str:
    """ISO 8601 intervals ``start/end``, space-separated."""
    return " ".join(f"{b.start.isoformat()}/{b.end.isoformat()}" for b in breaches)


def _achieved(a: AchievedRpo) -> list[Any]:
    return [a.samples, a.p50_seconds, a.p90_seconds, a.p99_seconds, a.max_seconds]


COMPLIANCE_HEADER = [
    "plan_id",
    "machine_id",
    "plan_name",
    "target_seconds",
    "period_start",
    "period_end",
    "percent_within_target",
    "breached_seconds",
    "breaches",
    "open_breach",
    "samples",
    "p50_seconds",
    "p90_seconds",
    "p99_seconds",
    "max_seconds",
    "breach_intervals",
]


def compliance_csv(plans: Sequence[PlanCompliance]) -> str:
    """A plan row (``machine_id`` empty) followed by a row per machine."""
    rows: list[list[Any]] = []
    for p in plans:
        common = [p.plan_name, p.target_seconds, p.period_start, p.period_end]
        rows.append(
            [
                p.plan_id,
                "",
                *common,
                p.percent_within_target,
                p.breached_seconds,
                len(p.breaches),
                any(b.open for b in p.breaches),
                *_achieved(p.achieved),
                _intervals(p.breaches),
            ]
        )
        for m in p.machines:
            rows.append(
                [
                    p.plan_id,
                    m.machine_id,
                    *common,
                    m.percent_within_target,
                    m.breached_seconds,
                    len(m.breaches),
                    any(b.open for b in m.breaches),
                    *_achieved(m.achieved),
                    _intervals(m.breaches),
                ]
            )
    return _csv(COMPLIANCE_HEADER, rows)


READINESS_HEADER = [
    "plan_id",
    "plan_name",
    "state",
    "reason",
    "tests",
    "last_success_at",
    "last_success_age_seconds",
    "last_success_report",
    "last_failure_at",
    "last_failure_report",
    "rto_seconds",
    "stage_seconds",
]


def readiness_csv(plans: Sequence[PlanReadiness]) -> str:
    """One row per plan; ``stage_seconds`` is ``stage=seconds`` pairs, space-separated."""
    rows = []
    for p in plans:
        ok, bad = p.last_success, p.last_failure
        rows.append(
            [
                p.plan_id,
                p.plan_name,
                p.state,
                p.reason,
                p.tests,
                ok and ok.finished_at,
                ok and ok.age_seconds,
                ok and ok.report_id,
                bad and bad.finished_at,
                bad and bad.report_id,
                p.rto_seconds,
                " ".join(f"{s.stage}={s.seconds:g}" for s in p.stages),
            ]
        )
    return _csv(READINESS_HEADER, rows)


STORAGE_HEADER = [
    "level",
    "site_id",
    "plan_id",
    "machine_id",
    "disk_id",
    "points",
    "protected_bytes",
    "logical_bytes",
    "new_bytes",
    "stored_bytes",
    "unrecorded_points",
    "reduction_ratio",
    "compression_ratio",
]


def _figures(f: StorageFigures) -> list[Any]:
    return [
        f.points,
        f.protected_bytes,
        f.logical_bytes,
        f.new_bytes,
        f.stored_bytes,
        f.unrecorded_points,
        f.reduction_ratio,
        f.compression_ratio,
    ]


def storage_csv(report: StorageReport) -> str:
    """Rows of ``level`` disk, machine, repository, then one ``total``."""
    rows: list[list[Any]] = [
        ["disk", d.site_id, d.plan_id, d.machine_id, d.disk_id, *_figures(d)] for d in report.disks
    ]
    rows += [["machine", "", m.plan_id, m.machine_id, "", *_figures(m)] for m in report.machines]
    rows += [["repository", r.site_id, "", "", "", *_figures(r)] for r in report.repositories]
    rows.append(["total", "", "", "", "", *_figures(report.total)])
    return _csv(STORAGE_HEADER, rows)
