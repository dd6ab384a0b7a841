// Settings: notification channels (operate; a webhook's signing secret shown once) and, for
// administrators, users and roles, login lockouts, API tokens (secret shown once), the audit log.
import { h, get, post, api, table, badge, when, field, action, announce, submit, can, busy, fill } from "../lib.js";
import { renderNotifications } from "./notifications.js";

const ROLES = ["admin", "operator", "viewer", "node"];

export async function renderSettings(main, _params, ctx) {
  main.append(h("h1", "Settings"));
  const notesBox = h("section.card", { "aria-labelledby": "set-notes" });
  main.append(notesBox);
  const notes = renderNotifications(notesBox, ctx);
  if (!can("administer")) { main.append(h("p", "Users, API tokens and the audit log need the administer permission.")); await notes; return; }
  const usersBox = h("section.card", { "aria-labelledby": "set-users" });
  const rolesBox = h("section.card", { "aria-labelledby": "set-roles" });
  const tokensBox = h("section.card", { "aria-labelledby": "set-tokens" });
  const auditBox = h("section.card", { "aria-labelledby": "set-audit" });
  main.append(usersBox, rolesBox, tokensBox, auditBox);

  const roleChecks = (prefix, only) => h("fieldset.roles", h("legend", "Roles"),
    (only || ROLES).map((r) => h("label.check", h("input", { type: "checkbox", name: `${prefix}-role`, value: r, "data-loc": "roles" }), ` ${r}`)));
  const checked = (form, prefix) => [...form.querySelectorAll(`input[name=${prefix}-role]:checked`)].map((i) => i.value);

  async function users() {
    const [list, lockouts] = await Promise.all([get("/users?limit=500").then((p) => p.items), get("/auth/lockouts").then((p) => p.items)]);
    if (!ctx.alive) return;
    const lockedUsers = new Map(lockouts.filter((l) => l.scope === "user").map((l) => [l.key, l]));
    const known = new Set(list.map((u) => u.username));
    const others = lockouts.filter((l) => l.scope === "address" || !known.has(l.key));
    const unlock = (label, what, body, aria) => action("administer", label, async (ev) => {
      await busy(ev.target, async () => {
        await post(...body);
        announce(`${what} unlocked.`);
        await users();
      });
    }, { "aria-label": aria });
    const username = h("input", { name: "username", "data-loc": "username", autocomplete: "off" });
    const display = h("input", { name: "display_name", "data-loc": "display_name" });
    const password = h("input", { name: "password", type: "password", "data-loc": "password", autocomplete: "new-password" });
    const form = h("form.card.inner", {
      onsubmit: async (ev) => {
        ev.preventDefault();
        await submit(form,
          () => post("/users", { username: username.value, display_name: display.value || null, password: password.value, roles: checked(form, "user") }),
          async (u) => {
            announce(`User ${u.username} created.`);
            await users();
          });
      },
    }, h("h3", "Add a user"), h("div.error-summary", { tabindex: -1, role: "alert", hidden: true }),
    h("div.row", field("User name", username), field("Display name", display), field("Password", password, "At least 12 characters")),
    roleChecks("user", ["admin", "operator", "viewer"]),
    h("button.action", { type: "submit" }, "Create user"));
    fill(usersBox, h("h2#set-users", "Users"), table([
      ["User", (u) => u.username],
      ["Name", (u) => u.display_name || "–"],
      ["Roles", (u) => u.roles.join(", ")],
      ["Status", (u) => [badge(u.disabled ? "disabled" : "enabled"),
        lockedUsers.has(u.username) ? [" ", h("span.badge.badge-locked", { title: `until ${when(lockedUsers.get(u.username).locked_until)}` }, "locked")] : null]],
      ["", (u) => [lockedUsers.has(u.username) ? unlock("Unlock", `User ${u.username}`, [`/users/${encodeURIComponent(u.id)}/unlock`], `Unlock ${u.username}`) : null,
        u.username === "admin" ? null : action("administer", u.disabled ? "Enable" : "Disable", async (ev) => {
          await busy(ev.target, async () => {
            await api("PUT", `/users/${encodeURIComponent(u.id)}`, { revision: u.revision, display_name: u.display_name, roles: u.roles, disabled: !u.disabled });
            announce(`User ${u.username} ${u.disabled ? "enabled" : "disabled"}.`);
            await users();
          });
        }, { "aria-label": `${u.disabled ? "Enable" : "Disable"} ${u.username}` })]],
    ], list),
    others.length ? h("div", h("h3", "Other login lockouts"), table([
      ["Locked", (l) => (l.scope === "address" ? `address ${l.key}` : `user name ${l.key} (no such user)`)],
      ["Failures", (l) => String(l.failures)],
      ["Until", (l) => when(l.locked_until)],
      ["", (l) => unlock("Unlock", `${l.scope} ${l.key}`, ["/auth/lockouts/clear", l.scope === "address" ? { address: l.key } : { username: l.key }], `Unlock ${l.scope} ${l.key}`)],
    ], others)) : null, form);
  }

  async function roles() {
    const list = (await get("/roles")).items;
    if (!ctx.alive) return;
    fill(rolesBox, h("h2#set-roles", "Roles"), table([["Role", (r) => r.role], ["Permissions", (r) => r.permissions.join(", ")]], list));
  }

  async function tokens() {
    const list = (await get("/tokens?limit=500")).items;
    if (!ctx.alive) return;
    const name = h("input", { name: "token-name", "data-loc": "name" });
    const ttl = h("input", { name: "ttl_days", type: "number", min: 1, "data-loc": "ttl_days" });
    const out = h("div.secret", { "aria-live": "polite" });
    const form = h("form.card.inner", {
      onsubmit: async (ev) => {
        ev.preventDefault();
        await submit(form,
          () => post("/tokens", { name: name.value, roles: checked(form, "token"), ttl_days: ttl.value ? Number(ttl.value) : null }),
          async (t) => {
            await tokens();
            fill(tokensBox.querySelector(".secret"), h("p", h("strong", `Token ${t.name}: copy it now, it is shown only once.`)), h("pre", h("code.token-secret", t.secret)));
            announce("Token created: copy it now, it is shown only once.");
          });
      },
    }, h("h3", "Create an API token"), h("div.error-summary", { tabindex: -1, role: "alert", hidden: true }),
    h("div.row", field("Name", name), field("Expires after (days)", ttl, "Empty: never")), roleChecks("token"),
    h("button.action", { type: "submit" }, "Create token"), out);
    fill(tokensBox, h("h2#set-tokens", "API tokens"), table([
      ["Name", (t) => t.name],
      ["Roles", (t) => t.roles.join(", ")],
      ["Owner", (t) => t.owner],
      ["Node", (t) => t.node_id || "–"],
      ["Expires", (t) => (t.expires_at ? when(t.expires_at) : "never")],
      ["Status", (t) => badge(t.revoked ? "revoked" : "active")],
      ["", (t) => (t.revoked ? null : action("administer", "Revoke", async (ev) => {
        if (!confirm(`Revoke token ${t.name}?`)) return;
        await busy(ev.target, async () => { await api("DELETE", `/tokens/${encodeURIComponent(t.id)}`); announce(`Token ${t.name} revoked.`); await tokens(); });
      }, { "aria-label": `Revoke token ${t.name}`, class: "action danger" }))],
    ], list), form);
  }

  const actor = h("input#audit-actor", { name: "actor", placeholder: "e.g. admin" });
  async function audit() {
    const q = actor.value ? `&actor=${encodeURIComponent(actor.value)}` : "";
    const list = (await get(`/audit?limit=100${q}`)).items;
    if (!ctx.alive) return;
    fill(auditBox, h("h2#set-audit", "Audit log"),
      h("form.inline", { onsubmit: (ev) => { ev.preventDefault(); audit(); } },
        h("label", { htmlFor: "audit-actor" }, "Actor"), actor, h("button.secondary", { type: "submit" }, "Filter")),
      table([
        ["When", (e) => when(e.at)],
        ["Actor", (e) => e.actor],
        ["Action", (e) => h("code", e.action)],
        ["Target", (e) => e.target],
        ["Outcome", (e) => badge(e.outcome)],
        ["Status", (e) => String(e.status)],
      ], list, { caption: "Newest first (last 100)" }));
  }
  await Promise.all([notes, users(), roles(), tokens(), audit()]);
}
