// Inventory: sites and nodes (heartbeat, health, capacity); add a site; create a node token.
import { h, get, post, api, table, badge, when, ago, field, action, announce, submit, can, busy, fill } from "../lib.js";

export async function renderInventory(main, _params, ctx) {
  const sitesBox = h("section.card", { "aria-labelledby": "inv-sites" });
  const nodesBox = h("section.card", { "aria-labelledby": "inv-nodes" });
  main.append(h("h1", "Inventory"), sitesBox, nodesBox);

  async function refresh() {
    const [sites, nodes] = await Promise.all([get("/sites?limit=500"), get("/nodes?limit=500")]);
    if (!ctx.alive) return;
    fill(sitesBox, h("h2#inv-sites", "Sites"), table([
      ["Id", (s) => h("code", s.id)],
      ["Name", (s) => s.name],
      ["Kind", (s) => s.site_kind],
      ["Region", (s) => s.region || "–"],
      ["Repository", (s) => h("code", s.repository_url)],
      ["Recovery target", (s) => (s.recovery_target ? s.recovery_target.platform : "none")],
      ["", (s) => action("operate", "Delete", async (ev) => {
        if (!confirm(`Delete site ${s.id}?`)) return;
        await busy(ev.target, async () => { await api("DELETE", `/sites/${encodeURIComponent(s.id)}`); announce(`Site ${s.id} deleted.`); await refresh(); });
      }, { "aria-label": `Delete site ${s.id}` })],
    ], sites.items, { caption: "Sites", empty: "No site." }), can("operate") ? siteForm(refresh) : null);

    fill(nodesBox, h("h2#inv-nodes", "Nodes"), table([
      ["Name", (n) => n.name],
      ["Site", (n) => n.site_id],
      ["Role", (n) => n.role],
      ["Health", (n) => badge(n.online ? "online" : "offline")],
      ["Heartbeat", (n) => h("span", { title: n.heartbeat_at || "" }, ago(n.heartbeat_at))],
      ["Load / capacity", (n) => `${n.running_jobs} / ${n.capacity} disks`],
      ["Version", (n) => n.software_version || "–"],
    ], nodes.items, { caption: "Nodes", empty: "No node registered." }), can("administer") ? nodeTokenForm(sites.items) : null);
  }
  await refresh();
}

function siteForm(refresh) {
  const id = h("input", { name: "id", "data-loc": "id", placeholder: "optional, e.g. dr-eu" });
  const name = h("input", { name: "name", "data-loc": "name", required: true });
  const kind = h("select", { name: "site_kind", "data-loc": "site_kind" },
    ["local", "aws", "azure", "kvm", "vmware"].map((k) => h("option", { value: k }, k)));
  const region = h("input", { name: "region", "data-loc": "region" });
  const repo = h("input", { name: "repository_url", "data-loc": "repository_url", required: true, placeholder: "/srv/lifeboat or s3://bucket/prefix" });
  const creds = h("input", { name: "credentials_ref", "data-loc": "credentials_ref", placeholder: "env:NAME (a reference, never a secret)" });
  const platform = h("select", { name: "platform", "data-loc": "recovery_target" },
    h("option", { value: "" }, "none"), h("option", { value: "qemu" }, "QEMU (this machine)"), h("option", { value: "aws" }, "AWS"));
  const workDir = h("input", { name: "work_dir", "data-loc": "recovery_target.qemu.work_dir", placeholder: "QEMU work dir, or AWS region" });
  const form = h("form.card.inner", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { name: name.value, site_kind: kind.value, repository_url: repo.value };
      if (id.value) body.id = id.value;
      if (region.value) body.region = region.value;
      if (creds.value) body.credentials_ref = creds.value;
      if (platform.value === "qemu") body.recovery_target = { platform: "qemu", work_dir: workDir.value };
      if (platform.value === "aws") body.recovery_target = { platform: "aws", region: workDir.value };
      await submit(form, () => post("/sites", body), async (site) => {
        announce(`Site ${site.id} created.`);
        await refresh();
      }, "The site was not created.");
    },
  },
  h("h3", "Add a site"),
  h("div.error-summary", { tabindex: -1, role: "alert", hidden: true }),
  h("div.row", field("Id", id), field("Name", name), field("Kind", kind), field("Region", region)),
  h("div.row", field("Repository URL", repo), field("Credentials reference", creds)),
  h("div.row", field("Recovery target", platform), field("Target location", workDir)),
  h("button.action", { type: "submit" }, "Add site"));
  return form;
}

function nodeTokenForm(sites) {
  const name = h("input", { name: "name", "data-loc": "name", required: true, placeholder: "e.g. node-rack2" });
  const site = h("select", { name: "site" }, sites.map((s) => h("option", { value: s.id }, `${s.name} (${s.id})`)));
  const out = h("div.secret", { "aria-live": "polite" });
  const form = h("form.card.inner", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      await submit(form, () => post("/tokens", { name: name.value, roles: ["node"] }), (tok) => {
        fill(out,
          h("p", h("strong", "Copy this token now: it is shown only once.")),
          h("pre", h("code.token-secret", tok.secret)),
          h("p", "Save it to a file readable only by the node's user, then run:"),
          h("pre", h("code", `lifeboat node run --api ${location.origin} --site ${site.value} --name ${name.value} --token-file node.token`)));
        announce("Node token created: copy it now, it is shown only once.");
      });
    },
  },
  h("h3", "Register a node"),
  h("p.hint", "A node registers itself with a node token; its heartbeat then shows above."),
  h("div.error-summary", { tabindex: -1, role: "alert", hidden: true }),
  h("div.row", field("Node name", name), field("Site", site)),
  h("button.action", { type: "submit" }, "Create node token"),
  out);
  return form;
}
