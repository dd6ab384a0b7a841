"""The console with a kvm site and two real QEMU VMs: ``lifeboat up`` (its local node reads
every site) and a headless Chromium driven by Playwright.

The admin adds a kvm site and gives it QMP sockets in its KVM host panel: a relative path
comes back as an inline 422; the VMs' sockets plus one nobody listens on make the sync
succeed, the VM table fill and the dead socket show "no answer". A VM whose QEMU died is
marked missing after "Sync now"; a VM's detail page lists its disks by position. The plan
builder then picks the remaining VM (no snapshot-mode choice: that is VMware's) and saves a
plan whose machine names the VM and its ``device:`` disks. Disconnecting keeps the
inventory. Screenshots go to build/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_console import CHROMIUM, SHOTS, ConsolePage, _need_browser
from tests.e2e.test_control_plane import Processes, free_port, wait_for
from tests.support.qemu_vms import KvmVm, crash, need_qemu, qemu_vms

pytestmark = pytest.mark.kvm


@pytest.fixture
def vms() -> Iterator[list[KvmVm]]:
    need_qemu()
    with qemu_vms(("web", [16, 8]), ("db", [32])) as started:
        yield started


def test_console_kvm_host_panel_and_plan_from_a_kvm_vm(procs: Processes, tmp_path: Path, vms: list[KvmVm]) -> None:
    sync_api = _need_browser()
    expect = sync_api.expect
    web, db = vms
    web_socket, db_socket = str(web.qmp_socket), str(db.qmp_socket)
    nobody = str(web.folder / "nobody.qmp")
    SHOTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs.start("up", "up", "--data-dir", str(tmp_path / "data"), "--port", str(port), "--scheduler-seconds", "1")
    password = wait_for("admin password", lambda: re.search(r"password '([^']+)'", procs.log("up")), 60).group(1)

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
        ui = ConsolePage(browser, base)
        page, menu, problems, shot, go = ui.page, ui.menu, ui.problems, ui.shot, ui.go

        def call(method: str, path: str) -> object:
            return page.evaluate(
                """([method, path]) => fetch(path, {method, headers:
                   {Authorization: "Bearer " + sessionStorage.getItem("lifeboat.token")}}).then(r => r.json())""",
                [method, path],
            )

        ui.login("admin", password)

        # --- a kvm site; its KVM host panel says it has no sockets yet
        menu.get_by_role("link", name="Inventory").click()
        form = page.locator("form", has=page.get_by_role("heading", name="Add a site"))
        form.get_by_label("Id", exact=True).fill("kvm")
        form.get_by_label("Name").fill("Lab KVM")
        form.get_by_label("Kind").select_option("kvm")
        form.get_by_label("Repository URL").fill(str(tmp_path / "unused-repo"))
        form.get_by_role("button", name="Add site").click()
        panel = page.locator("section.kvm[data-site=kvm]")
        expect(panel.get_by_role("heading", name="KVM host Lab KVM (kvm)")).to_be_visible()
        expect(panel).to_contain_text("Not connected: the site has no QMP sockets yet")
        expect(panel.get_by_role("button", name=re.compile("^Sync now"))).to_have_count(0)
        expect(page.locator("section.vcenter")).to_have_count(0)

        # --- a relative path: the API's 422, next to the field
        kf = panel.locator("form.kvm-form")
        expect(kf).to_contain_text("libvirt-managed VMs are not covered")
        kf.get_by_label("QMP sockets").fill("relative.qmp")
        kf.get_by_role("button", name="Connect").click()
        expect(kf.get_by_label("QMP sockets")).to_have_attribute("aria-invalid", "true")
        expect(kf.locator(".field-error")).to_contain_text("absolute unix socket path")

        # --- both VMs' sockets and one nobody listens on: the sync succeeds, and says which did not answer
        kf.get_by_label("QMP sockets").fill(f"{web_socket}\n{db_socket}\n\n{nobody}\n")
        kf.get_by_role("button", name="Connect").click()
        expect(panel.locator(".kvm-sync")).to_contain_text("2 VM(s)", timeout=60_000)
        expect(panel.locator(".kvm-sync .badge")).to_have_text("ok")
        sockets = panel.locator(".kvm-sockets li")
        expect(sockets).to_have_count(3)
        expect(sockets.nth(0)).to_contain_text(f"{web_socket} → web")
        dead = sockets.filter(has_text=nobody)
        expect(dead.locator(".badge")).to_have_text("no answer")
        expect(dead).to_contain_text("No such file or directory")
        rows = panel.locator(".kvm-vms tbody tr")
        expect(rows).to_have_count(2)
        row = panel.get_by_role("row", name=re.compile("^web"))
        expect(row).to_contain_text("2 · 24.0 MiB")
        expect(row).to_contain_text(web_socket)
        expect(row.locator(".badge-ok")).to_have_text(["on", "persistent"])
        expect(row.locator(".badge-present")).to_be_visible()

        # --- db's QEMU dies: the next sync marks it missing and its socket refuses
        crash(db)
        panel.get_by_role("button", name="Sync now kvm").click()
        gone = panel.get_by_role("row", name=re.compile("^db"))
        expect(gone).to_have_class("missing", timeout=60_000)
        expect(panel.get_by_role("heading", name="Virtual machines (1 present, 1 missing)")).to_be_visible()
        expect(sockets.filter(has_text=db_socket)).to_contain_text("Connection refused")
        shot("inventory-kvm")

        # --- a VM's detail: its disks by position, the plan sources they become
        panel.get_by_role("link", name="web", exact=True).first.click()
        expect(page.get_by_role("heading", name="VM web")).to_be_visible()
        expect(page.get_by_role("heading", name="Virtual machine (KVM)")).to_be_visible()
        expect(page.get_by_role("heading", name="Network adapters")).to_have_count(0)
        disks = page.get_by_role("table").filter(has=page.get_by_text("Disks of web"))
        expect(disks.get_by_role("cell", name="device:1")).to_be_visible()
        expect(disks.get_by_role("cell", name=str(web.images[1]))).to_be_visible()
        expect(page.get_by_text(web_socket, exact=True)).to_be_visible()
        assert "null" not in page.locator("main").inner_text()
        shot("vm-detail-kvm")

        # --- the plan builder: the present VM from the inventory, no VMware snapshot choice
        menu.get_by_role("link", name="Plans").click()
        page.get_by_role("link", name="New plan").click()
        page.get_by_label("Plan id").fill("kvmplan")
        page.get_by_label("Name", exact=True).first.fill("Lab VMs")
        page.get_by_label("Source site").select_option("kvm")
        page.get_by_label("Target site").select_option("local")
        expect(page.locator(".vm-picks input[type=checkbox]")).to_have_count(1)  # present VMs only
        expect(page.get_by_label("db", exact=True)).to_have_count(0)
        expect(page.get_by_label("VM snapshots")).to_have_count(0)
        expect(page.get_by_label("Machine id")).to_have_count(0)
        page.get_by_label("web", exact=True).check()
        expect(page.get_by_role("group", name="Machine 1: VM web")).to_be_visible()
        expect(page.get_by_label("Machine id")).to_have_value("web")
        expect(page.get_by_label("Disk 1 source")).to_have_value("device:0")
        expect(page.get_by_label("Disk 2 source")).to_have_value("device:1")
        expect(page.locator(".vm-machine")).to_contain_text(f"KVM VM uuid-{web.uuid}")
        shot("plan-builder-kvm")
        page.get_by_role("button", name="Create plan").click()
        expect(page.get_by_role("heading", name="Protection plans")).to_be_visible()
        expect(page.get_by_role("cell", name="Lab VMs kvmplan")).to_be_visible()
        plan = call("GET", "/plans/kvmplan")
        assert isinstance(plan, dict) and plan["source_site_id"] == "kvm", plan
        (machine,) = plan["machines"]
        assert machine["vm"]["moref"] == f"uuid-{web.uuid}"
        assert machine["vm"]["inventory_id"] == f"kvm.uuid-{web.uuid}"
        assert [d["source"] for d in machine["disks"]] == ["device:0", "device:1"] and plan["quiesce"] is None

        # --- the form shows the sockets; disconnecting keeps the inventory
        go("/inventory")
        kf = panel.locator("form.kvm-form")
        expect(kf.get_by_role("heading", name="Change the QMP sockets")).to_be_visible()
        expect(kf.get_by_label("QMP sockets")).to_have_value(f"{web_socket}\n{db_socket}\n{nobody}")
        page.once("dialog", lambda dialog: dialog.accept())
        panel.get_by_role("button", name="Disconnect kvm").click()
        expect(panel).to_contain_text("Not connected")
        expect(panel.get_by_role("heading", name="Connect the KVM host")).to_be_visible()
        expect(panel.locator(".kvm-vms tbody tr")).to_have_count(2)
        site = call("GET", "/sites/kvm")
        assert isinstance(site, dict) and site["kvm"] is None, site
        browser.close()
    assert not problems, problems
