// Shared helpers: the REST client (bearer JWT in sessionStorage), DOM building, formatting.
// The console never decides anything the API owns: it shows what the API answers.

const TOKEN_KEY = "lifeboat.token";

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "Error";
    this.details = Array.isArray(e.details) ? e.details : [];
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(v) { if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY); },
  me: null,
};

export function can(permission) {
  return !!(session.me && session.me.permissions.includes(permission));
}

export async function api(method, path, body, { raw = false } = {}) {
  const headers = { Accept: raw ? "text/html" : "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401 && path !== "/auth/login") {
    session.token = null;
    session.me = null;
    window.dispatchEvent(new Event("lifeboat:logged-out"));
  }
  if (!res.ok) {
    let payload = null;
    try { payload = await res.json(); } catch { /* not JSON */ }
    throw new ApiError(res.status, payload);
  }
  if (raw) return res.text();
  if (res.status === 204) return null;
  return res.json();
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body === undefined ? {} : body);

/** Every item of a paged list (follows next_cursor; at most `max` pages). */
export async function all(path, max = 20) {
  const items = [];
  let cursor = null;
  for (let n = 0; n < max; n++) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
    items.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return items;
}

/** h("tag.class#id", {attrs}, ...children): strings become text nodes (never HTML). */
export function h(spec, attrs, ...children) {
  const [tagAndClasses, id] = spec.split("#");
  const [tag, ...classes] = tagAndClasses.split(".");
  const svg = ["svg", "polyline", "line", "circle", "rect", "text", "path", "g", "title"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag || "div");
  if (classes.length) el.setAttribute("class", classes.join(" "));
  if (id) el.id = id;
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (k in el && !svg && k !== "list" && k !== "form") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

/** Replace an element's children (null, false and undefined are skipped, arrays flattened). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** An action button: rendered only for callers whose roles allow it (class "action"). */
export function action(permission, label, onclick, attrs = {}) {
  if (!can(permission)) return null;
  return h("button.action", { type: "button", onclick, ...attrs }, label);
}

let statusTimer = null;
/** Announce an async outcome in the aria-live region. */
export function announce(message, kind = "info") {
  const el = document.getElementById("status");
  el.textContent = message;
  el.dataset.kind = kind;
  clearTimeout(statusTimer);
  if (kind !== "error") statusTimer = setTimeout(() => { el.textContent = ""; }, 6000);
}

export function errorText(err) {
  return err instanceof ApiError ? `${err.message} (${err.status} ${err.code})` : String(err.message || err);
}

/** Run an async action from a button: disables it meanwhile, announces failures. */
export async function busy(button, fn) {
  if (button) button.disabled = true;
  try {
    return await fn();
  } catch (err) {
    announce(errorText(err), "error");
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** Send `form` through the API: its submit button is busy meanwhile; errors from `request()`
 *  or `then(result)` are shown next to the fields they name (and `failed` announced), and the
 *  form's old errors are cleared as soon as `request()` succeeds. */
export async function submit(form, request, then, failed) {
  await busy(form.querySelector("button[type=submit]"), async () => {
    try {
      const result = await request();
      showErrors(form, null);
      await then(result);
    } catch (err) {
      showErrors(form, err);
      if (failed) announce(failed, "error");
    }
  });
}

/** A table of `rows`; `rowClass(row)` may name a class for a row (e.g. "missing"). */
export function table(columns, rows, { caption, empty = "Nothing yet.", rowClass } = {}) {
  if (!rows.length) return h("p.empty", caption ? `${caption}: ${empty}` : empty);
  return h("div.table-wrap",
    h("table",
      caption ? h("caption", caption) : null,
      h("thead", h("tr", columns.map((c) => h("th", { scope: "col" }, c[0])))),
      h("tbody", rows.map((r) => h("tr", { class: (rowClass && rowClass(r)) || null },
        columns.map((c) => h("td", { "data-label": c[0] }, c[1](r))))))));
}

export function badge(text, kind) {
  return h(`span.badge.badge-${kind || text}`, text);
}

// --- formatting ---
export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export const rate = (bps) => (bps ? `${bytes(bps)}/s` : "–");

export function seconds(s) {
  if (s === null || s === undefined) return "–";
  s = Number(s);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.round((s % 86400) / 3600)} h`;
}

/** ISO 8601 duration (as pydantic serialises a timedelta) to seconds. */
export function isoDuration(d) {
  if (d === null || d === undefined) return null;
  if (typeof d === "number") return d;
  const m = /^(-)?P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$/.exec(d);
  if (!m) return null;
  const v = (x) => Number(x || 0);
  const total = v(m[2]) * 86400 + v(m[3]) * 3600 + v(m[4]) * 60 + v(m[5]);
  return m[1] ? -total : total;
}

export function when(t) {
  if (!t) return "–";
  const d = new Date(t);
  return h("time", { dateTime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}

export function ago(t) {
  if (!t) return "never";
  return `${seconds((Date.now() - new Date(t).getTime()) / 1000)} ago`;
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h("div.field", h("label", { htmlFor: id }, label), input, hint ? h("small.hint", hint) : null);
}

/** Show a 422's details next to the inputs whose data-loc matches details[].loc (minus "body"). */
export function showErrors(form, err) {
  for (const old of form.querySelectorAll(".field-error")) old.remove();
  for (const el of form.querySelectorAll("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
    el.removeAttribute("aria-describedby");
  }
  const summary = form.querySelector(".error-summary");
  fill(summary);
  if (!err) return;
  const general = [];
  const details = err instanceof ApiError && err.details.length ? err.details : [{ loc: [], msg: errorText(err) }];
  for (const d of details) {
    let loc = (d.loc || []).map(String);
    if (loc[0] === "body") loc = loc.slice(1);
    let target = null;
    for (let n = loc.length; n > 0 && !target; n--) {
      target = form.querySelector(`[data-loc="${CSS.escape(loc.slice(0, n).join("."))}"]`);
    }
    const text = loc.length ? `${loc.join(".")}: ${d.msg}` : d.msg;
    if (!target) { general.push(text); continue; }
    const id = `err-${Math.random().toString(36).slice(2, 9)}`;
    const msg = h("p.field-error", { id }, d.msg);
    target.setAttribute("aria-invalid", "true");
    target.setAttribute("aria-describedby", id);
    (target.closest(".field") || target).after(msg);
  }
  if (general.length || details.length) {
    summary.append(h("p", `The API refused this: ${details.length} problem(s).`), h("ul", general.map((g) => h("li", g))));
    summary.hidden = false;
    summary.focus();
  }
}
