// Dashboard: per-plan protection and RPO (from GET /reports/rpo), running jobs, open alerts,
// and a throughput chart of running jobs' progress.rate_bps, sampled while the page is open.
import { h, get, table, badge, when, rate, bytes, seconds, isoDuration, fill } from "../lib.js";

const samples = []; // [time ms, total bytes/s], kept across visits of the page
const MAX_SAMPLES = 60;

export async function renderDashboard(main, _params, ctx) {
  const plansBox = h("section.card", { "aria-labelledby": "dash-plans" });
  const jobsBox = h("section.card", { "aria-labelledby": "dash-jobs" });
  const alertsBox = h("section.card", { "aria-labelledby": "dash-alerts" });
  const chartBox = h("section.card", { "aria-labelledby": "dash-chart" });
  main.append(h("h1", "Dashboard"), h("div.grid", plansBox, jobsBox, chartBox, alertsBox));

  async function refresh() {
    const [plans, rpo, running, alerts] = await Promise.all([
      get("/plans?limit=500"), get("/reports/rpo"), get("/jobs?state=running&limit=100"), get("/alerts?state=open"),
    ]);
    if (!ctx.alive) return;
    const byPlan = Object.fromEntries(rpo.plans.map((p) => [p.plan_id, p]));
    fill(plansBox, h("h2#dash-plans", "Protection and RPO"), table([
      ["Plan", (p) => h("a", { href: `#/points?plan=${encodeURIComponent(p.id)}` }, p.name)],
      ["Protection", (p) => badge(p.state)],
      ["RPO", (p) => (byPlan[p.id] ? badge(byPlan[p.id].state) : "–")],
      ["Target", (p) => `${p.rpo_minutes} min`],
      ["Current lag", (p) => {
        const s = byPlan[p.id];
        if (!s) return "–";
        const lag = isoDuration(s.worst_lag);
        return lag === null ? "not replicated yet" : seconds(lag);
      }],
    ], plans.items, { empty: "No plans yet: create one in Plans." }));

    fill(jobsBox, h("h2#dash-jobs", `Running jobs (${running.items.length})`), table([
      ["Job", (j) => h("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id)],
      ["Kind", (j) => j.job_kind],
      ["Plan", (j) => j.plan_id || "–"],
      ["Progress", (j) => `${bytes(j.progress.bytes_done)} / ${bytes(j.progress.bytes_total)}`],
      ["Rate", (j) => rate(j.progress.rate_bps)],
    ], running.items, { empty: "No job is running." }));

    fill(alertsBox, h("h2#dash-alerts", `Open alerts (${alerts.items.length})`), table([
      ["Severity", (a) => badge(a.severity)],
      ["Kind", (a) => a.alert_kind],
      ["Plan", (a) => a.plan_id || "–"],
      ["Message", (a) => a.message],
      ["Raised", (a) => when(a.raised_at)],
    ], alerts.items, { empty: "No open alert." }));

    samples.push([Date.now(), running.items.reduce((sum, j) => sum + (j.progress.rate_bps || 0), 0)]);
    while (samples.length > MAX_SAMPLES) samples.shift();
    fill(chartBox, h("h2#dash-chart", "Throughput"), chart(samples));
  }
  await refresh();
  ctx.every(refresh, 2000);
}

function chart(points) {
  const W = 360;
  const H = 120;
  const max = Math.max(1, ...points.map((p) => p[1]));
  const now = points.length ? points[points.length - 1][1] : 0;
  const coords = points.map((p, i) => {
    const x = points.length > 1 ? (i / (points.length - 1)) * (W - 10) + 5 : W / 2;
    const y = H - 10 - (p[1] / max) * (H - 30);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const label = `Replication throughput over the last ${points.length} samples; now ${rate(now)}, peak ${rate(max === 1 ? 0 : max)}.`;
  return h("figure.chart",
    h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "throughput" },
      h("title", label),
      h("line.axis", { x1: 5, y1: H - 10, x2: W - 5, y2: H - 10 }),
      h("text.axis-label", { x: 5, y: 14 }, `peak ${rate(max === 1 ? 0 : max)}`),
      points.length ? h("polyline.series", { points: coords.join(" ") }) : null),
    h("figcaption", `Now: ${rate(now)} (sum of running jobs' rates, sampled every 2 s)`));
}
