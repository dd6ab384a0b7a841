// The Lifeboat console: hash routing, login state, role-aware navigation.
import { session, get, announce, errorText, can } from "./lib.js";
import { renderLogin } from "./pages/login.js";
import { renderDashboard } from "./pages/dashboard.js";
import { renderInventory, renderInventoryVm } from "./pages/inventory.js";
import { renderPlans, renderPlanBuilder } from "./pages/plans.js";
import { renderJobs, renderJob } from "./pages/jobs.js";
import { renderPoints, renderRecovery } from "./pages/points.js";
import { renderSettings } from "./pages/settings.js";
import { renderReports } from "./pages/reports.js";

const ROUTES = [
  [/^\/dashboard$/, renderDashboard, "Dashboard", "dashboard"],
  [/^\/inventory$/, renderInventory, "Inventory", "inventory"],
  [/^\/inventory\/vms\/([^/]+)$/, renderInventoryVm, "Virtual machine", "inventory"],
  [/^\/plans$/, renderPlans, "Plans", "plans"],
  [/^\/plans\/new$/, renderPlanBuilder, "Plan builder", "plans"],
  [/^\/plans\/([^/]+)\/edit$/, renderPlanBuilder, "Edit plan", "plans"],
  [/^\/jobs$/, renderJobs, "Jobs", "jobs"],
  [/^\/jobs\/([^/]+)$/, renderJob, "Job", "jobs"],
  [/^\/points$/, renderPoints, "Recovery points", "points"],
  [/^\/recoveries\/([^/]+)$/, renderRecovery, "Recovery report", "points"],
  [/^\/reports$/, renderReports, "Reports", "reports"],
  [/^\/settings$/, renderSettings, "Settings", "settings"],
];

let current = null; // the page's context: its timers stop when the page changes

function newContext() {
  const timers = [];
  const ctx = {
    alive: true,
    every(fn, ms) {
      const tick = async () => {
        if (!ctx.alive) return;
        try { await fn(); } catch (err) { announce(errorText(err), "error"); }
        if (ctx.alive) timers.push(setTimeout(tick, ms));
      };
      timers.push(setTimeout(tick, ms));
    },
    stop() { ctx.alive = false; timers.forEach(clearTimeout); },
  };
  return ctx;
}

async function loadMe() {
  if (!session.token) return null;
  try {
    session.me = await get("/auth/me");
  } catch {
    session.me = null;
  }
  return session.me;
}

function chrome(page) {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  const signedIn = !!session.me;
  nav.hidden = !signedIn;
  who.hidden = !signedIn;
  if (!signedIn) return;
  document.getElementById("who-name").textContent = `${session.me.subject} (${session.me.roles.join(", ")})`;
  for (const li of nav.querySelectorAll("[data-needs]")) li.hidden = !can(li.dataset.needs);
  for (const a of nav.querySelectorAll("a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  if (current) current.stop();
  current = newContext();
  const ctx = current;
  const main = document.getElementById("main");
  const [path, query] = (location.hash.replace(/^#/, "") || "/dashboard").split("?");
  ctx.query = new URLSearchParams(query || "");
  const signedIn = session.me || (await loadMe());
  if (!ctx.alive) return; // a newer navigation took over while we waited
  if (!signedIn) {
    chrome(null);
    document.title = "Sign in · Lifeboat";
    main.replaceChildren();
    renderLogin(main, () => {
      const target = path === "/login" ? "#/dashboard" : `#${path}${query ? `?${query}` : ""}`;
      if (location.hash === target) route();
      else location.hash = target; // hashchange routes
    });
    return;
  }
  if (path === "/login") { location.hash = "#/dashboard"; return; }
  const found = ROUTES.map(([re, fn, title, page]) => [re.exec(path), fn, title, page]).find(([m]) => m);
  if (!found) { location.hash = "#/dashboard"; return; }
  const [match, render, title, page] = found;
  chrome(page);
  document.title = `${title} · Lifeboat`;
  main.replaceChildren();
  try {
    await render(main, match.slice(1).map(decodeURIComponent), ctx);
  } catch (err) {
    if (ctx.alive) announce(errorText(err), "error");
  }
  if (ctx.alive && document.activeElement === document.body) main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", route);
window.addEventListener("lifeboat:logged-out", () => { if (current) current.stop(); route(); });
document.getElementById("logout").addEventListener("click", () => {
  session.token = null;
  session.me = null;
  announce("Signed out.");
  if (location.hash === "#/login") route();
  else location.hash = "#/login";
});
route();
