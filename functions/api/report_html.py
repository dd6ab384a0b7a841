"""A recovery report as one self-contained HTML page (no external assets; prints well)."""

from __future__ import annotations

import html
from datetime import datetime
from typing import TypeVar

from shared.domain.recovery import MachineReport, RecoveryReport

T = TypeVar("T", dict, list)

_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;"
    "text-align:left;vertical-align:top}.ok{color:#17692c}.bad{color:#a4161a}pre{background:#f4f4f4;"
    "padding:.6em;white-space:pre-wrap;max-width:70em}.bar{background:#4a7bd0;height:.8em;display:inline-block}"
)


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _t(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def _machine(report: RecoveryReport, m: MachineReport) -> str:
    cls = "ok" if m.status == "recovered" else "bad"
    longest = max([s.seconds for s in m.stages] + [0.001])
    stages = "".join(
        f"<tr><td>{_e(s.stage)}</td><td>{_t(s.started_at)}</td><td>{_s(s.seconds)}</td>"
        f"<td><span class=bar style='width:{max(1, round(12 * s.seconds / longest))}em'></span></td>"
        f"<td class={'ok' if s.ok else 'bad'}>{'ok' if s.ok else 'failed'}</td></tr>"
        for s in m.stages
    )
    parts = [
        f"<h3 id='m-{_e(m.machine_id)}'>{_e(m.name)} <small>({_e(m.machine_id)})</small> "
        f"<span class={cls}>{_e(m.status)}</span></h3>",
        f"<p>Point {_e(m.recovery_point_id)} at {_t(m.point_time)}; instance {_e(m.instance_id or '-')}; "
        f"addresses {_e(', '.join(m.addresses) or '-')}; RTO {_s(m.rto_seconds)}.</p>",
        "<table><tr><th>stage</th><th>started</th><th>took</th><th></th><th>result</th></tr>"
        + stages
        + "</table>",
    ]
    if m.error:
        parts.append(f"<p class=bad>Failed at <b>{_e(m.failed_stage)}</b>: {_e(m.error)}</p>")
    if m.cleanup:
        parts.append(
            f"<p>Compensation: deleted {len(m.cleanup.deleted)}, already gone {len(m.cleanup.already_gone)}, "
            f"failed {len(m.cleanup.failed)} {_e('; '.join(m.cleanup.failed))}</p>"
        )
    findings = m.os.get("findings") or []
    if findings:
        parts.append("<p>OS preparation:</p>" + _findings(findings))
    parts.append(_guest(m.os.get("guest")))
    if m.evidence:
        verdict = "passed" if m.evidence.ok else f"failed: {m.evidence.reason}"
        parts.append(
            f"<p>Validation ({_e(m.evidence.method)}) {_e(verdict)} after {_s(m.evidence.seconds)}:</p>"
            f"<pre>{_e(m.evidence.excerpt)}</pre>"
        )
    return "".join(parts)


def _findings(findings: list[dict[str, object]]) -> str:
    return (
        "<ul>"
        + "".join(f"<li>{_e(f.get('severity'))}: {_e(f.get('message'))}</li>" for f in findings)
        + "</ul>"
    )


def _as(value: object, kind: type[T]) -> T:
    return value if isinstance(value, kind) else kind()


def _guest(guest: dict[str, object] | None) -> str:
    """The Prep Node's part: the OS it found, its findings, and every change with its status."""
    if not guest:
        return ""
    os = _as(guest.get("os"), dict)
    name = " ".join(str(os[k]) for k in ("product", "edition") if os.get(k) not in (None, "unknown"))
    verdict = "refused: nothing was changed" if guest.get("refused") else (
        "changes applied" if guest.get("applied") else "nothing to change")  # fmt: skip
    out = [
        f"<p>Guest preparation for {_e(guest.get('target'))}: {_e(os.get('type'))} {_e(name)}; {_e(verdict)}.</p>"
    ]
    findings = _as(guest.get("findings"), list)
    if findings:
        out.append(_findings(findings))
    changes = _as(guest.get("changes"), list)
    if changes:
        rows = "".join(
            f"<tr><td class={'bad' if c.get('status') == 'failed' else 'ok'}>{_e(c.get('status'))}</td>"
            f"<td>{_e(c.get('code'))}</td><td>{_e(c.get('where'))}</td>"
            f"<td>{_e(c.get('before'))} &rarr; {_e(c.get('after'))}</td>"
            f"<td>{_e(c.get('reason'))}{'<br>' + _e(c.get('error')) if c.get('error') else ''}</td></tr>"
            for c in changes
        )
        out.append("<table><tr><th>status</th><th>change</th><th>where</th><th>before &rarr; after</th>"
                   f"<th>why</th></tr>{rows}</table>")  # fmt: skip
    return "".join(out)


def render_report_html(report: RecoveryReport) -> str:
    cls = {"succeeded": "ok", "partial": "bad", "failed": "bad"}[report.state]
    order = "".join(
        f"<tr><td>{g.order + 1}</td><td>{_e(g.name)}</td><td>{g.delay_seconds} s</td><td>{_t(g.started_at)}</td>"
        f"<td>{_e(', '.join(m.machine_id for m in g.machines))}</td></tr>"
        for g in report.groups
    )
    body = [
        f"<h1>Recovery {_e(report.id)}: <span class={cls}>{_e(report.state)}</span></h1>",
        f"<p>Plan {_e(report.plan_name or report.plan_id)} ({_e(report.plan_id)}), mode <b>{_e(report.mode)}</b>, "
        f"platform {_e(report.platform)}. Started {_t(report.started_at)}, finished {_t(report.finished_at)}; "
        f"measured RTO {_s(report.rto_seconds)}. Cleanup: {_e(report.cleanup_state)}.</p>",
        "<p>" + "<br>".join(_e(n) for n in report.notes) + "</p>",
        "<h2>Boot order</h2><table><tr><th>#</th><th>group</th><th>delay</th><th>started</th><th>machines</th></tr>"
        + order
        + "</table>",
    ]
    if report.errors:
        body.append(
            "<h2>Errors</h2><ul>" + "".join(f"<li class=bad>{_e(e)}</li>" for e in report.errors) + "</ul>"
        )
    body.append("<h2>Machines</h2>")
    body += [_machine(report, m) for m in report.machines()]
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>Lifeboat recovery {_e(report.id)}</title><style>{_STYLE}</style>" + "".join(body) + "</html>"
    )
