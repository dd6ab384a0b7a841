// Recovery points: a timeline per machine of a plan, pick a point, start a test recovery,
// failover or migration; the recovery report (per-stage timings, evidence); test cleanup.
import { h, get, post, api, table, badge, when, bytes, seconds, action, announce, busy, can, ApiError, errorText, fill } from "../lib.js";

export async function renderPoints(main, _params, ctx) {
  const plans = (await get("/plans?limit=500")).items;
  if (!ctx.alive) return;
  const planSel = h("select#points-plan", { name: "plan" }, plans.map((p) => h("option", { value: p.id }, `${p.name} (${p.id})`)));
  planSel.value = ctx.query.get("plan") || (plans[0] && plans[0].id) || "";
  const box = h("div");
  const recBox = h("section.card", { "aria-labelledby": "rec-h" });
  main.append(h("h1", "Recovery points"),
    plans.length ? h("div.field.inline", h("label", { htmlFor: "points-plan" }, "Plan"), planSel) : h("p.empty", "No plan yet."),
    box, recBox);
  planSel.addEventListener("change", () => { location.hash = `#/points?plan=${encodeURIComponent(planSel.value)}`; });
  if (!plans.length) return;
  const plan = plans.find((p) => p.id === planSel.value) || plans[0];
  let chosen = null; // the chosen point's time

  async function refreshPoints() {
    const pts = (await get(`/points?plan_id=${encodeURIComponent(plan.id)}&limit=500`)).items;
    if (!ctx.alive) return;
    const byMachine = {};
    for (const p of pts) (byMachine[p.machine_id] ||= []).push(p);
    const times = pts.map((p) => new Date(p.time).getTime());
    const [t0, t1] = [Math.min(...times), Math.max(...times)];
    const start = h("div.card.inner.recover-panel");
    const mode = h("select#recover-mode", { name: "mode" },
      h("option", { value: "test" }, "Test recovery (isolated network)"),
      h("option", { value: "failover" }, "Failover"),
      h("option", { value: "migration" }, "Migration"));
    const chosenText = h("p#chosen-point", { "aria-live": "polite" }, chosen ? `Chosen point: ${new Date(chosen).toLocaleString()}` : "No point chosen: the latest point of each machine is used.");
    const pick = (p) => {
      chosen = p.time;
      chosenText.textContent = `Chosen point: ${new Date(p.time).toLocaleString()} (${p.machine_id}); each machine recovers from its latest point at or before it.`;
    };
    if (can("operate")) {
      start.append(h("h2", "Recover"), chosenText,
        h("div.row", h("div.field", h("label", { htmlFor: "recover-mode" }, "Mode"), mode),
          action("operate", "Start recovery", async (ev) => {
            if (mode.value !== "test" && !confirm(`Start a ${mode.value} of ${plan.name}? It recovers into production networks.`)) return;
            await busy(ev.target, async () => {
              const body = { mode: mode.value };
              if (chosen) body.point_time = chosen;
              const job = await post(`/plans/${encodeURIComponent(plan.id)}/recover`, body);
              announce(`Recovery job ${job.id} started.`);
              location.hash = `#/recoveries/${encodeURIComponent(job.id)}`;
            });
          }, { id: "start-recovery" })));
    }
    fill(box,
      h("section.card", { "aria-labelledby": "tl-h" },
        h("h2#tl-h", `Timeline of ${plan.name}`),
        pts.length ? null : h("p.empty", "No recovery point yet: protect the plan and wait for its first replication."),
        Object.entries(byMachine).map(([mid, list]) => h("section.machine-points", { "aria-label": `Points of ${mid}` },
          h("h3", mid),
          timeline(list, t0, t1),
          table([
            ["Time", (p) => when(p.time)],
            ["Disks", (p) => p.disks.map((d) => `${d.disk_id}: ${bytes(d.disk_size)} (+${bytes(d.bytes_new)})`).join("; ")],
            ["Run", (p) => h("a", { href: `#/jobs/${encodeURIComponent(p.run_id)}` }, p.run_id)],
            ["", (p) => (can("operate") ? h("label.pick", h("input", { type: "radio", name: "point", value: p.time, checked: chosen === p.time, onchange: () => pick(p) }), " Recover from here") : null)],
          ], list, { caption: `${list.length} point(s)` })))),
      can("operate") && pts.length ? start : null);
  }

  async function refreshRecoveries() {
    const recs = (await get(`/recoveries?plan_id=${encodeURIComponent(plan.id)}&limit=50`)).items;
    if (!ctx.alive) return;
    fill(recBox, h("h2#rec-h", "Recoveries of this plan"), table([
      ["Report", (r) => h("a", { href: `#/recoveries/${encodeURIComponent(r.id)}` }, r.id)],
      ["Mode", (r) => r.mode],
      ["State", (r) => badge(r.state)],
      ["RTO", (r) => seconds(r.rto_seconds)],
      ["Finished", (r) => when(r.finished_at)],
      ["Cleanup", (r) => badge(r.cleanup_state)],
    ], recs, { empty: "No recovery run yet." }));
  }
  await Promise.all([refreshPoints(), refreshRecoveries()]);
  ctx.every(refreshRecoveries, 3000);
}

function timeline(list, t0, t1) {
  const W = 600;
  const H = 36;
  const x = (t) => (t1 > t0 ? 10 + ((new Date(t).getTime() - t0) / (t1 - t0)) * (W - 20) : W / 2);
  const label = `${list.length} points from ${new Date(t0).toLocaleString()} to ${new Date(t1).toLocaleString()}`;
  return h("svg.timeline", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
    h("line.axis", { x1: 5, y1: H / 2, x2: W - 5, y2: H / 2 }),
    list.map((p) => h("circle.point", { cx: x(p.time).toFixed(1), cy: H / 2, r: 5 }, h("title", new Date(p.time).toLocaleString()))));
}

export async function renderRecovery(main, [reportId], ctx) {
  const box = h("section.card", { "aria-labelledby": "report-h" });
  main.append(h("p", h("a", { href: "#/points" }, "← Recovery points")), box);
  let lastState = null;

  async function refresh() {
    let r = null;
    try {
      r = await get(`/recoveries/${encodeURIComponent(reportId)}`);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
    }
    if (!ctx.alive) return;
    if (!r) {
      const j = await get(`/jobs/${encodeURIComponent(reportId)}`).catch(() => null);
      fill(box, h("h1#report-h", `Recovery ${reportId}`),
        h("p.running", { "aria-live": "polite" }, j ? `The recovery job is ${j.state}: ${j.progress.message || "working"}…` : "Waiting for the recovery to start…"),
        j ? h("a.button.secondary", { href: `#/jobs/${encodeURIComponent(j.id)}` }, "Job details") : null);
      return;
    }
    const key = `${r.state}/${r.cleanup_state}`;
    if (lastState && lastState !== key) announce(`Recovery ${r.id}: ${r.state}, cleanup ${r.cleanup_state}.`);
    lastState = key;
    fill(box,
      h("div.page-head", h("h1#report-h", `Recovery report: ${r.plan_name || r.plan_id}`), h("span.report-state", { "data-state": r.state }, badge(r.state))),
      h("dl.facts",
        h("dt", "Mode"), h("dd", r.mode),
        h("dt", "Platform"), h("dd", r.platform),
        h("dt", "RTO"), h("dd", seconds(r.rto_seconds)),
        h("dt", "Started"), h("dd", when(r.started_at)),
        h("dt", "Finished"), h("dd", when(r.finished_at)),
        h("dt", "Requested point"), h("dd", r.requested_point_time ? when(r.requested_point_time) : "latest"),
        h("dt", "Cleanup"), h("dd.cleanup-state", { "data-state": r.cleanup_state }, badge(r.cleanup_state))),
      h("div.actions",
        h("button.secondary", { type: "button", onclick: (ev) => busy(ev.target, () => downloadHtml(r.id)) }, "Download HTML report"),
        r.mode === "test" && ["pending", "cleanup-failed"].includes(r.cleanup_state)
          ? action("operate", "Clean up test recovery", async (ev) => {
            await busy(ev.target, async () => {
              const job = await post(`/plans/${encodeURIComponent(r.plan_id)}/cleanup-test`);
              announce(`Cleanup job ${job.id} started.`);
              await refresh();
            });
          }, { class: "action danger" })
          : null,
        r.cleanup_job_id ? h("a.button.secondary", { href: `#/jobs/${encodeURIComponent(r.cleanup_job_id)}` }, "Cleanup job") : null),
      r.notes.length ? h("section", h("h2", "Point selection"), h("ul", r.notes.map((n) => h("li", n)))) : null,
      r.errors.length ? h("section", h("h2", "Errors"), h("ul.errors", r.errors.map((e) => h("li", e)))) : null,
      h("div.groups", r.groups.map((g) => h("section.group", { "aria-label": `Boot group ${g.name}` },
        h("h2", `Boot group ${g.order + 1}: ${g.name}`, g.delay_seconds ? ` (delay ${g.delay_seconds} s)` : ""),
        g.machines.map((m) => h("article.machine-report", { "aria-label": `Machine ${m.machine_id}` },
          h("h3", `${m.name || m.machine_id} `, badge(m.status)),
          h("p", `Point ${m.recovery_point_id} of `, when(m.point_time), `; RTO ${seconds(m.rto_seconds)}`,
            m.addresses.length ? `; addresses ${m.addresses.join(", ")}` : "", m.instance_id ? `; instance ${m.instance_id}` : ""),
          m.error ? h("p.form-error", `Failed at ${m.failed_stage || "?"}: ${m.error}`) : null,
          table([
            ["Stage", (s) => s.stage],
            ["Result", (s) => badge(s.ok ? "ok" : "failed")],
            ["Seconds", (s) => s.seconds.toFixed(2)],
            ["Started", (s) => when(s.started_at)],
          ], m.stages, { caption: `Stages of ${m.machine_id}` }),
          m.evidence ? h("div.evidence",
            h("h4", "Validation evidence"),
            h("p", badge(m.evidence.ok ? "passed" : "failed"), ` ${m.evidence.method} in ${seconds(m.evidence.seconds)}`, m.evidence.reason ? ` – ${m.evidence.reason}` : ""),
            m.evidence.excerpt ? h("pre.excerpt", m.evidence.excerpt) : null) : null,
          m.resources.length ? h("details", h("summary", `Resources on the target (${m.resources.length})`),
            h("ul", m.resources.map((x) => h("li", `${x.type}: ${x.id}`)))) : null))))),
      r.cleanup ? h("section", h("h2", "Cleanup"),
        h("p", `${r.cleanup.deleted.length} deleted, ${r.cleanup.already_gone.length} already gone, ${r.cleanup.failed.length} failed.`),
        r.cleanup.failed.length ? h("ul.errors", r.cleanup.failed.map((f) => h("li", f))) : null) : null);
  }
  await refresh();
  ctx.every(refresh, 1500);
}

async function downloadHtml(id) {
  try {
    const html = await api("GET", `/recoveries/${encodeURIComponent(id)}/html`, undefined, { raw: true });
    const url = URL.createObjectURL(new Blob([html], { type: "text/html" }));
    const a = h("a", { href: url, download: `recovery-${id}.html` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    announce("HTML report downloaded.");
  } catch (err) {
    announce(errorText(err), "error");
  }
}
