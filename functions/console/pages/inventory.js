// Inventory: sites and nodes (heartbeat, health, capacity, revocation); add a site; create an
// enrollment token (nodes register with it and get their own credential).
// A vmware site gets a vCenter panel (its connection, never the password), a kvm site a KVM
// host panel (its VMs' QMP sockets); both show the last inventory sync, "Sync now", and the
// VMs the syncs discovered; each VM has a detail page.
import { h, get, post, api, table, badge, when, ago, field, action, announce, submit, can, busy, fill, bytes } from "../lib.js";
import { MiB, diskTotal, kvmPanel, power, vcenterPanel, vmState } from "./sources.js";

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
      ["Recovery target", (s) => (s.recovery_target
        ? s.recovery_target.platform + (s.recovery_target.prepare_guest === false ? ", no guest prep" : "") : "none")],
      ["", (s) => action("operate", "Delete", async (ev) => {
        if (!confirm(`Delete site ${s.id}?`)) return;
        await busy(ev.target, async () => { await api("DELETE", `/sites/${encodeURIComponent(s.id)}`); announce(`Site ${s.id} deleted.`); await refresh(); });
      }, { "aria-label": `Delete site ${s.id}` })],
    ], sites.items, { caption: "Sites", empty: "No site." }), can("operate") ? siteForm(refresh) : null);

    fill(vcBox, sites.items.filter((s) => s.site_kind === "vmware" || s.site_kind === "kvm")
      .map((s) => (s.site_kind === "kvm" ? kvmPanel(s, ctx) : vcenterPanel(s, ctx))));

    fill(nodesBox, h("h2#inv-nodes", "Nodes"), table([
      ["Name", (n) => n.name],
      ["Site", (n) => n.site_id],
      ["Role", (n) => n.role],
      ["Health", (n) => badge(n.revoked ? "revoked" : (n.online ? "online" : "offline"))],
      ["Heartbeat", (n) => h("span", { title: n.heartbeat_at || "" }, ago(n.heartbeat_at))],
      ["Load / capacity", (n) => `${n.running_jobs} / ${n.capacity} disks`],
      ["Version", (n) => n.software_version || "–"],
      ["", (n) => (n.revoked ? null : action("administer", "Revoke", async (ev) => {
        if (!confirm(`Revoke node ${n.name} (${n.id})? Its credentials stop working at once; it can come back only by enrolling again.`)) return;
        await busy(ev.target, async () => { await post(`/nodes/${encodeURIComponent(n.id)}/revoke`); announce(`Node ${n.name} revoked.`); await refresh(); });
      }, { "aria-label": `Revoke node ${n.name}` }))],
    ], nodes.items, { caption: "Nodes", empty: "No node registered." }), can("administer") ? enrollmentForm(sites.items) : null);
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
    h("option", { value: "" }, "none"), h("option", { value: "qemu" }, "QEMU (this machine)"), h("option", { value: "aws" }, "AWS"),
    h("option", { value: "azure" }, "Azure"));
  const workDir = h("input", { name: "work_dir", "data-loc": "recovery_target.qemu.work_dir", placeholder: "QEMU work dir, AWS or Azure region" });
  // Azure needs more than a location: the recovery resource group and the staging container (docs/deploy-azure.md)
  const az = (name, placeholder) => h("input", { name, "data-loc": `recovery_target.azure.${name}`, placeholder });
  const azure = {
    subscription_id: az("subscription_id", "00000000-0000-0000-0000-000000000000"),
    resource_group: az("resource_group", "lifeboat-recovery"),
    container_url: az("container_url", "https://<account>.blob.core.windows.net/recovery-staging"),
    storage_account_id: az("storage_account_id", "/subscriptions/…/providers/Microsoft.Storage/storageAccounts/<account>"),
  };
  const azureRow = h("div.row", { hidden: true },
    field("Subscription id", azure.subscription_id), field("Resource group", azure.resource_group),
    field("Staging container URL", azure.container_url), field("Staging storage account id", azure.storage_account_id));
  // the Prep Node (docs/prep.md): drivers, fstab, network, registry prepared for the target
  const prepareGuest = h("input", { type: "checkbox", name: "prepare_guest", "data-loc": "recovery_target.prepare_guest", checked: true });
  platform.addEventListener("change", () => { azureRow.hidden = platform.value !== "azure"; });
  const form = h("form.card.inner", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { name: name.value, site_kind: kind.value, repository_url: repo.value };
      if (id.value) body.id = id.value;
      if (region.value) body.region = region.value;
      if (creds.value) body.credentials_ref = creds.value;
      if (platform.value === "qemu") body.recovery_target = { platform: "qemu", work_dir: workDir.value };
      if (platform.value === "aws") body.recovery_target = { platform: "aws", region: workDir.value };
      if (platform.value === "azure") {
        body.recovery_target = { platform: "azure", location: workDir.value };
        for (const [key, input] of Object.entries(azure)) body.recovery_target[key] = input.value;
      }
      if (body.recovery_target) body.recovery_target.prepare_guest = prepareGuest.checked;
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
  h("div.row", field("Recovery target", platform), field("Target location", workDir),
    field("Prepare guests for the target", prepareGuest, "drivers, fstab, network, registry (docs/prep.md)")),
  azureRow,
  h("button.action", { type: "submit" }, "Add site"));
  return form;
}

function enrollmentForm(sites) {
  const name = h("input", { name: "name", "data-loc": "name", required: true, placeholder: "e.g. rack2 or the autoscaling group" });
  const site = h("select", { name: "site" }, sites.map((s) => h("option", { value: s.id }, `${s.name} (${s.id})`)));
  const out = h("div.secret", { "aria-live": "polite" });
  const form = h("form.card.inner", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      await submit(form, () => post("/tokens", { name: name.value, roles: ["enrollment"] }), (tok) => {
        fill(out,
          h("p", h("strong", "Copy this token now: it is shown only once."), ` It expires ${tok.expires_at}.`),
          h("pre", h("code.token-secret", tok.secret)),
          h("p", "Save it to a file readable only by the node's user, then run on each node:"),
          h("pre", h("code", `lifeboat node run --api ${location.origin} --site ${site.value} --token-file enrollment.token --state-file /var/lib/lifeboat/node-state.json`)));
        announce("Enrollment token created: copy it now, it is shown only once.");
      });
    },
  },
  h("h3", "Enroll nodes"),
  h("p.hint", "A node registers with an enrollment token and receives its own credential, which it keeps in its state file and rotates; its heartbeat then shows above. One token may enroll many nodes until it expires or is revoked (Settings, tokens)."),
  h("div.error-summary", { tabindex: -1, role: "alert", hidden: true }),
  h("div.row", field("Token name", name), field("Site", site)),
  h("button.action", { type: "submit" }, "Create enrollment token"),
  out);
  return form;
}

// --- one VM -----------------------------------------------------------------------------------
export async function renderInventoryVm(main, [vmId], ctx) {
  const vm = await get(`/inventory/vms/${encodeURIComponent(vmId)}`);
  const site = await get(`/sites/${encodeURIComponent(vm.site_id)}`).catch(() => null);
  if (!ctx.alive) return;
  const kvm = !!(site && site.site_kind === "kvm");
  const fact = (label, value) => [h("dt", label), h("dd", value === "" || value === null || value === undefined ? "–" : value)];
  const facts = kvm
    ? [fact("Site", h("code", vm.site_id)),
      fact("VM id", h("code", vm.moref)),
      fact("SMBIOS UUID", h("code", vm.instance_uuid)),
      fact("Power", power(vm.power_state)),
      fact("CPUs", String(vm.cpus)),
      fact("Memory", bytes(vm.memory_mb * MiB)),
      fact("QMP socket", h("code", vm.host)),
      fact("Dirty bitmaps", vm.cbt_enabled ? "persistent (every disk is qcow2)" : "in memory only: a QEMU restart means a full read of its non-qcow2 disks")]
    : [fact("Site", h("code", vm.site_id)),
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
      fact("Host", vm.host)];
  const diskColumns = kvm
    ? [["Device", (d) => d.label || "–"],
      ["Position", (d) => h("code", String(d.key))],
      ["Plan source", (d) => h("code", `device:${d.key}`)],
      ["Capacity", (d) => bytes(d.capacity_bytes)],
      ["Image", (d) => h("code", d.file || "–")],
      ["Format", (d) => d.controller || "–"],
      ["Bus", (d) => d.bus || "–"]]
    : [["Label", (d) => d.label || "–"],
      ["Device key", (d) => h("code", String(d.key))],
      ["Plan source", (d) => h("code", `device:${d.key}`)],
      ["Capacity", (d) => bytes(d.capacity_bytes)],
      ["Datastore path", (d) => h("code", d.file || "–")],
      ["Datastore", (d) => d.datastore || "–"],
      ["Controller", (d) => `${d.controller || "–"} (${d.bus || "?"} ${d.unit})`],
      ["Change id", (d) => (d.change_id ? h("code", d.change_id) : "–")]];
  main.append(...[
    h("p", h("a", { href: "#/inventory" }, "← Inventory")),
    h("div.page-head", h("h1", `VM ${vm.name}`), vmState(vm)),
    h("section.card", { "aria-labelledby": "vm-facts" },
      h("h2#vm-facts", kvm ? "Virtual machine (KVM)" : "Virtual machine"),
      h("dl.facts", facts,
        fact("Last seen", when(vm.last_seen_at)),
        vm.state === "missing" ? fact("Missing since", when(vm.missing_since)) : null)),
    kvm ? null : h("section.card", { "aria-labelledby": "vm-nics" },
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
      table(diskColumns, vm.disks, { caption: `Disks of ${vm.name}`, empty: "No disk." }))].filter(Boolean));
}
