// Inventory: sites and nodes (heartbeat, health, capacity); add a site; create a node token.
// A vmware site gets a vCenter panel: its connection (never the password), the last inventory
// sync, "Sync now", and the VMs the syncs discovered; each VM has a detail page.
import { h, get, post, api, all, table, badge, when, ago, field, action, announce, submit, can, busy, fill, bytes } from "../lib.js";

const MiB = 1024 * 1024;
const JOB_DONE = ["succeeded", "failed", "cancelled"];

export async function renderInventory(main, _params, ctx) {
  const sitesBox = h("section.card", { "aria-labelledby": "inv-sites" });
  const vcBox = h("div.vcenters");
  const nodesBox = h("section.card", { "aria-labelledby": "inv-nodes" });
  main.append(h("h1", "Inventory"), sitesBox, vcBox, nodesBox);

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

    fill(vcBox, sites.items.filter((s) => s.site_kind === "vmware").map((s) => vcenterPanel(s, ctx)));

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

// --- vCenter ----------------------------------------------------------------------------------
/** How the nodes trust the vCenter certificate, in words (the PEM itself is not repeated). */
export function tlsMode(tls) {
  if (!tls) return "system CAs";
  if (tls.insecure) return h("span", badge("insecure", "warning"), " no certificate checks (lab use only)");
  if (tls.thumbprint) return h("span", "pinned certificate, SHA-256 ", h("code.thumbprint", tls.thumbprint));
  if (tls.ca_pem) {
    const n = (tls.ca_pem.match(/-----BEGIN CERTIFICATE-----/g) || []).length;
    return `CA certificates given with the connection (${n}) and the system CAs; host name checked`;
  }
  return "system CAs; host name checked";
}

function power(state) {
  if (state === "poweredOn") return badge("on", "ok");
  if (state === "poweredOff") return badge("off", "off");
  if (state === "suspended") return badge("suspended", "warning");
  return state || "–";
}

function vmState(vm) {
  if (vm.state === "missing") {
    return h("span", badge("missing"), " ", h("small.hint", `since ${vm.missing_since ? new Date(vm.missing_since).toLocaleString() : "the last sync"}`));
  }
  return badge("present");
}

const diskTotal = (vm) => vm.disks.reduce((sum, d) => sum + (d.capacity_bytes || 0), 0);
const vmLink = (vm) => h("a", { href: `#/inventory/vms/${encodeURIComponent(vm.id)}` }, vm.name);

function vcenterPanel(site, ctx) {
  const sid = site.id;
  const headId = `vc-${sid}`;
  const statusBox = h("div.vc-status");
  const vmsBox = h("div.vc-vms");
  const formBox = h("div");
  const panel = h("section.card.vcenter", { "aria-labelledby": headId, "data-site": sid },
    h("h2", { id: headId }, `vCenter of ${site.name} (${sid})`), statusBox, vmsBox, formBox);
  let watching = null; // an inventory-sync job still running: the panel follows it

  function showStatus(s, job) {
    const vc = s.vcenter;
    const last = s.last_inventory_sync;
    const running = job && !JOB_DONE.includes(job.state);
    fill(statusBox,
      vc
        ? h("dl.facts",
          h("dt", "URL"), h("dd", h("code.vc-url", vc.url)),
          h("dt", "User"), h("dd", h("span.vc-user", vc.username)),
          h("dt", "Certificate trust"), h("dd.vc-tls", tlsMode(vc.tls)),
          h("dt", "Snapshots"), h("dd", vc.quiesce ? "quiesced (VMware Tools), unless a plan says otherwise" : "crash-consistent, unless a plan says otherwise"),
          h("dt", "Last sync"), h("dd.vc-sync",
            last
              ? [badge(last.ok ? "ok" : "failed"), " ", when(last.at), last.ok ? ` · ${last.vms} VM(s)` : null,
                last.job_id ? [" · ", h("a", { href: `#/jobs/${encodeURIComponent(last.job_id)}` }, `job ${last.job_id}`)] : null]
              : "never"),
          running ? [h("dt", "Now"), h("dd.vc-running", badge(job.state), " ", h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, `inventory sync ${job.id}`),
            job.progress && job.progress.message ? ` · ${job.progress.message}` : null)] : null)
        : h("p.hint", "Not connected: the site has no vCenter yet", can("operate") ? "; connect it below." : "."),
      vc && last && !last.ok && last.error ? h("div.sync-error", { role: "note" }, h("strong", "The last sync failed: "), h("pre", last.error)) : null,
      vc ? h("div.actions",
        action("operate", running ? "Sync running…" : "Sync now", async (ev) => {
          await busy(ev.target, async () => {
            const j = await post(`/sites/${encodeURIComponent(sid)}/inventory/sync`, {});
            announce(`Inventory sync job ${j.id} queued for site ${sid}.`);
            watching = j.id;
            await refreshPanel();
          });
        }, { "aria-label": `Sync now ${sid}`, disabled: running }),
        action("operate", "Disconnect", async (ev) => {
          if (!confirm(`Disconnect site ${sid} from its vCenter? Its stored password is deleted; the inventory stays.`)) return;
          await busy(ev.target, async () => {
            await api("DELETE", `/sites/${encodeURIComponent(sid)}/vcenter`);
            announce(`Site ${sid} disconnected from its vCenter.`);
            await refreshPanel(true);
          });
        }, { "aria-label": `Disconnect ${sid}`, class: "action danger" })) : null);
  }

  function showVms(vms) {
    vms.sort((a, b) => (a.state === b.state ? a.name.localeCompare(b.name) : a.state === "missing" ? 1 : -1));
    const missing = vms.filter((v) => v.state === "missing").length;
    fill(vmsBox, h("h3", `Virtual machines (${vms.length - missing} present${missing ? `, ${missing} missing` : ""})`), table([
      ["Name", vmLink],
      ["Power", (v) => power(v.power_state)],
      ["CPUs", (v) => String(v.cpus)],
      ["Memory", (v) => bytes(v.memory_mb * MiB)],
      ["Disks", (v) => `${v.disks.length} · ${bytes(diskTotal(v))}`],
      ["CBT", (v) => (v.cbt_enabled ? badge("on", "ok") : badge("off", "off"))],
      ["Cluster / host", (v) => `${v.cluster || "standalone"} / ${v.host || "–"}`],
      ["State", vmState],
      ["Last seen", (v) => h("span", { title: v.last_seen_at || "" }, ago(v.last_seen_at))],
    ], vms, { caption: `VMs of site ${sid}`, empty: "No VM discovered yet.", rowClass: (v) => (v.state === "missing" ? "missing" : null) }));
  }

  async function refreshPanel(withForm = false) {
    const s = await get(`/sites/${encodeURIComponent(sid)}`);
    const jobId = watching || s.inventory_job_id;
    const [job, vms] = await Promise.all([
      jobId ? get(`/jobs/${encodeURIComponent(jobId)}`).catch(() => null) : null,
      all(`/inventory/vms?site_id=${encodeURIComponent(sid)}&limit=500`),
    ]);
    if (!ctx.alive) return;
    watching = job && !JOB_DONE.includes(job.state) ? job.id : null;
    showStatus(s, job);
    showVms(vms);
    if (withForm) fill(formBox, can("operate") ? connectForm(s) : null);
  }

  function connectForm(s) {
    const vc = s.vcenter;
    const url = h("input", { type: "url", "data-loc": "url", required: true, value: vc ? vc.url : "", placeholder: "https://vcenter.example.com/sdk" });
    const user = h("input", { "data-loc": "username", required: true, value: vc ? vc.username : "", autocomplete: "off", placeholder: "e.g. lifeboat@vsphere.local" });
    const password = h("input", { type: "password", "data-loc": "password", required: true, autocomplete: "new-password" });
    const caPem = h("textarea", { "data-loc": "tls.ca_pem", rows: 4, spellcheck: false, placeholder: "-----BEGIN CERTIFICATE-----" });
    caPem.value = (vc && vc.tls.ca_pem) || "";
    const thumb = h("input", { "data-loc": "tls.thumbprint", value: (vc && vc.tls.thumbprint) || "", spellcheck: false, placeholder: "SHA-256 hex, ':' allowed" });
    const warning = h("p.warning", { role: "alert", hidden: true },
      h("strong", "Insecure: "), "the nodes will trust any certificate, so anyone on the path to vCenter can read the password and the disks. Lab use only.");
    const insecure = h("input", { type: "checkbox", "data-loc": "tls.insecure", checked: !!(vc && vc.tls.insecure),
      onchange: () => sync() });
    const quiesce = h("input", { type: "checkbox", "data-loc": "quiesce", checked: !!(vc && vc.quiesce) });
    const sync = () => {
      warning.hidden = !insecure.checked;
      caPem.disabled = insecure.checked;
      thumb.disabled = insecure.checked;
    };
    sync();
    const check = (input, label, hint) => h("div.field.check",
      h("label.check", input, " ", label), hint ? h("small.hint", hint) : null);
    const form = h("form.card.inner.vc-form", {
      novalidate: true,
      onsubmit: async (ev) => {
        ev.preventDefault();
        const tls = {};
        if (insecure.checked) tls.insecure = true;
        else {
          if (caPem.value.trim()) tls.ca_pem = caPem.value.trim();
          if (thumb.value.trim()) tls.thumbprint = thumb.value.trim();
        }
        const body = { url: url.value.trim(), username: user.value, password: password.value, tls, quiesce: quiesce.checked };
        await submit(form, () => api("PUT", `/sites/${encodeURIComponent(sid)}/vcenter`, body), async (res) => {
          password.value = "";
          watching = res.sync_job ? res.sync_job.id : null;
          announce(`vCenter connection of site ${sid} saved; inventory sync job ${watching} queued.`);
          await refreshPanel(true);
        }, "The vCenter connection was not saved.");
      },
    },
    h("h3", vc ? "Change the vCenter connection" : "Connect to vCenter"),
    h("p.hint", "The password is kept sealed by the control plane and never shown again; saving queues an inventory sync that proves the connection."),
    h("div.error-summary", { tabindex: -1, role: "alert", hidden: true }),
    h("div.row", field("vCenter URL", url), field("vCenter user", user), field("vCenter password", password)),
    h("fieldset.tls", { "data-loc": "tls" }, h("legend", "Certificate trust"),
      h("p.hint", "By default the system CAs, with host-name checks. Add the CA that signed vCenter's certificate, or pin its thumbprint."),
      h("div.row",
        field("CA certificates (PEM)", caPem, "Trusted besides the system CAs"),
        field("Certificate thumbprint", thumb, "Pins exactly this certificate")),
      check(insecure, "Skip certificate checks (insecure)"), warning),
    check(quiesce, "Quiesced snapshots", "The default of this site's plans: application-consistent points when VMware Tools run"),
    h("button.action", { type: "submit" }, vc ? "Save connection" : "Connect"));
    return form;
  }

  fill(statusBox, h("p.hint", "Loading…"));
  refreshPanel(true).catch((err) => fill(statusBox, h("p.form-error", String(err.message || err))));
  ctx.every(async () => { if (watching && panel.isConnected) await refreshPanel(); }, 1000);
  return panel;
}

// --- one VM -----------------------------------------------------------------------------------
export async function renderInventoryVm(main, [vmId], ctx) {
  const vm = await get(`/inventory/vms/${encodeURIComponent(vmId)}`);
  if (!ctx.alive) return;
  const fact = (label, value) => [h("dt", label), h("dd", value === "" || value === null || value === undefined ? "–" : value)];
  main.append(
    h("p", h("a", { href: "#/inventory" }, "← Inventory")),
    h("div.page-head", h("h1", `VM ${vm.name}`), vmState(vm)),
    h("section.card", { "aria-labelledby": "vm-facts" },
      h("h2#vm-facts", "Virtual machine"),
      h("dl.facts",
        fact("Site", h("code", vm.site_id)),
        fact("Managed object", h("code", vm.moref)),
        fact("Instance UUID", h("code", vm.instance_uuid)),
        fact("Power", power(vm.power_state)),
        fact("Guest OS", vm.guest_id),
        fact("VMware Tools", vm.tools_status),
        fact("CPUs", String(vm.cpus)),
        fact("Memory", bytes(vm.memory_mb * MiB)),
        fact("Firmware", vm.firmware),
        fact("Changed block tracking", vm.cbt_enabled ? "enabled" : "off (enabled on its first replication)"),
        fact("Datacenter", vm.datacenter),
        fact("Cluster", vm.cluster || "standalone host"),
        fact("Host", vm.host),
        fact("Last seen", when(vm.last_seen_at)),
        vm.state === "missing" ? fact("Missing since", when(vm.missing_since)) : null)),
    h("section.card", { "aria-labelledby": "vm-nics" },
      h("h2#vm-nics", "Network adapters"),
      table([
        ["Label", (n) => n.label || "–"],
        ["Device key", (n) => h("code", String(n.key))],
        ["Network", (n) => n.network || "–"],
        ["MAC", (n) => h("code", n.mac || "–")],
        ["Adapter", (n) => n.adapter || "–"],
      ], vm.nics, { caption: `Network adapters of ${vm.name}`, empty: "No network adapter." })),
    h("section.card", { "aria-labelledby": "vm-disks" },
      h("h2#vm-disks", `Disks (${vm.disks.length} · ${bytes(diskTotal(vm))})`),
      table([
        ["Label", (d) => d.label || "–"],
        ["Device key", (d) => h("code", String(d.key))],
        ["Plan source", (d) => h("code", `device:${d.key}`)],
        ["Capacity", (d) => bytes(d.capacity_bytes)],
        ["Datastore path", (d) => h("code", d.file || "–")],
        ["Datastore", (d) => d.datastore || "–"],
        ["Controller", (d) => `${d.controller || "–"} (${d.bus || "?"} ${d.unit})`],
        ["Change id", (d) => (d.change_id ? h("code", d.change_id) : "–")],
      ], vm.disks, { caption: `Disks of ${vm.name}`, empty: "No disk." })));
}
