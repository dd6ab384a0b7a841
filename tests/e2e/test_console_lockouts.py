"""The console's login lockouts in headless Chromium: the users list marks a locked user and
unlocks it, other lockouts (an unknown user name) are listed and cleared, and the sign-in
page shows the 429's message. The embedded server runs in-process with an injected clock."""

from __future__ import annotations

import pytest

from tests.e2e.test_console import CHROMIUM, SHOTS, ConsolePage, _need_browser
from tests.functional.test_login_throttle import PASSWORD, Live, live  # noqa: F401  (fixture found by name)

pytestmark = pytest.mark.ops
ADA = "ada-the-administrator"


def test_console_lists_and_unlocks_login_lockouts(live: Live) -> None:  # noqa: F811
    sync_api = _need_browser()
    expect = sync_api.expect
    created = live.call(
        "POST", "/users", {"username": "ada", "password": ADA, "roles": ["admin"]}, token=live.admin
    )
    assert created.status == 201, created.body
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
        ui = ConsolePage(browser, live.url)
        page = ui.page
        ui.login("ada", ADA)
        assert live.fail_until_locked("dave") == [401] * 5 + [429]
        assert live.fail_until_locked("ghost") == [401] * 5 + [429]

        ui.go("/settings")
        dave = page.get_by_role("row").filter(has=page.get_by_role("cell", name="dave", exact=True))
        expect(dave.get_by_text("locked", exact=True)).to_be_visible()
        others = page.get_by_role("heading", name="Other login lockouts")
        expect(others).to_be_visible()
        expect(page.get_by_role("cell", name="user name ghost (no such user)")).to_be_visible()
        SHOTS.mkdir(parents=True, exist_ok=True)
        ui.shot("settings-lockouts")

        page.get_by_role("button", name="Unlock dave").click()
        expect(dave.get_by_text("locked", exact=True)).to_have_count(0)
        assert [i["key"] for i in live.call("GET", "/auth/lockouts", token=live.admin).body["items"]] == [
            "ghost"
        ]
        page.get_by_role("button", name="Unlock user ghost").click()
        expect(others).to_have_count(0)
        assert live.call("GET", "/auth/lockouts", token=live.admin).body["items"] == []
        assert live.login("dave", PASSWORD).status == 200

        # the sign-in page tells a locked-out user to wait
        page.get_by_role("button", name="Sign out").click()
        live.fail_until_locked("dave")
        ui.go("/login")
        page.get_by_label("User name").fill("dave")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator(".form-error")).to_contain_text("too many failed logins")
        browser.close()
    assert not ui.problems, ui.problems
