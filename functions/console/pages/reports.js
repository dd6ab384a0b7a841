// Reports: RPO compliance over a period (a timeline per plan: achieved RPO peaks against the
// target line, breach bands), recovery readiness (ages from the API's clock) and storage
// (bars per machine with the reduction ratio), each with a CSV download. Charts are inline SVG.
import { h, get, api, table, badge, when, bytes, seconds, fill, busy, announce } from "../lib.js";

const PERIODS = [[7, "Last 7 days"], [30, "Last 30 days"], [90, "Last 90 days"], [365, "Last 365 days"]];
const DAY_MS = 86400000;

export async function renderReports(main, _params, ctx) {
  const periodSel = h("select#reports-period", PERIODS.map(([d, label]) => h("option", { value: String(d), selected: d === 30 }, label)));
  const rpoBox = h("section.card", { "aria-labelledby": "rep-rpo" });
  const readyBox = h("section.card", { "aria-labelledby": "rep-ready" });
  const storeBox = h("section.card", { "aria-labelledby": "rep-storage" });
  main.append(h("h1", "Reports"), rpoBox, readyBox, storeBox);

  // the readiness report carries the API's clock: periods end there, not at this browser's now
  const readiness = await get("/reports/readiness");
  if (!ctx.alive) return;
  const end = new Date(readiness.generated_at);

  async function showCompliance() {
    const days = Number(periodSel.value);
    const query = `start=${encodeURIComponent(new Date(end - days * DAY_MS).toISOString())}&end=${encodeURIComponent(end.toISOString())}`;
    const doc = await get(`/reports/rpo-compliance?${query}`);
    if (!ctx.alive) return;
    fill(rpoBox,
      h("div.page-head", h("h2#rep-rpo", "RPO compliance"),
        h("div.field.inline", h("label", { htmlFor: "reports-period" }, "Period"), periodSel),
        download("rpo-compliance", `/reports/rpo-compliance?${query}&format=csv`)),
      h("p.hint", `From ${stamp(doc.period_start)} to ${stamp(doc.period_end)} UTC. `
        + "A plan is breached while any of its machines' newest point is older than the RPO."),
      doc.plans.length ? doc.plans.map(planCompliance) : h("p.empty", "No protecting plan."));
  }
  periodSel.addEventListener("change", () => busy(periodSel, showCompliance));
  await showCompliance();

  fill(readyBox,
    h("div.page-head", h("h2#rep-ready", "Recovery readiness"), download("readiness", "/reports/readiness?format=csv")),
    h("p.hint", `Only test recoveries count; a successful test older than ${readiness.stale_after_days} days is stale.`),
    table([
      ["Plan", (p) => `${p.plan_name} (${p.plan_id})`],
      ["State", (p) => badge(p.state, { ready: "met", stale: "warning", "never-tested": "pending", failed: "failed" }[p.state])],
      ["Last successful test", (p) => (p.last_success ? [when(p.last_success.finished_at), ` (${seconds(p.last_success.age_seconds)} ago)`] : "never")],
      ["Last failed test", (p) => (p.last_failure ? [when(p.last_failure.finished_at), ` (${seconds(p.last_failure.age_seconds)} ago)`] : "–")],
      ["RTO", (p) => seconds(p.rto_seconds)],
      ["Stages", (p) => p.stages.map((s) => `${s.stage} ${seconds(s.seconds)}`).join(", ") || "–"],
      ["Why", (p) => p.reason],
    ], readiness.plans, { caption: "Readiness per plan", empty: "No protecting plan." }));

  const storage = await get("/reports/storage");
  if (!ctx.alive) return;
  fill(storeBox,
    h("div.page-head", h("h2#rep-storage", "Storage"), download("storage", "/reports/storage?format=csv")),
    storageBars(storage.machines),
    table([
      ["Repository (site)", (r) => r.site_id],
      ["Points", (r) => String(r.points)],
      ["Protected", (r) => bytes(r.protected_bytes)],
      ["Logical (all points)", (r) => bytes(r.logical_bytes)],
      ["Stored", (r) => bytes(r.stored_bytes)],
      ["Reduction", (r) => ratio(r.reduction_ratio)],
      ["Compression", (r) => ratio(r.compression_ratio)],
    ], [...storage.repositories, { ...storage.total, site_id: "Total" }], { caption: "Repositories" }),
    storage.total.unrecorded_points
      ? h("p.hint", `${storage.total.unrecorded_points} point(s) were written before nodes recorded stored bytes: they add nothing to "Stored".`)
      : null);
}

const stamp = (t) => new Date(t).toISOString().slice(0, 16).replace("T", " ");
const ratio = (r) => (r === null || r === undefined ? "–" : `${r.toFixed(1)}x`);

function download(name, path) {
  return h("button.secondary", {
    type: "button",
    onclick: (ev) => busy(ev.target, async () => {
      const text = await api("GET", path, undefined, { raw: true });
      const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
      const a = h("a", { href: url, download: `${name}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
      announce("CSV downloaded.");
    }),
  }, "Download CSV");
}

function planCompliance(p) {
  const pct = p.percent_within_target === null ? "–" : `${p.percent_within_target.toFixed(2)}%`;
  const open = p.breaches.filter((b) => b.open).length;
  return h("div.plan-compliance", { "data-plan": p.plan_id },
    h("h3", `${p.plan_name} (${p.plan_id})`),
    h("p", `${pct} of the period within the RPO of ${seconds(p.target_seconds)}; ${p.breaches.length} breach(es)`
      + `${open ? ", one still open" : ""}. Achieved RPO p50 ${seconds(p.achieved.p50_seconds)}, p90 ${seconds(p.achieved.p90_seconds)}, `
      + `p99 ${seconds(p.achieved.p99_seconds)}, max ${seconds(p.achieved.max_seconds)}.`),
    timeline(p),
    p.breaches.length ? table([
      ["Breach start", (b) => when(b.start)],
      ["End", (b) => (b.open ? "open" : when(b.end))],
      ["Duration", (b) => seconds(b.seconds)],
      ["Machines", (b) => b.machines.join(", ")],
    ], p.breaches, { caption: `Breaches of ${p.plan_id}` }) : null);
}

function timeline(p) {
  const W = 1000;
  const H = 170;
  const left = 46;
  const top = 12;
  const bottom = H - 22;
  const t0 = new Date(p.period_start).getTime();
  const t1 = new Date(p.period_end).getTime();
  if (!(t1 > t0)) return h("p.empty", "The plan did not exist in this period.");
  const peak = Math.max(p.target_seconds * 1.5, ...p.timeline.map((b) => b.max_age_seconds));
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - 8);
  const y = (s) => bottom - (Math.min(s, peak) / peak) * (bottom - top);
  const width = p.timeline.length ? (W - left - 8) / p.timeline.length : 0;
  const label = `Achieved RPO of ${p.plan_id}: peaks per interval against the ${seconds(p.target_seconds)} target; `
    + `${p.breaches.length} breach interval(s) shaded.`;
  return h("figure.chart",
    h("svg.rpo-timeline", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
      h("title", label),
      p.breaches.map((b) => h("rect.breach-band", {
        x: x(new Date(b.start).getTime()).toFixed(1), y: top,
        width: Math.max(1, x(new Date(b.end).getTime()) - x(new Date(b.start).getTime())).toFixed(1), height: bottom - top,
      }, h("title", `breach ${b.start} – ${b.open ? "open" : b.end}`))),
      p.timeline.map((b, i) => h(`rect.age-bar${b.max_age_seconds > p.target_seconds ? ".over" : ""}`, {
        x: (left + i * width + 0.5).toFixed(1), y: y(b.max_age_seconds).toFixed(1),
        width: Math.max(0.5, width - 1).toFixed(1), height: (bottom - y(b.max_age_seconds)).toFixed(1),
      })),
      h("line.target-line", { x1: left, x2: W - 8, y1: y(p.target_seconds), y2: y(p.target_seconds) }),
      h("text.axis-label", { x: 2, y: y(p.target_seconds) + 3 }, "RPO"),
      h("text.axis-label", { x: 2, y: top + 8 }, seconds(peak)),
      h("line.axis", { x1: left, y1: bottom, x2: W - 8, y2: bottom }),
      h("text.axis-label", { x: left, y: H - 6 }, stamp(t0)),
      h("text.axis-label", { x: W - 8, y: H - 6, "text-anchor": "end" }, stamp(t1))),
    h("figcaption", "Bars: the oldest a machine's newest point got in each interval. Line: the RPO. Shaded: breaches."));
}

function storageBars(machines) {
  if (!machines.length) return h("p.empty", "No recovery point yet.");
  const W = 1000;
  const row = 34;
  const left = 170;
  const H = machines.length * row + 10;
  const max = Math.max(1, ...machines.map((m) => m.logical_bytes));
  const len = (n) => Math.max(n ? 1 : 0, (n / max) * (W - left - 150));
  const label = `Storage per machine: logical data of all points against bytes stored, ${machines.length} machine(s).`;
  return h("figure.chart",
    h("svg.storage-bars", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
      h("title", label),
      machines.map((m, i) => h("g", { "data-machine": m.machine_id },
        h("text.axis-label", { x: 2, y: i * row + 16 }, `${m.plan_id}/${m.machine_id}`),
        h("rect.logical-bar", { x: left, y: i * row + 4, width: len(m.logical_bytes).toFixed(1), height: 12 },
          h("title", `logical ${bytes(m.logical_bytes)}`)),
        h("rect.stored-bar", { x: left, y: i * row + 18, width: len(m.stored_bytes).toFixed(1), height: 12 },
          h("title", `stored ${bytes(m.stored_bytes)}`)),
        h("text.axis-label", { x: left + len(m.logical_bytes) + 6, y: i * row + 14 }, bytes(m.logical_bytes)),
        h("text.axis-label.ratio", { x: left + len(m.stored_bytes) + 6, y: i * row + 28 },
          `${bytes(m.stored_bytes)} stored · ${ratio(m.reduction_ratio)} reduction`)))),
    h("figcaption", "Per machine: logical data of all its points (light) and the bytes stored for them after deduplication and compression (dark)."));
}
