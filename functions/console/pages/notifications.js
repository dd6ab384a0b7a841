// Settings > Notifications: channels (webhook or SNS topic, events, scope), a webhook's signing
// secret shown once (on creation and rotation), a test button, and the latest deliveries.
import { h, get, post, api, table, badge, when, field, action, announce, submit, busy, fill } from "../lib.js";

const EVENTS = [
  ["rpo_breach", "RPO breached"], ["rpo_resolved", "RPO met again"], ["job_failed", "Job failed"],
  ["test_recovery_failed", "Test recovery failed"], ["node_lost", "Node lost"],
];
const list = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

export async function renderNotifications(box, ctx) {
  const [channels, recent] = await Promise.all([get("/notification-channels?limit=500"), get("/notifications?limit=20")]);
  if (!ctx.alive) return;
  const secretOut = h("div.secret", { "aria-live": "polite" });
  const showSecret = (name, secret) => {
    fill(box.querySelector(".secret"), h("p", h("strong", `Signing secret of ${name}: copy it now, it is shown only once.`)),
      h("pre", h("code.channel-secret", secret)));
    announce("Signing secret shown: copy it now, it is shown only once.");
  };
  const name = h("input", { name: "channel-name", "data-loc": "name", autocomplete: "off" });
  const kind = h("select", { name: "channel_kind", "data-loc": "channel_kind" },
    h("option", { value: "webhook" }, "Webhook (Slack, Teams, any HTTPS receiver)"), h("option", { value: "sns" }, "Amazon SNS topic"));
  const target = h("input", { name: "target", "data-loc": "url", placeholder: "https://hooks.slack.com/services/…" });
  kind.addEventListener("change", () => {
    target.dataset.loc = kind.value === "sns" ? "topic_arn" : "url";
    target.placeholder = kind.value === "sns" ? "arn:aws:sns:eu-west-1:123456789012:lifeboat-alerts" : "https://hooks.slack.com/services/…";
  });
  const sites = h("input", { name: "site_ids", "data-loc": "site_ids", placeholder: "all sites" });
  const plans = h("input", { name: "plan_ids", "data-loc": "plan_ids", placeholder: "all plans" });
  const events = h("fieldset.roles", { "data-loc": "events" }, h("legend", "Events"),
    EVENTS.map(([v, label]) => h("label.check", h("input", { type: "checkbox", name: "channel-event", value: v }), ` ${label}`)));
  const form = h("form.card.inner", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = {
        name: name.value, channel_kind: kind.value, site_ids: list(sites.value), plan_ids: list(plans.value),
        events: [...events.querySelectorAll("input:checked")].map((i) => i.value),
      };
      body[kind.value === "sns" ? "topic_arn" : "url"] = target.value;
      await submit(form, () => post("/notification-channels", body), async (c) => {
        announce(`Channel ${c.name} added.`);
        await renderNotifications(box, ctx);
        if (c.secret) showSecret(c.name, c.secret);
      });
    },
  }, h("h3", "Add a channel"), h("div.error-summary", { tabindex: -1, role: "alert", hidden: true }),
  h("div.row", field("Channel name", name), field("Kind", kind), field("URL or topic ARN", target, "https:// (http:// only for 127.0.0.1)")),
  events, h("div.row", field("Only sites", sites, "Comma-separated ids; empty: every site"), field("Only plans", plans, "Comma-separated ids; empty: every plan")),
  h("button.action", { type: "submit" }, "Add channel"));

  const refresh = () => renderNotifications(box, ctx);
  fill(box, h("h2#set-notes", "Notifications"),
    h("p.hint", "Where Lifeboat reports RPO breaches, failed jobs and test recoveries, and lost nodes. Webhook bodies are signed (X-Lifeboat-Signature)."),
    table([
      ["Channel", (c) => c.name],
      ["Kind", (c) => c.channel_kind],
      ["Target", (c) => h("code", c.url || c.topic_arn)],
      ["Events", (c) => c.events.join(", ")],
      ["Scope", (c) => [c.site_ids.length ? `sites ${c.site_ids.join(", ")}` : "", c.plan_ids.length ? `plans ${c.plan_ids.join(", ")}` : ""].filter(Boolean).join("; ") || "everything"],
      ["Status", (c) => badge(c.enabled ? "enabled" : "disabled")],
      ["", (c) => h("div.actions",
        action("operate", "Send test", async (ev) => {
          await busy(ev.target, async () => {
            const n = await post(`/notification-channels/${encodeURIComponent(c.id)}/test`);
            announce(n.state === "delivered" ? `Test delivered to ${c.name}.` : `Test to ${c.name}: ${n.state}${n.last_error ? ` (${n.last_error})` : ""}.`,
              n.state === "delivered" ? "info" : "error");
            await refresh();
          });
        }, { "aria-label": `Send a test to ${c.name}` }),
        c.channel_kind === "webhook" ? action("operate", "Rotate secret", async (ev) => {
          if (!confirm(`Replace the signing secret of ${c.name}? The old one stops working at once.`)) return;
          await busy(ev.target, async () => {
            const r = await post(`/notification-channels/${encodeURIComponent(c.id)}/rotate-secret`);
            await refresh();
            showSecret(c.name, r.secret);
          });
        }, { "aria-label": `Rotate the signing secret of ${c.name}` }) : null,
        action("operate", c.enabled ? "Disable" : "Enable", async (ev) => {
          await busy(ev.target, async () => {
            const { id, revision, channel_kind: _k, created_at: _c, updated_at: _u, ...rest } = c;
            await api("PUT", `/notification-channels/${encodeURIComponent(id)}`, { ...rest, revision, enabled: !c.enabled });
            announce(`Channel ${c.name} ${c.enabled ? "disabled" : "enabled"}.`);
            await refresh();
          });
        }, { "aria-label": `${c.enabled ? "Disable" : "Enable"} channel ${c.name}` }),
        action("operate", "Delete", async (ev) => {
          if (!confirm(`Delete channel ${c.name}?`)) return;
          await busy(ev.target, async () => { await api("DELETE", `/notification-channels/${encodeURIComponent(c.id)}`); announce(`Channel ${c.name} deleted.`); await refresh(); });
        }, { "aria-label": `Delete channel ${c.name}`, class: "action danger" }))],
    ], channels.items, { caption: "Channels" }),
    form, secretOut,
    h("h3", "Latest notifications"),
    table([
      ["When", (n) => when(n.created_at)],
      ["Event", (n) => n.event],
      ["Channel", (n) => n.channel_id],
      ["State", (n) => badge(n.state)],
      ["Attempts", (n) => String(n.attempts)],
      ["Last answer", (n) => [n.last_status ? `HTTP ${n.last_status}` : "", n.last_error].filter(Boolean).join(" ") || "–"],
    ], recent.items, { caption: "Newest first (last 20)", empty: "None sent yet." }));
}
