// Plans: the list with its actions, and the plan builder (create or edit). The API validates:
// a 422's details[].loc is shown next to the input with the same data-loc. A vmware or kvm
// source site's machines are picked from its inventory (the API builds each VM's machine);
// other sites' machines name image files or block devices.
import { h, get, post, api, all, table, badge, when, field, action, announce, submit, can, busy, fill, bytes, errorText } from "../lib.js";

export async function renderPlans(main, _params, ctx) {
  const box = h("section.card", { "aria-labelledby": "plans-h" });
  main.append(h("div.page-head", h("h1#plans-h", "Protection plans"),
    can("operate") ? h("a.button.action", { href: "#/plans/new" }, "New plan") : null), box);

  async function refresh() {
    const plans = await get("/plans?limit=500");
    if (!ctx.alive) return;
    const act = (p, verb, label) => action("operate", label, async (ev) => {
      await busy(ev.target, async () => {
        const res = await post(`/plans/${encodeURIComponent(p.id)}/${verb}`);
        announce(verb === "replicate-now" ? `Replication job ${res.id} queued for ${p.name}.` : `${p.name}: ${label.toLowerCase()} done.`);
        await refresh();
      });
    }, { "aria-label": `${label} ${p.name}` });
    fill(box, table([
      ["Plan", (p) => h("span", h("strong", p.name), " ", h("code", p.id))],
      ["State", (p) => badge(p.state)],
      ["Machines", (p) => p.machines.map((m) => m.machine_id).join(", ")],
      ["RPO", (p) => `${p.rpo_minutes} min`],
      ["Target site", (p) => p.target_site_id],
      ["Updated", (p) => when(p.updated_at)],
      ["Actions", (p) => h("div.actions",
        p.state === "draft" ? act(p, "protect", "Protect") : null,
        p.state === "active" ? act(p, "replicate-now", "Replicate now") : null,
        p.state === "active" ? act(p, "pause", "Pause") : null,
        p.state === "paused" ? act(p, "resume", "Resume") : null,
        can("operate") ? h("a.button.secondary.action", { href: `#/plans/${encodeURIComponent(p.id)}/edit`, "aria-label": `Edit ${p.name}` }, "Edit") : null,
        h("a.button.secondary", { href: `#/points?plan=${encodeURIComponent(p.id)}` }, "Points"),
        action("operate", "Delete", async (ev) => {
          if (!confirm(`Delete plan ${p.name}? Its recovery points stay in the repository.`)) return;
          await busy(ev.target, async () => { await api("DELETE", `/plans/${encodeURIComponent(p.id)}`); announce(`Plan ${p.name} deleted.`); await refresh(); });
        }, { "aria-label": `Delete ${p.name}`, class: "action danger" }))],
    ], plans.items, { empty: "No plan yet." }));
  }
  await refresh();
  ctx.every(refresh, 5000);
}

const blankMachine = (n) => ({ machine_id: `vm${n}`, name: "", disks: [{ disk_id: `vm${n}-d0`, source: "", block_size: "" }], networks: "", boot_marker: "", instance_type: "", private_ip: "" });
const isBlank = (x) => !x.vm && x.disks.every((d) => !d.source);
// a machine as the API has it -> the builder's model (a VM's networks stay a list: they come from its NICs)
const formMachine = (x) => ({ ...x, networks: x.vm ? [...x.networks] : x.networks.join(", "), name: x.name || "", boot_marker: x.boot_marker || "",
  instance_type: x.instance_type || "", private_ip: x.private_ip || "", disks: x.disks.map((d) => ({ ...d, block_size: d.block_size || "" })) });

export async function renderPlanBuilder(main, [planId], ctx) {
  if (!can("operate")) { main.append(h("h1", "Plan builder"), h("p", "Your roles do not allow changing plans.")); return; }
  const sites = (await get("/sites?limit=500")).items;
  const siteById = Object.fromEntries(sites.map((s) => [s.id, s]));
  const isVmware = (id) => !!(siteById[id] && siteById[id].site_kind === "vmware");
  const hasInventory = (id) => !!(siteById[id] && ["vmware", "kvm"].includes(siteById[id].site_kind));
  const inventories = {}; // site id -> { vms, networks } | { loading } | { error }
  let revision = null;
  let m = {
    id: "", name: "", source_site_id: sites[0] ? sites[0].id : "", target_site_id: sites[0] ? sites[0].id : "",
    rpo_minutes: 15, retention: { keep_last: 24, keep_hourly: "", keep_daily: 7, keep_weekly: "", keep_monthly: "", keep_yearly: "" },
    machines: [blankMachine(1)], network_mapping: [], boot_groups: [], scripts: [], boot_timeout_seconds: 300, bandwidth_limit_mbps: "",
    quiesce: "",
  };
  if (planId) {
    const p = await get(`/plans/${encodeURIComponent(planId)}`);
    revision = p.revision;
    m = {
      ...p,
      retention: Object.fromEntries(Object.entries(p.retention).map(([k, v]) => [k, v ?? ""])),
      machines: p.machines.map(formMachine),
      network_mapping: p.network_mapping.map((n) => ({ ...n, test_network: n.test_network || "", security_groups: n.security_groups.join(", ") })),
      boot_groups: p.boot_groups.map((g) => ({ ...g, machines: g.machines.join(", ") })),
      bandwidth_limit_mbps: p.bandwidth_limit_mbps ?? "",
      quiesce: p.quiesce === null || p.quiesce === undefined ? "" : String(p.quiesce),
    };
  }
  if (!ctx.alive) return;
  if (!planId && hasInventory(m.source_site_id)) m.machines = [];
  const title = planId ? `Edit plan ${planId}` : "New protection plan";
  const form = h("form.card.builder", { novalidate: true, "aria-labelledby": "builder-h" });
  main.append(h("h1#builder-h", title), form);

  // an input bound to m at a dotted path (its data-loc is the API's loc for the same field)
  const bind = (obj, key, loc, attrs = {}) => {
    const el = h(attrs.tag || "input", { "data-loc": loc, value: obj[key] ?? "", ...attrs, tag: undefined,
      oninput: (ev) => { obj[key] = ev.target.type === "checkbox" ? ev.target.checked : ev.target.value; } });
    if (el.tagName === "SELECT") el.value = obj[key] ?? "";
    return el;
  };
  const siteSelect = (key) => bind(m, key, key, { tag: "select" });
  const num = (v) => (v === "" || v === null || v === undefined ? null : Number(v));
  const list = (v) => String(v || "").split(",").map((x) => x.trim()).filter(Boolean);

  function body() {
    const b = {
      name: m.name, source_site_id: m.source_site_id, target_site_id: m.target_site_id,
      rpo_minutes: num(m.rpo_minutes), boot_timeout_seconds: num(m.boot_timeout_seconds),
      retention: Object.fromEntries(Object.entries(m.retention).map(([k, v]) => [k, k === "keep_within" ? v || null : num(v)])),
      bandwidth_limit_mbps: num(m.bandwidth_limit_mbps),
      quiesce: m.quiesce === "" ? null : m.quiesce === "true",
      machines: m.machines.map((x) => ({
        machine_id: x.machine_id, name: x.name || null, instance_type: x.instance_type || null, private_ip: x.private_ip || null,
        networks: Array.isArray(x.networks) ? x.networks : list(x.networks), boot_marker: x.boot_marker || null,
        vm: x.vm || null,
        disks: x.disks.map((d) => ({ disk_id: d.disk_id, source: d.source, block_size: num(d.block_size), changed_extents: d.changed_extents || null })),
      })),
      network_mapping: m.network_mapping.map((n) => ({ source_network: n.source_network, target_network: n.target_network,
        test_network: n.test_network || null, security_groups: list(n.security_groups) })),
      boot_groups: m.boot_groups.map((g) => ({ name: g.name, machines: list(g.machines), delay_seconds: num(g.delay_seconds) ?? 0 })),
      scripts: m.scripts.map((s) => ({ when: s.when, command: s.command, timeout_seconds: num(s.timeout_seconds) ?? 300 })),
    };
    if (m.window) b.window = m.window;
    if (revision !== null) b.revision = revision;
    else if (m.id) b.id = m.id;
    return b;
  }

  const small = (label, onclick, attrs = {}) => h("button.secondary.small", { type: "button", onclick, ...attrs }, label);
  function moveGroup(i, d, focusKey) {
    const g = m.boot_groups;
    [g[i], g[i + d]] = [g[i + d], g[i]];
    // keep the focus on the moved group: the same button, or the other one at an end
    render([`${focusKey}-${i + d}`, `${focusKey === "up" ? "down" : "up"}-${i + d}`]);
    announce(`Boot group ${g[i + d].name || i + d + 1} moved to position ${i + d + 1}.`);
  }

  // --- a vmware or kvm source site: its inventory, and VMs picked from it ---
  async function loadInventory(siteId) {
    if (inventories[siteId]) return;
    inventories[siteId] = { loading: true };
    const q = `site_id=${encodeURIComponent(siteId)}&limit=500`;
    try {
      const [vms, nets] = await Promise.all([all(`/inventory/vms?${q}`),
        isVmware(siteId) ? all(`/inventory/objects?${q}&object_type=network`) : []]); // KVM: no networks discovered
      vms.sort((a, b) => a.name.localeCompare(b.name));
      inventories[siteId] = { vms, networks: nets.filter((n) => n.state === "present").map((n) => n.name) };
    } catch (err) {
      inventories[siteId] = { error: errorText(err) };
    }
    if (ctx.alive) render();
  }
  const inventoryVm = (x) => {
    const inv = x.vm && inventories[m.source_site_id];
    return inv && inv.vms ? inv.vms.find((v) => v.id === x.vm.inventory_id || v.moref === x.vm.moref) : null;
  };
  const machineNetworks = () => [...new Set(m.machines.flatMap((x) => (Array.isArray(x.networks) ? x.networks : list(x.networks))))];
  const unmapped = () => { const mapped = new Set(m.network_mapping.map((n) => n.source_network)); return machineNetworks().filter((n) => !mapped.has(n)); };

  function unpick(inventoryId, name) {
    const gone = m.machines.filter((x) => x.vm && x.vm.inventory_id === inventoryId).map((x) => x.machine_id);
    m.machines = m.machines.filter((x) => !(x.vm && x.vm.inventory_id === inventoryId));
    for (const g of m.boot_groups) g.machines = list(g.machines).filter((id) => !gone.includes(id)).join(", ");
    render([`pick-${inventoryId}`]);
    announce(`VM ${name} is no longer in the plan.`);
  }

  async function pick(vm, box) {
    const added = await busy(box, async () => {
      const path = `/inventory/vms/${encodeURIComponent(vm.id)}/machine`;
      let machine = await post(path, {});
      const taken = new Set(m.machines.map((x) => x.machine_id));
      if (taken.has(machine.machine_id)) {
        let n = 2;
        while (taken.has(`${machine.machine_id}-${n}`)) n++;
        machine = await post(path, { machine_id: `${machine.machine_id.slice(0, 120)}-${n}` });
      }
      m.machines = m.machines.filter((x) => !isBlank(x));
      m.machines.push(formMachine(machine));
      return machine;
    });
    render([`pick-${vm.id}`]);
    if (added) announce(`VM ${vm.name} added as machine ${added.machine_id} (${added.disks.length} disk(s)).`);
  }

  function sourceChanged() {
    const vms = m.machines.filter((x) => x.vm);
    if (vms.length) {
      m.machines = m.machines.filter((x) => !x.vm);
      announce(`${vms.length} VM machine(s) of the previous source site removed from the plan.`);
    }
    if (hasInventory(m.source_site_id)) m.machines = m.machines.filter((x) => !isBlank(x));
    else if (!m.machines.length) m.machines.push(blankMachine(1));
    render(["source"]);
  }

  function vmPicker() {
    const sid = m.source_site_id;
    const site = siteById[sid];
    const inv = inventories[sid];
    const legend = h("legend", `VMs of ${site.name} (${sid})`);
    if (!inv || inv.loading) { loadInventory(sid); return h("fieldset.vm-picker", legend, h("p.hint", "Loading the inventory…")); }
    if (inv.error) return h("fieldset.vm-picker", legend, h("p.form-error", `The inventory could not be read: ${inv.error}`));
    const picked = new Set(m.machines.filter((x) => x.vm).map((x) => x.vm.inventory_id));
    const shown = inv.vms.filter((v) => v.state === "present" || picked.has(v.id));
    const last = site.last_inventory_sync;
    const vmware = site.site_kind === "vmware";
    const snapshots = bind(m, "quiesce", "quiesce", { tag: "select" });
    snapshots.append(
      h("option", { value: "" }, `Site default (${site.vcenter && site.vcenter.quiesce ? "quiesced" : "crash-consistent"})`),
      h("option", { value: "true" }, "Quiesced (VMware Tools, when running)"),
      h("option", { value: "false" }, "Crash-consistent"));
    snapshots.value = m.quiesce;
    const connected = vmware ? site.vcenter : site.kvm;
    return h("fieldset.vm-picker", legend,
      !connected ? h("p.hint", `This site has no ${vmware ? "vCenter connection" : "QMP sockets"} yet: connect it on the `, h("a", { href: "#/inventory" }, "Inventory"), " page.") : null,
      h("p.hint", last ? `As the inventory sync of ${new Date(last.at).toLocaleString()} saw them; ` : "",
        vmware ? "each VM picked becomes a machine with every disk (by device key) and its NICs' networks."
          : "each VM picked becomes a machine with every disk (by its position among the VM's disks)."),
      shown.length
        ? h("ul.vm-picks", shown.map((v) => {
          const id = `pick-${v.id}`;
          const total = v.disks.reduce((sum, d) => sum + d.capacity_bytes, 0);
          return h("li",
            h("input", { type: "checkbox", id, checked: picked.has(v.id), "data-focus": id, "aria-describedby": `${id}-about`,
              onchange: (ev) => (ev.target.checked ? pick(v, ev.target) : unpick(v.id, v.name)) }),
            h("label.pick", { htmlFor: id }, v.name),
            h("small.hint", { id: `${id}-about` },
              `${v.cpus} CPU · ${bytes(v.memory_mb * 1024 * 1024)} · ${v.disks.length} disk(s), ${bytes(total)} · ${v.cluster || v.host || v.datacenter}`),
            v.state === "missing" ? badge("missing") : null);
        }))
        : h("p.empty", "No VM discovered yet: sync the site's inventory on the Inventory page."),
      vmware ? h("div.row", (() => { const f = field("VM snapshots", snapshots, "How the VMs' snapshots are taken for each replication"); f.classList.add("narrow"); return f; })()) : null);
  }

  function render(focus) {
    const vmware = isVmware(m.source_site_id);
    const inventoried = hasInventory(m.source_site_id); // machines picked from the source site's inventory
    const siteOptions = sites.map((s) => h("option", { value: s.id }, `${s.name} (${s.id})`));
    const src = siteSelect("source_site_id");
    src.append(...siteOptions.map((o) => o.cloneNode(true)));
    src.value = m.source_site_id;
    src.dataset.focus = "source";
    src.addEventListener("change", sourceChanged);
    const tgt = siteSelect("target_site_id");
    tgt.append(...siteOptions);
    tgt.value = m.target_site_id;

    // the fields every machine has, whether typed in or picked from the inventory
    const identityRow = (x, i) => h("div.row",
      field("Machine id", bind(x, "machine_id", `machines.${i}.machine_id`, { required: true })),
      field("Name", bind(x, "name", `machines.${i}.name`)),
      field("Instance type", bind(x, "instance_type", `machines.${i}.instance_type`)),
      field("Private IP", bind(x, "private_ip", `machines.${i}.private_ip`)));

    const vmMachine = (x, i) => {
      const seen = inventoryVm(x);
      const disk = (d) => seen && seen.disks.find((k) => `device:${k.key}` === d.source);
      return h("fieldset.machine.vm-machine", { "data-loc": `machines.${i}` },
        h("legend", `Machine ${i + 1}: VM ${x.name || x.vm.moref}`),
        h("p.hint", vmware ? "vSphere VM " : "KVM VM ", h("code", x.vm.moref),
          x.vm.instance_uuid ? [vmware ? " · instance UUID " : " · UUID ", h("code", x.vm.instance_uuid)] : null,
          seen && seen.state === "missing" ? [" ", badge("missing"), " not seen by the last inventory sync"] : null),
        identityRow(x, i),
        h("div.row",
          field("Networks", h("input", { "data-loc": `machines.${i}.networks`, value: x.networks.join(", ") || "none", readOnly: true }), "The VM's NIC networks (from the inventory)"),
          field("Boot marker", bind(x, "boot_marker", `machines.${i}.boot_marker`), "Serial-console text once up (empty: power state only)")),
        x.disks.map((d, j) => h("div.row.disk",
          field(`Disk ${j + 1} id`, bind(d, "disk_id", `machines.${i}.disks.${j}.disk_id`)),
          field(`Disk ${j + 1} source`, h("input", { "data-loc": `machines.${i}.disks.${j}.source`, value: d.source, readOnly: true }),
            disk(d) ? `${bytes(disk(d).capacity_bytes)} · ${disk(d).file}` : (vmware ? "A disk of the VM, by device key" : "A disk of the VM, by position")),
          field(`Disk ${j + 1} block size`, bind(d, "block_size", `machines.${i}.disks.${j}.block_size`, { type: "number", placeholder: "65536" })))),
        h("div.actions",
          small("Remove machine", () => unpick(x.vm.inventory_id, x.name || x.vm.moref), { "aria-label": `Remove machine ${i + 1}` })));
    };

    const machines = m.machines.map((x, i) => (x.vm ? vmMachine(x, i) : h("fieldset.machine", { "data-loc": `machines.${i}` },
      h("legend", `Machine ${i + 1}`),
      identityRow(x, i),
      h("div.row",
        field("Networks", bind(x, "networks", `machines.${i}.networks`), "Source networks of its NICs, comma-separated"),
        field("Boot marker", bind(x, "boot_marker", `machines.${i}.boot_marker`), "Serial-console text once up (empty: power state only)")),
      x.disks.map((d, j) => h("div.row.disk",
        field(`Disk ${j + 1} id`, bind(d, "disk_id", `machines.${i}.disks.${j}.disk_id`)),
        field(`Disk ${j + 1} source`, bind(d, "source", `machines.${i}.disks.${j}.source`, { placeholder: "/path/to/image or /dev/sdX" })),
        field(`Disk ${j + 1} block size`, bind(d, "block_size", `machines.${i}.disks.${j}.block_size`, { type: "number", placeholder: "65536" })),
        x.disks.length > 1 ? small("Remove disk", () => { x.disks.splice(j, 1); render(); }, { "aria-label": `Remove disk ${j + 1} of machine ${i + 1}` }) : null)),
      h("div.actions",
        small("Add disk", () => { x.disks.push({ disk_id: `${x.machine_id}-d${x.disks.length}`, source: "", block_size: "" }); render(); }, { "aria-label": `Add a disk to machine ${i + 1}` }),
        m.machines.length > 1 || inventoried ? small("Remove machine", () => { m.machines.splice(i, 1); render(); }, { "aria-label": `Remove machine ${i + 1}` }) : null))));

    // a vmware source: the source networks are the discovered ones (and the picked VMs' NICs)
    const inv = vmware ? inventories[m.source_site_id] : null;
    const choices = [...new Set([...((inv && inv.networks) || []), ...machineNetworks(), ...m.network_mapping.map((n) => n.source_network)])]
      .filter(Boolean).sort((a, b) => a.localeCompare(b));
    const sourceNetwork = (n, i) => {
      if (!vmware) return bind(n, "source_network", `network_mapping.${i}.source_network`);
      const el = bind(n, "source_network", `network_mapping.${i}.source_network`, { tag: "select", "data-focus": `net-${i}` });
      el.append(h("option", { value: "" }, "Choose a network"), ...choices.map((c) => h("option", { value: c }, c)));
      el.value = n.source_network;
      el.addEventListener("change", () => render([`net-${i}`]));
      return el;
    };
    const missingMaps = unmapped();

    const mappings = m.network_mapping.map((n, i) => h("div.row", { "data-loc": `network_mapping.${i}` },
      field("Source network", sourceNetwork(n, i), vmware ? "Discovered in the source site's vCenter" : null),
      field("Target network", bind(n, "target_network", `network_mapping.${i}.target_network`)),
      field("Test network", bind(n, "test_network", `network_mapping.${i}.test_network`), "Isolated; used by test recoveries"),
      field("Security groups", bind(n, "security_groups", `network_mapping.${i}.security_groups`)),
      small("Remove", () => { m.network_mapping.splice(i, 1); render(); }, { "aria-label": `Remove network mapping ${i + 1}` })));

    const groups = m.boot_groups.map((g, i) => h("li.boot-group", { "data-loc": `boot_groups.${i}` },
      h("span.order", { "aria-hidden": "true" }, `${i + 1}`),
      field("Group name", bind(g, "name", `boot_groups.${i}.name`)),
      field("Machines", bind(g, "machines", `boot_groups.${i}.machines`), "Machine ids, comma-separated"),
      field("Delay (s)", bind(g, "delay_seconds", `boot_groups.${i}.delay_seconds`, { type: "number", min: 0 }), "After the previous group booted"),
      h("div.actions",
        small("Move up", () => moveGroup(i, -1, "up"), { disabled: i === 0, "data-focus": `up-${i}`, "aria-label": `Move boot group ${i + 1} up` }),
        small("Move down", () => moveGroup(i, 1, "down"), { disabled: i === m.boot_groups.length - 1, "data-focus": `down-${i}`, "aria-label": `Move boot group ${i + 1} down` }),
        small("Remove", () => { m.boot_groups.splice(i, 1); render(); }, { "aria-label": `Remove boot group ${i + 1}` }))));

    const scripts = m.scripts.map((s, i) => h("div.row", { "data-loc": `scripts.${i}` },
      field("When", (() => { const el = bind(s, "when", `scripts.${i}.when`, { tag: "select" });
        el.append(...["pre-replication", "post-replication", "pre-recovery", "post-recovery"].map((w) => h("option", { value: w }, w)));
        el.value = s.when; return el; })()),
      field("Command", bind(s, "command", `scripts.${i}.command`)),
      field("Timeout (s)", bind(s, "timeout_seconds", `scripts.${i}.timeout_seconds`, { type: "number" })),
      small("Remove", () => { m.scripts.splice(i, 1); render(); }, { "aria-label": `Remove script ${i + 1}` })));

    const r = m.retention;
    fill(form,
      h("div.error-summary", { tabindex: -1, role: "alert", hidden: true }),
      h("fieldset", h("legend", "Plan"),
        h("div.row",
          revision === null ? field("Plan id", bind(m, "id", "id", { placeholder: "optional, e.g. shop" })) : null,
          field("Name", bind(m, "name", "name", { required: true })),
          field("Source site", src), field("Target site", tgt))),
      h("fieldset", h("legend", "Schedule and retention"),
        h("div.row",
          field("RPO (minutes)", bind(m, "rpo_minutes", "rpo_minutes", { type: "number", min: 1 })),
          field("Bandwidth limit (Mbit/s)", bind(m, "bandwidth_limit_mbps", "bandwidth_limit_mbps", { type: "number" }))),
        h("div.row", ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"].map((k) =>
          field(k.replace("keep_", "Keep ").replace("last", "last N"), bind(r, k, `retention.${k}`, { type: "number", min: 0 }))))),
      h("fieldset", { "data-loc": "machines" }, h("legend", "Machines and disks"),
        inventoried ? vmPicker() : null,
        machines,
        inventoried ? null : small("Add machine", () => { m.machines.push(blankMachine(m.machines.length + 1)); render(); })),
      h("fieldset", { "data-loc": "network_mapping" }, h("legend", "Network mapping"),
        mappings.length ? mappings : h("p.hint", "No mapping: machines without networks need none."),
        missingMaps.length ? h("p.hint.unmapped", "Networks of the machines with no mapping yet: ", missingMaps.map((n, k) => [k ? ", " : "", h("strong", n)])) : null,
        small("Add mapping", () => {
          m.network_mapping.push({ source_network: unmapped()[0] || "", target_network: "", test_network: "", security_groups: "" });
          render([`net-${m.network_mapping.length - 1}`]);
        })),
      h("fieldset", h("legend", "Boot order"),
        h("ol.boot-groups", groups),
        small("Add boot group", () => { m.boot_groups.push({ name: `group${m.boot_groups.length + 1}`, machines: "", delay_seconds: 0 }); render(); }),
        h("div.row", field("Boot validation timeout (s)", bind(m, "boot_timeout_seconds", "boot_timeout_seconds", { type: "number", min: 10 })))),
      h("fieldset", h("legend", "Scripts"), scripts,
        small("Add script", () => { m.scripts.push({ when: "post-recovery", command: "", timeout_seconds: 300 }); render(); })),
      h("div.actions",
        h("button.action", { type: "submit" }, revision === null ? "Create plan" : "Save plan"),
        h("a.button.secondary", { href: "#/plans" }, "Cancel")));
    for (const key of focus || []) {
      const el = form.querySelector(`[data-focus="${key}"]`);
      if (el && !el.disabled) { el.focus(); break; }
    }
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await submit(form,
      () => (revision === null ? post("/plans", body()) : api("PUT", `/plans/${encodeURIComponent(planId)}`, body())),
      (plan) => {
        announce(`Plan ${plan.name} saved (${plan.state}).`);
        location.hash = "#/plans";
      },
      "The plan was not saved: see the errors in the form.");
  });
  render();
}
