"""The web console as an administrator and a viewer use it: ``lifeboat up`` serves it at
``/console/``, a headless Chromium (Debian's ``chromium``, driven by Python Playwright)
clicks through it, and everything it does goes through the REST API.

The admin logs in, adds a site and a node token in the inventory, builds a plan (a 16 MiB
boot disk, a boot group, a reordered and removed second group, an inline 422 error first),
protects it, watches its replication job finish in the job monitor, browses the recovery
points, starts a test recovery from a chosen point, reads its report (stage rows,
evidence, HTML download), cleans it up, and creates a viewer. The viewer then sees no
action button on any page. Screenshots of every main page go to build/screenshots/.

The static serving is checked on its own: content types, CSP and caching headers, GET
only, and no way out of the console's folder.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.embedded.http_server import CONSOLE_DIR, make_server, serve_in_thread
from shared.api_client import ApiClient
from shared.errors import AuthenticationError
from tests.e2e.test_control_plane import Processes, free_port, wait_for
from tests.support.bootdisk import build_boot_disk

CHROMIUM = os.environ.get("LIFEBOAT_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
ACTION_NAMES = re.compile(
    r"^(Protect|Pause|Resume|Replicate now|Delete|Edit|New plan|Start recovery|Cancel|Clean up test recovery|"
    r"Add site|Create enrollment token|Create plan|Create user|Create token|Revoke|Disable|Enable|"
    r"Connect|Save connection|Sync now|Sync running…|Disconnect|Unlock)$"
)


def _need_browser() -> Any:
    """Playwright's sync API, or skip (fail under CI: the console tests must run there)."""
    problem = None
    try:
        from playwright import sync_api
    except ImportError:
        problem = "python playwright is not installed (pip install playwright)"
    if problem is None and not (Path(CHROMIUM).exists() and shutil.which(CHROMIUM)):
        problem = f"chromium not found at {CHROMIUM} (apt-get install chromium)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return sync_api


class ConsolePage:
    """A console page in headless Chromium at ``base``: page errors, failed requests and
    console errors are collected in ``problems`` (a test asserts none happened)."""

    def __init__(self, browser: Any, base: str, *, accept_downloads: bool = False) -> None:
        from playwright.sync_api import expect

        self.expect = expect
        context = browser.new_context(
            viewport={"width": 1366, "height": 900}, accept_downloads=accept_downloads
        )
        self.page = page = context.new_page()
        page.set_default_timeout(15_000)
        self.base = base
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda req: self.problems.append(f"request failed: {req.url} {req.failure}"))
        page.on(
            "console",
            lambda msg: (
                self.problems.append(msg.text)
                if msg.type == "error" and "Failed to load resource" not in msg.text
                else None
            ),
        )
        self.menu = page.get_by_role("navigation", name="Main")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def go(self, hash_: str) -> None:
        self.page.goto(f"{self.base}/console/#{hash_}")

    def login(self, user: str, secret: str) -> None:
        self.go("/login")
        self.page.get_by_label("User name").fill(user)
        self.page.get_by_label("Password").fill(secret)
        self.page.get_by_role("button", name="Sign in").click()
        self.expect(self.menu).to_be_visible()


# --- static serving ---------------------------------------------------------------------------
class _NoApi:
    def resolve(self, event: dict[str, Any], _context: Any) -> dict[str, Any]:
        return {"statusCode": 404, "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"error": {"code": "NotFound", "message": event["path"]}})}  # fmt: skip


@pytest.fixture
def static_server() -> Iterator[int]:
    server = make_server(_NoApi(), "127.0.0.1", 0)
    serve_in_thread(server)
    yield server.server_address[1]
    server.shutdown()


def _request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers=headers or {})  # the raw path: no client-side normalisation
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_console_files_are_served_read_only_with_strict_headers(static_server: int) -> None:
    port = static_server
    status, headers, _ = _request(port, "GET", "/")
    assert status == 302 and headers["location"] == "/console/"
    for path, ctype in [("/console/", "text/html"), ("/console/index.html", "text/html"),
                        ("/console/app.js", "text/javascript"), ("/console/pages/plans.js", "text/javascript"),
                        ("/console/styles.css", "text/css")]:  # fmt: skip
        status, headers, body = _request(port, "GET", path)
        assert status == 200, path
        assert headers["content-type"].startswith(ctype), (path, headers)
        assert "default-src 'self'" in headers["content-security-policy"]
        assert "'unsafe-inline'" not in headers["content-security-policy"]
        assert headers["cache-control"] == "no-cache" and headers["x-content-type-options"] == "nosniff"
        assert body
        again, _, empty = _request(port, "GET", path, {"If-None-Match": headers["etag"]})
        assert again == 304 and empty == b""
    index = (CONSOLE_DIR / "index.html").read_text()
    assert "<script>" not in index and "style=" not in index and "http" not in index.replace("http-equiv", "")
    status, headers, body = _request(port, "HEAD", "/console/app.js")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    for method in ("POST", "PUT", "DELETE"):
        assert _request(port, method, "/console/app.js")[0] == 405


@pytest.mark.parametrize(
    "path",
    [
        "/console/../functions/api/app.py",
        "/console/../../pyproject.toml",
        "/console/%2e%2e/__init__.py",
        "/console/%2e%2e/%2e%2e/api/app.py",
        "/console/..%2f..%2fapi%2fapp.py",
        "/console/pages/../../embedded/http_server.py",
        "/console/pages/..%5c..%5capi%5capp.py",
        "/console/%2fetc%2fpasswd",
        "/console//etc/passwd",
        "/console/__init__.py",
        "/console/./index.html/../../__init__.py",
        "/console/index.html%00.js",
    ],
)
def test_no_path_leaves_the_console_folder(static_server: int, path: str) -> None:
    status, _, body = _request(static_server, "GET", path)
    assert status == 404, (path, status)
    assert b"import" not in body and b"root:" not in body


# --- the console in a browser -------------------------------------------------------------------
def test_console_end_to_end(procs: Processes, tmp_path: Path) -> None:
    sync_api = _need_browser()
    expect = sync_api.expect
    SHOTS.mkdir(parents=True, exist_ok=True)
    # a real boot disk that stays up: with no boot marker QEMU validation checks that the
    # machine runs and its console shows no boot failure
    image = build_boot_disk(tmp_path / "web.img", marker="console-web", size_mib=16, stay=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs.start(
        "up",
        "up",
        "--data-dir",
        str(tmp_path / "data"),
        "--port",
        str(port),
        "--scheduler-seconds",
        "1",
        "--source-root",
        str(tmp_path),
    )
    password = wait_for(
        "admin password", lambda: re.search(r"password '([^']+)'", procs.log("up")), 60
    ).group(1)

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
        ui = ConsolePage(browser, base, accept_downloads=True)
        page, menu, problems, shot, go, login = ui.page, ui.menu, ui.problems, ui.shot, ui.go, ui.login

        # --- login and dashboard (/ redirects to the console)
        page.goto(base + "/")
        assert page.url.startswith(f"{base}/console/")
        expect(page.get_by_role("heading", name="Sign in to Lifeboat")).to_be_visible()
        shot("login")
        login("admin", password)
        expect(page.get_by_role("heading", name="Dashboard", exact=True)).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('lifeboat.token')").count(".") == 2  # a JWT
        assert page.evaluate("localStorage.length") == 0

        # --- inventory: add a site, create an enrollment token (shown once)
        admin = ApiClient(base)
        admin.login("admin", password)
        wait_for(
            "the local node to enroll",
            lambda: any(n["name"] == "local-node" for n in admin.pages("/nodes")),
            60,
        )
        menu.get_by_role("link", name="Inventory").click()
        expect(page.get_by_role("cell", name="local-node", exact=True)).to_be_visible()
        form = page.locator("form", has=page.get_by_role("heading", name="Add a site"))
        form.get_by_label("Id", exact=True).fill("dr")
        form.get_by_label("Name", exact=True).fill("DR site")
        form.get_by_label("Repository URL").fill(str(tmp_path / "dr-repo"))
        form.get_by_label("Credentials reference").fill("not a reference")
        form.get_by_role("button", name="Add site").click()
        expect(form.locator(".field-error")).to_contain_text("reference")  # the API's 422, inline
        expect(form.get_by_label("Credentials reference")).to_have_attribute("aria-invalid", "true")
        form.get_by_label("Credentials reference").fill("env:DR_KEY")
        form.get_by_label("Recovery target").select_option("qemu")
        form.get_by_label("Target location").fill(str(tmp_path / "dr-recovered"))
        expect(
            form.get_by_label("Prepare guests for the target")
        ).to_be_checked()  # the Prep Node is on by default
        form.get_by_label("Prepare guests for the target").uncheck()
        form.get_by_role("button", name="Add site").click()
        expect(page.get_by_role("cell", name="DR site")).to_be_visible()
        expect(page.get_by_role("cell", name="qemu, no guest prep")).to_be_visible()
        expect(page.locator("#status")).to_contain_text("Site dr created")
        # an Azure recovery target: its fields appear with the choice; a bad subscription id is a 422, inline
        expect(form.get_by_label("Name", exact=True)).to_have_value("")  # the form was rendered again
        form.get_by_label("Id", exact=True).fill("dr-azure")
        form.get_by_label("Name", exact=True).fill("DR Azure")
        form.get_by_label("Repository URL").fill(str(tmp_path / "dr-repo"))
        expect(form.get_by_label("Subscription id")).to_be_hidden()
        form.get_by_label("Recovery target").select_option("azure")
        form.get_by_label("Target location").fill("westeurope")
        form.get_by_label("Subscription id").fill("not-a-subscription")
        form.get_by_label("Resource group").fill("lifeboat-recovery")
        form.get_by_label("Staging container URL").fill(
            "https://drstaging.blob.core.windows.net/recovery-staging"
        )
        form.get_by_label("Staging storage account id").fill(
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/dr"
            "/providers/Microsoft.Storage/storageAccounts/drstaging"
        )
        form.get_by_role("button", name="Add site").click()
        expect(form.get_by_label("Subscription id")).to_have_attribute("aria-invalid", "true")
        form.get_by_label("Subscription id").fill("00000000-0000-0000-0000-000000000000")
        form.get_by_role("button", name="Add site").click()
        expect(page.get_by_role("cell", name="DR Azure")).to_be_visible()
        expect(page.locator("#status")).to_contain_text("Site dr-azure created")
        tokens = page.locator("form", has=page.get_by_role("heading", name="Enroll nodes"))
        tokens.get_by_label("Token name").fill("rack2")
        tokens.get_by_role("button", name="Create enrollment token").click()
        expect(tokens.locator(".token-secret")).to_have_text(re.compile(r"^lbt_"))
        shot("inventory")
        # revoke a node from the console (after a confirm): it shows revoked, its credential fails
        spare = ApiClient(base, admin.create_enrollment_token("spare")["secret"])
        node = spare.register_node(name="spare-node", site_id="local")
        spare.token = node["credential"]["secret"]
        page.reload()
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Revoke node spare-node").click()
        row = page.get_by_role("row", name=re.compile("spare-node"))
        expect(row.get_by_text("revoked")).to_be_visible()
        expect(page.get_by_role("button", name="Revoke node spare-node")).to_have_count(0)
        with pytest.raises(AuthenticationError):
            spare.heartbeat(node["id"], 0)

        # --- plan builder: an inline 422 first, then a valid plan
        menu.get_by_role("link", name="Plans").click()
        page.get_by_role("link", name="New plan").click()
        expect(page.get_by_role("heading", name="New protection plan")).to_be_visible()
        page.get_by_label("Plan id").fill("shop")
        page.get_by_label("Name", exact=True).first.fill("Shop")
        page.get_by_label("RPO (minutes)").fill("0")
        page.get_by_label("Machine id").fill("web")
        page.get_by_label("Disk 1 id").fill("web-d0")
        page.get_by_label("Disk 1 source").fill(str(image))
        page.get_by_label("Disk 1 block size").fill("65536")
        page.get_by_role("button", name="Create plan").click()
        rpo = page.get_by_label("RPO (minutes)")
        expect(rpo).to_have_attribute("aria-invalid", "true")
        expect(page.locator(".field-error").first).to_contain_text("greater than or equal to 1")
        rpo.fill("600")
        page.get_by_label("Boot validation timeout (s)").fill("30")
        page.get_by_role("button", name="Add boot group").click()
        page.get_by_label("Group name").fill("app")
        page.get_by_label("Machines", exact=True).fill("web")
        page.get_by_role("button", name="Add boot group").click()
        page.get_by_label("Group name").nth(1).fill("later")
        page.get_by_label("Delay (s)").nth(1).fill("5")
        page.get_by_role("button", name="Move boot group 2 up").click()  # reorder with buttons
        expect(page.get_by_label("Group name").first).to_have_value("later")
        expect(page.get_by_role("button", name="Move boot group 1 down")).to_be_focused()
        page.get_by_role("button", name="Move boot group 1 down").click()
        expect(page.get_by_label("Group name").first).to_have_value("app")
        shot("plan-builder")
        page.get_by_role("button", name="Remove boot group 2").click()  # would name no machine
        page.get_by_role("button", name="Create plan").click()
        expect(page.get_by_role("heading", name="Protection plans")).to_be_visible()
        expect(page.get_by_role("cell", name="Shop shop")).to_be_visible()

        # --- protect, and watch the replication job finish in the job monitor
        page.get_by_role("button", name="Protect Shop").click()
        expect(page.get_by_role("button", name="Replicate now Shop")).to_be_visible()
        shot("plans")
        menu.get_by_role("link", name="Jobs").click()
        job_link = page.get_by_role("row", name=re.compile("replication")).get_by_role("link").first
        expect(job_link).to_be_visible(timeout=30_000)
        job_link.click()
        expect(page.locator(".job-state")).to_have_attribute("data-state", "succeeded", timeout=120_000)
        expect(page.locator(".job-bytes")).to_contain_text("MiB")
        shot("job")
        menu.get_by_role("link", name="Jobs").click()
        expect(page.get_by_role("row", name=re.compile("succeeded")).first).to_be_visible()
        shot("jobs")

        # --- dashboard: RPO from the API
        menu.get_by_role("link", name="Dashboard").click()
        expect(page.get_by_role("row", name=re.compile("Shop.*active.*met"))).to_be_visible(timeout=20_000)
        expect(page.locator("svg.throughput")).to_be_visible()
        shot("dashboard")

        # --- recovery points: pick the point, start a test recovery, read its report
        menu.get_by_role("link", name="Recovery points").click()
        pick = page.get_by_label("Recover from here").first
        expect(pick).to_be_visible()
        pick.check()
        expect(page.locator("#chosen-point")).to_contain_text("Chosen point")
        expect(page.locator("svg.timeline circle")).to_have_count(1)
        shot("points")
        page.get_by_label("Mode").select_option("test")
        page.get_by_role("button", name="Start recovery").click()
        expect(page).to_have_url(re.compile(r"#/recoveries/"))
        expect(page.locator(".report-state")).to_be_visible(timeout=240_000)
        report_id = page.url.rsplit("/", 1)[1]
        expect(page.locator(".report-state")).to_have_attribute("data-state", "succeeded")
        stages = page.get_by_role("table").filter(has=page.get_by_text("Stages of web"))
        for stage in ("reconstruct", "create-instance", "power-on", "validate-boot"):
            expect(stages.get_by_role("cell", name=stage, exact=True)).to_be_visible()
        expect(page.get_by_text("Validation evidence")).to_be_visible()
        expect(page.locator(".cleanup-state")).to_have_attribute("data-state", "pending")
        shot("recovery-report")
        with page.expect_download() as dl:
            page.get_by_role("button", name="Download HTML report").click()
        html = Path(dl.value.path()).read_text()
        assert "validate-boot" in html and "Shop" in html
        page.get_by_role("button", name="Clean up test recovery").click()
        expect(page.locator(".cleanup-state")).to_have_attribute("data-state", "cleaned", timeout=120_000)
        expect(page.get_by_role("button", name="Clean up test recovery")).to_have_count(0)

        # --- settings: a viewer user, the audit log
        menu.get_by_role("link", name="Settings").click()
        users = page.locator("form", has=page.get_by_role("heading", name="Add a user"))
        users.get_by_label("User name").fill("vera")
        users.get_by_label("Password").fill("short")
        users.get_by_label("viewer").check()
        users.get_by_role("button", name="Create user").click()
        expect(users.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
        users.get_by_label("Password").fill("viewer-password-1")
        users.get_by_role("button", name="Create user").click()
        expect(page.get_by_role("cell", name="vera", exact=True)).to_be_visible()
        page.get_by_label("Actor").fill("admin")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("cell", name="POST /plans/<plan_id>/recover")).to_be_visible()
        shot("settings")

        # --- tablet width: no horizontal scrolling of the page
        page.set_viewport_size({"width": 768, "height": 1024})
        for name, hash_ in [("dashboard", "/dashboard"), ("plan-builder", "/plans/shop/edit"),
                            ("recovery-report", f"/recoveries/{report_id}")]:  # fmt: skip
            go(hash_)
            page.wait_for_timeout(500)
            assert page.evaluate("document.documentElement.scrollWidth") <= 768, hash_
            shot(f"tablet-{name}")
        page.set_viewport_size({"width": 1366, "height": 900})

        # --- the viewer sees no action
        page.get_by_role("button", name="Sign out").click()
        login("vera", "viewer-password-1")
        expect(menu.get_by_role("link", name="Settings")).to_have_count(0)
        job_id = page.evaluate(
            "fetch('/jobs?limit=1', {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('lifeboat.token')}})"
            ".then(r => r.json()).then(j => j.items[0].id)"
        )
        for hash_, ready in [
            ("/dashboard", "Protection and RPO"),
            ("/inventory", "Sites"),
            ("/plans", "Protection plans"),
            ("/jobs", "Jobs"),
            (f"/jobs/{job_id}", f"Job {job_id}"),
            ("/points?plan=shop", "Timeline of Shop"),
            (f"/recoveries/{report_id}", "Recovery report: Shop"),
            ("/plans/new", "Plan builder"),
        ]:
            go(hash_)
            expect(page.get_by_role("heading", name=ready, exact=True)).to_be_visible()
            page.wait_for_timeout(300)
            assert page.locator(".action").count() == 0, hash_
            names = [n.strip() for n in page.get_by_role("button").all_inner_texts()]
            assert not [n for n in names if ACTION_NAMES.match(n)], (hash_, names)
            assert page.get_by_role("radio").count() == 0, hash_
            if hash_.startswith("/points"):
                shot("viewer-points")
        browser.close()
    assert not problems, problems


# --- the reports page, from a seeded history ----------------------------------------------------
@pytest.mark.ops
def test_console_reports_page_draws_charts_from_seeded_data(tmp_path: Path) -> None:
    """An embedded control plane seeded with tests/support/reports.py's history (clock at its
    NOW): the Reports page draws an RPO timeline per plan (bars over the target line, breach
    bands), the readiness table and the storage bars, and downloads the CSV."""
    from cli.embedded import bootstrap
    from functions.api import app as api
    from tests.support.reports import NOW, seed

    sync_api = _need_browser()
    expect = sync_api.expect
    SHOTS.mkdir(parents=True, exist_ok=True)
    env = bootstrap(tmp_path / "data")
    env.ctl.now = lambda: NOW
    seed(env.ctl.store)
    assert env.admin_password
    api.configure(env.ctl)
    server = make_server(api, "127.0.0.1", 0)
    thread = serve_in_thread(server)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
            ui = ConsolePage(browser, f"http://127.0.0.1:{server.server_address[1]}", accept_downloads=True)
            page = ui.page
            ui.login("admin", env.admin_password)
            ui.menu.get_by_role("link", name="Reports").click()
            expect(page.get_by_role("heading", name="RPO compliance")).to_be_visible()

            web = page.locator(".plan-compliance[data-plan=web]")
            expect(web.get_by_role("heading", name="Web tier (web)")).to_be_visible()
            chart = web.locator("svg.rpo-timeline")
            expect(chart).to_have_count(1)
            assert chart.locator("rect.age-bar").count() == 120
            assert (
                chart.locator("rect.age-bar.over").count() > 0
                and chart.locator("line.target-line").count() == 1
            )
            # over the last 30 days web was breached from 01-10 05:00 (its last points) to now, open
            expect(web).to_contain_text("one still open")
            assert chart.locator("rect.breach-band").count() == web.locator("tbody tr").count() >= 1
            db = page.locator(".plan-compliance[data-plan=db]")
            expect(db.locator("rect.breach-band")).to_have_count(1)  # never replicated: one open breach
            expect(db).to_contain_text("0.05% of the period")

            ready = page.locator("section", has=page.get_by_role("heading", name="Recovery readiness"))
            expect(ready.locator("tr", has_text="Web tier")).to_contain_text("ready")
            expect(ready.locator("tr", has_text="Web tier")).to_contain_text("(1 d 0 h ago)")
            expect(ready.locator("tr", has_text="Database")).to_contain_text("failed")

            store = page.locator("section", has=page.get_by_role("heading", name="Storage"))
            bars = store.locator("svg.storage-bars g[data-machine]")
            expect(bars).to_have_count(2)
            expect(bars.first.locator("rect.stored-bar")).to_have_count(1)
            expect(bars.first).to_contain_text("reduction")
            expect(store.locator("tr", has_text="Total")).to_contain_text("78.0 GiB")

            with page.expect_download() as got:
                store.get_by_role("button", name="Download CSV").click()
            saved = tmp_path / "storage.csv"
            got.value.save_as(saved)
            assert saved.read_text().splitlines()[0].startswith("level,site_id,plan_id")

            ui.shot("reports")
            page.get_by_label("Period").select_option("7")
            expect(web).to_contain_text("0.00% of the period")  # 01-13 to 01-20: breached throughout
            assert not ui.problems, ui.problems
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
