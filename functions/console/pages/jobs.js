// Job monitor: the list (filter by state) and one job's live detail (polls GET /jobs/{id}).
import { h, get, post, table, badge, when, bytes, rate, seconds, action, announce, busy, fill } from "../lib.js";

const ACTIVE = ["queued", "running", "cancelling"];

function progressBar(j) {
  const p = j.progress;
  if (!p.bytes_total) return h("span", ACTIVE.includes(j.state) ? "waiting…" : "–");
  const pct = Math.min(100, (100 * p.bytes_done) / p.bytes_total);
  return h("span.progress-cell", h("progress", { max: 100, value: pct, "aria-label": `${j.id} ${pct.toFixed(0)}% done` }), ` ${pct.toFixed(0)}%`);
}

const cancelButton = (j, after) => (ACTIVE.includes(j.state) && j.state !== "cancelling"
  ? action("operate", "Cancel", async (ev) => {
    if (!confirm(`Cancel job ${j.id}?`)) return;
    await busy(ev.target, async () => { await post(`/jobs/${encodeURIComponent(j.id)}/cancel`); announce(`Cancelling job ${j.id}.`); await after(); });
  }, { "aria-label": `Cancel job ${j.id}`, class: "action danger" })
  : null);

export async function renderJobs(main, _params, ctx) {
  const state = h("select#job-state", { name: "state" },
    h("option", { value: "" }, "all"), ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"].map((s) => h("option", { value: s }, s)));
  state.value = ctx.query.get("state") || "";
  const box = h("div");
  main.append(h("h1", "Jobs"),
    h("section.card", { "aria-label": "Jobs" }, h("div.field.inline", h("label", { htmlFor: "job-state" }, "State"), state), box));

  async function refresh() {
    const q = state.value ? `&state=${state.value}` : "";
    const jobs = await get(`/jobs?limit=100${q}`);
    if (!ctx.alive) return;
    fill(box, table([
      ["Job", (j) => h("a", { href: `#/jobs/${encodeURIComponent(j.id)}` }, j.id)],
      ["Kind", (j) => j.job_kind],
      ["Plan / machine", (j) => [j.plan_id, j.machine_id].filter(Boolean).join(" / ") || "–"],
      ["State", (j) => badge(j.state)],
      ["Progress", progressBar],
      ["Rate", (j) => rate(j.progress.rate_bps)],
      ["ETA", (j) => (ACTIVE.includes(j.state) ? seconds(j.progress.eta_seconds) : "–")],
      ["Created", (j) => when(j.created_at)],
      ["", (j) => cancelButton(j, refresh)],
    ], jobs.items, { empty: "No job." }));
  }
  state.addEventListener("change", refresh);
  await refresh();
  ctx.every(refresh, 2000);
}

export async function renderJob(main, [jobId], ctx) {
  const box = h("section.card", { "aria-labelledby": "job-h", "aria-busy": "false" });
  main.append(h("p", h("a", { href: "#/jobs" }, "← All jobs")), box);
  let last = null;
  async function refresh() {
    const j = await get(`/jobs/${encodeURIComponent(jobId)}`);
    if (!ctx.alive) return;
    if (last && last !== j.state) announce(`Job ${j.id} is ${j.state}.`);
    last = j.state;
    const p = j.progress;
    const isRecovery = ["recovery", "test-recovery"].includes(j.job_kind);
    fill(box,
      h("div.page-head", h("h1#job-h", `Job ${j.id}`), h("span.job-state", { "data-state": j.state }, badge(j.state))),
      h("dl.facts",
        h("dt", "Kind"), h("dd", j.job_kind),
        h("dt", "Plan"), h("dd", j.plan_id || "–"),
        h("dt", "Machine"), h("dd", j.machine_id || "–"),
        h("dt", "Reason"), h("dd", j.reason || "–"),
        h("dt", "Node"), h("dd", j.node_id || "–"),
        h("dt", "Attempts"), h("dd", String(j.attempts)),
        h("dt", "Bytes"), h("dd.job-bytes", `${bytes(p.bytes_done)} of ${bytes(p.bytes_total)}`),
        h("dt", "Progress"), h("dd", progressBar(j)),
        h("dt", "Rate"), h("dd", rate(p.rate_bps)),
        h("dt", "ETA"), h("dd", ACTIVE.includes(j.state) ? seconds(p.eta_seconds) : "–"),
        h("dt", "Message"), h("dd.job-message", p.message || "–"),
        h("dt", "Created by"), h("dd", j.created_by),
        h("dt", "Started"), h("dd", when(j.started_at)),
        h("dt", "Finished"), h("dd", when(j.finished_at))),
      j.errors.length ? h("section", h("h2", "Errors"), h("ol.errors", j.errors.map((e) => h("li", h("pre", e))))) : null,
      Object.keys(j.result || {}).length ? h("details", h("summary", "Result"), h("pre", JSON.stringify(j.result, null, 2))) : null,
      h("div.actions",
        cancelButton(j, refresh),
        isRecovery && !ACTIVE.includes(j.state) ? h("a.button", { href: `#/recoveries/${encodeURIComponent(j.id)}` }, "Recovery report") : null,
        j.plan_id ? h("a.button.secondary", { href: `#/points?plan=${encodeURIComponent(j.plan_id)}` }, "Recovery points") : null));
  }
  await refresh();
  ctx.every(refresh, 1000);
}
