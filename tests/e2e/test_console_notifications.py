"""Settings > Notifications in the console: ``lifeboat up`` and a headless Chromium (Playwright),
with a webhook receiver on 127.0.0.1 that checks the signature with its own HMAC code.

The admin first gives a plain-http, non-loopback URL (inline 422 next to the URL field), then
adds a webhook channel: the signing secret is shown once, and gone after a reload. "Send
test" goes through the embedded control plane's dispatcher to the receiver, signed with that
secret; rotating shows a new secret, which signs from then on. A failed job (reported by a
node token through the API) reaches the receiver on a scheduler tick of ``lifeboat up``.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_console import CHROMIUM, SHOTS, ConsolePage, _need_browser
from tests.e2e.test_control_plane import Processes, free_port, wait_for
from tests.support.webhook_receiver import Receiver, ReceiverServer

pytestmark = pytest.mark.ops


@pytest.fixture
def hook() -> Iterator[Receiver]:
    server = ReceiverServer()
    yield server.receiver
    server.close()


def test_console_notification_channels(procs: Processes, tmp_path: Path, hook: Receiver) -> None:
    sync_api = _need_browser()
    expect = sync_api.expect
    SHOTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    procs.start(
        "up", "up", "--data-dir", str(data), "--port", str(port), "--scheduler-seconds", "1", "--no-node"
    )
    password = wait_for(
        "admin password", lambda: re.search(r"password '([^']+)'", procs.log("up")), 60
    ).group(1)

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
        ui = ConsolePage(browser, base)
        page, menu = ui.page, ui.menu
        ui.login("admin", password)
        menu.get_by_role("link", name="Settings").click()
        form = page.locator("form", has=page.get_by_role("heading", name="Add a channel"))
        form.get_by_label("Channel name").fill("ops-hook")
        form.get_by_label("URL or topic ARN").fill("http://hooks.example.com/lifeboat")
        form.get_by_label("Job failed").check()
        form.get_by_label("RPO breached").check()
        form.get_by_role("button", name="Add channel").click()
        expect(form.get_by_label("URL or topic ARN")).to_have_attribute("aria-invalid", "true")
        expect(form.get_by_text("loopback", exact=False).first).to_be_visible()

        form.get_by_label("URL or topic ARN").fill(hook.url)
        form.get_by_role("button", name="Add channel").click()
        secret_box = page.locator("code.channel-secret")
        expect(secret_box).to_be_visible()
        hook.secret = secret_box.inner_text().strip()
        assert hook.secret.startswith("lbwhsec_")
        expect(page.get_by_role("cell", name="ops-hook", exact=True)).to_be_visible()
        ui.shot("settings-notifications")

        page.get_by_role("button", name="Send a test to ops-hook").click()
        expect(page.get_by_text("Test delivered to ops-hook.")).to_be_visible()
        assert len(hook.received) == 1 and hook.received[0].signature_ok
        assert hook.received[0].json["lifeboat"]["event"] == "test"
        expect(page.locator(".badge-delivered")).to_have_count(1)  # the page re-read the outbox

        page.reload()
        expect(page.get_by_role("cell", name="ops-hook", exact=True)).to_be_visible()
        expect(page.locator("code.channel-secret")).to_have_count(0)
        assert hook.secret not in page.content()

        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Rotate the signing secret of ops-hook").click()
        expect(page.locator("code.channel-secret")).to_be_visible()
        new_secret = page.locator("code.channel-secret").inner_text().strip()
        assert new_secret != hook.secret
        hook.secret = new_secret
        page.get_by_role("button", name="Send a test to ops-hook").click()
        expect(page.get_by_text("Test delivered to ops-hook.")).to_be_visible()
        assert hook.received[-1].signature_ok
        assert not ui.problems, ui.problems
        token = page.evaluate("sessionStorage.getItem('lifeboat.token')")
        browser.close()

    # a failed job, reported through the API by a node enrolled with lifeboat up's enrollment token
    # (its credential is in the registration's answer): the scheduler loop delivers it
    enrollment = (data / "secrets" / "node.token").read_text().strip()

    def call(method: str, path: str, body: object = None, bearer: str = token) -> object:
        req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    node = call("POST", "/nodes/register", {"name": "test-node", "site_id": "local"}, enrollment)
    node_id, node_token = node["id"], node["credential"]["secret"]  # type: ignore[index]
    plan = {"id": "web", "name": "web", "source_site_id": "local", "target_site_id": "local", "rpo_minutes": 15,
            "machines": [{"machine_id": "web1", "disks": [{"disk_id": "web1-d0", "source": "/nonexistent.img"}]}]}  # fmt: skip
    call("POST", "/plans", plan)
    call("POST", "/plans/web/protect")
    job = wait_for("a claimable job", lambda: call("POST", f"/nodes/{node_id}/claim", None, node_token), 30)
    call("POST", f"/jobs/{job['id']}/complete", {"state": "failed", "error": "disk gone"}, node_token)  # type: ignore[index]
    wait_for(
        "the job_failed webhook",
        lambda: any(r.json["lifeboat"]["event"] == "job_failed" for r in hook.received),
        30,
    )
    failed = [r for r in hook.received if r.json["lifeboat"]["event"] == "job_failed"]
    assert len(failed) == 1 and failed[0].signature_ok and "disk gone" in failed[0].json["text"]
    assert failed[0].json["lifeboat"]["console_url"].startswith(f"{base}/console/#/jobs/")
