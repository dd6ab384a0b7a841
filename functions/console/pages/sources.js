// The Inventory page's panels of the sites whose VMs a node discovers: a vmware site's vCenter
// panel (its connection, never the password) and a kvm site's KVM host panel (its VMs' QMP
// sockets, which did not answer); both show the last inventory sync, "Sync now" and the VMs
// the syncs discovered. Also the VM helpers the VM detail page shares.
import { h, get, post, api, all, table, badge, when, ago, field, action, announce, submit, can, busy, fill, bytes } from "../lib.js";

export const MiB = 1024 * 1024;
const JOB_DONE = ["succeeded", "failed", "cancelled"];

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

export function power(state) {
  if (state === "poweredOn" || state === "running") return badge("on", "ok"); // vSphere, QEMU (query-status)
  if (state === "poweredOff") return badge("off", "off");
  if (state === "suspended" || state === "paused") return badge(state, "warning");
  return state || "–";
}

export function vmState(vm) {
  if (vm.state === "missing") {
    return h("span", badge("missing"), " ", h("small.hint", `since ${vm.missing_since ? new Date(vm.missing_since).toLocaleString() : "the last sync"}`));
  }
  return badge("present");
}

export const diskTotal = (vm) => vm.disks.reduce((sum, d) => sum + (d.capacity_bytes || 0), 0);
const vmLink = (vm) => h("a", { href: `#/inventory/vms/${encodeURIComponent(vm.id)}` }, vm.name);

/**
 * The panel of a site with an inventory: its connection (``kind.facts``), the last sync and
 * the one running, "Sync now" and "Disconnect", the VMs the syncs discovered, and the form
 * that sets the connection (``kind.form``). ``kind.p`` prefixes the panel's class names.
 */
function sourcePanel(site, ctx, kind) {
  const sid = site.id;
  const headId = `${kind.p}-${sid}`;
  const statusBox = h(`div.${kind.p}-status`);
  const vmsBox = h(`div.${kind.p}-vms`);
  const formBox = h("div");
  const panel = h(`section.card.${kind.cls}`, { "aria-labelledby": headId, "data-site": sid },
    h("h2", { id: headId }, kind.title(site)), statusBox, vmsBox, formBox);
  let watching = null; // an inventory-sync job still running: the panel follows it

  function showStatus(s, job, vms) {
    const conn = kind.connection(s);
    const last = s.last_inventory_sync;
    const running = job && !JOB_DONE.includes(job.state);
    const lastJob = job && last && job.id === last.job_id ? job : null;
    fill(statusBox,
      conn
        ? h("dl.facts",
          kind.facts(conn, s, lastJob, vms),
          h("dt", "Last sync"), h(`dd.${kind.p}-sync`,
            last
              ? [badge(last.ok ? "ok" : "failed"), " ", when(last.at), last.ok ? ` · ${last.vms} VM(s)` : null,
                last.job_id ? [" · ", h("a", { href: `#/jobs/${encodeURIComponent(last.job_id)}` }, `job ${last.job_id}`)] : null]
              : "never"),
          running ? [h("dt", "Now"), h(`dd.${kind.p}-running`, badge(job.state), " ", h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, `inventory sync ${job.id}`),
            job.progress && job.progress.message ? ` · ${job.progress.message}` : null)] : null)
        : h("p.hint", kind.notConnected, can("operate") ? "; connect it below." : "."),
      conn && last && !last.ok && last.error ? h("div.sync-error", { role: "note" }, h("strong", "The last sync failed: "), h("pre", last.error)) : null,
      conn ? h("div.actions",
        action("operate", running ? "Sync running…" : "Sync now", async (ev) => {
          await busy(ev.target, async () => {
            const j = await post(`/sites/${encodeURIComponent(sid)}/inventory/sync`, {});
            announce(`Inventory sync job ${j.id} queued for site ${sid}.`);
            watching = j.id;
            await refreshPanel();
          });
        }, { "aria-label": `Sync now ${sid}`, disabled: running }),
        action("operate", "Disconnect", async (ev) => {
          if (!confirm(kind.disconnect.confirm(sid))) return;
          await busy(ev.target, async () => {
            await api("DELETE", `/sites/${encodeURIComponent(sid)}/${kind.disconnect.path}`);
            announce(kind.disconnect.done(sid));
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
      ...kind.columns,
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
    showStatus(s, job, vms);
    showVms(vms);
    if (withForm) fill(formBox, can("operate") ? kind.form(s, saved) : null);
  }

  /** The connection was saved (``res``: the site and the sync job it queued). */
  async function saved(res, what) {
    watching = res.sync_job ? res.sync_job.id : null;
    announce(`${what} of site ${sid} saved; inventory sync job ${watching} queued.`);
    await refreshPanel(true);
  }

  fill(statusBox, h("p.hint", "Loading…"));
  refreshPanel(true).catch((err) => fill(statusBox, h("p.form-error", String(err.message || err))));
  ctx.every(async () => { if (watching && panel.isConnected) await refreshPanel(); }, 1000);
  return panel;
}

// --- vCenter ----------------------------------------------------------------------------------
export function vcenterPanel(site, ctx) {
  return sourcePanel(site, ctx, {
    cls: "vcenter", p: "vc",
    title: (s) => `vCenter of ${s.name} (${s.id})`,
    connection: (s) => s.vcenter,
    notConnected: "Not connected: the site has no vCenter yet",
    facts: (vc) => [
      h("dt", "URL"), h("dd", h("code.vc-url", vc.url)),
      h("dt", "User"), h("dd", h("span.vc-user", vc.username)),
      h("dt", "Certificate trust"), h("dd.vc-tls", tlsMode(vc.tls)),
      h("dt", "Snapshots"), h("dd", vc.quiesce ? "quiesced (VMware Tools), unless a plan says otherwise" : "crash-consistent, unless a plan says otherwise")],
    columns: [
      ["CBT", (v) => (v.cbt_enabled ? badge("on", "ok") : badge("off", "off"))],
      ["Cluster / host", (v) => `${v.cluster || "standalone"} / ${v.host || "–"}`]],
    disconnect: {
      path: "vcenter",
      confirm: (sid) => `Disconnect site ${sid} from its vCenter? Its stored password is deleted; the inventory stays.`,
      done: (sid) => `Site ${sid} disconnected from its vCenter.`,
    },
    form: vcenterForm,
  });
}

function vcenterForm(s, saved) {
  const sid = s.id;
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
        await saved(res, "vCenter connection");
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

// --- KVM host ---------------------------------------------------------------------------------
/** Why each socket did not answer at the last sync ("path: why" entries of its job's result). */
function unreachableBy(job) {
  const out = new Map();
  for (const entry of (job && job.result && job.result.unreachable) || []) {
    const at = entry.indexOf(": ");
    if (at > 0) out.set(entry.slice(0, at), entry.slice(at + 2));
  }
  return out;
}

export function kvmPanel(site, ctx) {
  return sourcePanel(site, ctx, {
    cls: "kvm", p: "kvm",
    title: (s) => `KVM host ${s.name} (${s.id})`,
    connection: (s) => s.kvm,
    notConnected: "Not connected: the site has no QMP sockets yet",
    facts: (conn, _s, lastJob, vms) => {
      const dead = unreachableBy(lastJob);
      const vmAt = new Map(vms.filter((v) => v.state === "present").map((v) => [v.host, v]));
      return [
        h("dt", `QMP sockets (${conn.qmp_sockets.length})`),
        h("dd", h("ul.kvm-sockets", conn.qmp_sockets.map((path) => h("li",
          h("code.kvm-socket", path),
          vmAt.has(path) ? [" → ", vmLink(vmAt.get(path))] : null,
          dead.has(path) ? [" ", badge("no answer", "warning"), " ", h("small.hint", dead.get(path))] : null)))),
        h("dt", "Read by"), h("dd", "a node on the host of these sockets, started with ", h("code", `--source-site ${site.id}`), " (or ", h("code", "*"), ")"),
      ];
    },
    columns: [
      ["Dirty bitmaps", (v) => (v.cbt_enabled ? badge("persistent", "ok") : badge("in memory", "off"))],
      ["QMP socket", (v) => h("code", v.host || "–")]],
    disconnect: {
      path: "kvm",
      confirm: (sid) => `Forget the QMP sockets of site ${sid}? The inventory stays.`,
      done: (sid) => `Site ${sid}: its QMP sockets are forgotten.`,
    },
    form: kvmForm,
  });
}

function kvmForm(s, saved) {
  const sid = s.id;
  const conn = s.kvm;
  const sockets = h("textarea", { "data-loc": "qmp_sockets", rows: 4, spellcheck: false, placeholder: "/run/lifeboat/web1.qmp" });
  sockets.value = conn ? conn.qmp_sockets.join("\n") : "";
  const form = h("form.card.inner.kvm-form", {
    novalidate: true,
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { qmp_sockets: sockets.value.split("\n").map((l) => l.trim()).filter(Boolean) };
      await submit(form, () => api("PUT", `/sites/${encodeURIComponent(sid)}/kvm`, body), (res) => saved(res, "KVM host connection"),
        "The QMP sockets were not saved.");
    },
  },
  h("h3", conn ? "Change the QMP sockets" : "Connect the KVM host"),
  h("p.hint", "One QMP socket per VM: the path each directly-run QEMU listens on (",
    h("code", "-qmp unix:PATH,server=on,wait=off"), "), on the host of the node that reads this site. ",
    "libvirt-managed VMs are not covered: libvirt holds their QMP monitor. Saving queues an inventory sync; a socket that does not answer is reported, its VM marked missing."),
  h("div.error-summary", { tabindex: -1, role: "alert", hidden: true }),
  h("div.row", field("QMP sockets", sockets, "Absolute paths, one per line")),
  h("button.action", { type: "submit" }, conn ? "Save connection" : "Connect"));
  return form;
}
