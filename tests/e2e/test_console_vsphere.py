"""The console with a vmware site, against the project's vCenter simulator: ``lifeboat up``
(its local node reads every vmware site) and a headless Chromium driven by Playwright.

The admin adds a vmware site and connects it in its vCenter panel: a malformed thumbprint
comes back as an inline 422; trusting only the system CAs makes the inventory sync fail,
and the panel says why (the untrusted certificate's thumbprint); pasting the CA's PEM makes
it succeed and the VM table fills. A VM deleted in vCenter is marked missing after "Sync
now"; a VM's detail page lists its NICs and disks (device keys, datastore paths). The plan
builder then picks a VM from the inventory, refuses (inline) a plan whose VM network has no
mapping, offers the discovered networks as source networks, and saves a plan (quiesced
snapshots chosen) whose machine names the VM and its ``device:`` disks. A viewer sees the panel and the VMs, no form and no
button. Screenshots go to build/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.e2e.test_console import ACTION_NAMES, CHROMIUM, SHOTS, ConsolePage, _need_browser
from tests.e2e.test_control_plane import Processes, free_port, wait_for
from tests.support.pki import ca_and_server_cert
from tests.support.vcsim import Vcsim, start_vcsim

pytestmark = pytest.mark.vsphere
VC_PASSWORD = "Vc-console-pw-7"
GONE = "DC0_C0_RP0_VM1"  # deleted in vCenter between two syncs
PICKED = "DC0_H0_VM0"  # protected by the plan


@pytest.fixture
def pki(tmp_path: Path) -> SimpleNamespace:
    return ca_and_server_cert(tmp_path / "pki")


@pytest.fixture
def sim(tmp_path: Path, pki: SimpleNamespace) -> Iterator[Vcsim]:
    s = start_vcsim(tmp_path / "vcsim", tls_cert=pki.cert, tls_key=pki.key, password=VC_PASSWORD)
    yield s
    s.stop()


def _delete_vm(sim: Vcsim, pki: SimpleNamespace, name: str) -> None:
    """Power the VM off and destroy it, through the vSphere API as an administrator would."""

    from node_runtime.sources.vsphere.connection import Endpoint, connect
    from node_runtime.sources.vsphere.snapshots import wait_task
    from shared.domain.vsphere import VCenterTls

    session = connect(Endpoint("vc", sim.url, sim.username, sim.password, VCenterTls(ca_pem=pki.ca_pem)))
    try:
        vm = next(v for v in session.vms() if v.name == name)
        if str(vm.runtime.powerState) == "poweredOn":
            wait_task(vm.PowerOffVM_Task(), "power off")
        wait_task(vm.Destroy_Task(), "destroy")
    finally:
        session.close()
    assert name not in {v["name"] for v in sim.vms()}


def test_console_vcenter_inventory_and_plan_from_a_vm(
    procs: Processes, tmp_path: Path, sim: Vcsim, pki: SimpleNamespace
) -> None:
    sync_api = _need_browser()
    expect = sync_api.expect
    SHOTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs.start(
        "up", "up", "--data-dir", str(tmp_path / "data"), "--port", str(port), "--scheduler-seconds", "1"
    )
    password = wait_for(
        "admin password", lambda: re.search(r"password '([^']+)'", procs.log("up")), 60
    ).group(1)
    picked_moref = sim.vm(PICKED)["moref"]

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
        ui = ConsolePage(browser, base)
        page, menu, problems, shot, go, login = ui.page, ui.menu, ui.problems, ui.shot, ui.go, ui.login

        def call(method: str, path: str, body: object = None) -> object:
            return page.evaluate(
                """([method, path, body]) => fetch(path, {method, headers: {"Content-Type": "application/json",
                   Authorization: "Bearer " + sessionStorage.getItem("lifeboat.token")},
                   body: body === null ? undefined : JSON.stringify(body)}).then(r => r.json())""",
                [method, path, body],
            )

        login("admin", password)

        # --- a vmware site; its vCenter panel says it is not connected yet
        menu.get_by_role("link", name="Inventory").click()
        form = page.locator("form", has=page.get_by_role("heading", name="Add a site"))
        form.get_by_label("Id", exact=True).fill("vc")
        form.get_by_label("Name").fill("Prod vSphere")
        form.get_by_label("Kind").select_option("vmware")
        form.get_by_label("Repository URL").fill(str(tmp_path / "unused-repo"))
        form.get_by_role("button", name="Add site").click()
        panel = page.locator("section.vcenter[data-site=vc]")
        expect(panel.get_by_role("heading", name="vCenter of Prod vSphere (vc)")).to_be_visible()
        expect(panel).to_contain_text("Not connected")
        expect(panel.get_by_role("button", name=re.compile("^Sync now"))).to_have_count(0)

        # --- a malformed thumbprint: the API's 422, next to the field
        vcf = panel.locator("form.vc-form")
        vcf.get_by_label("vCenter URL").fill(sim.url)
        vcf.get_by_label("vCenter user").fill(sim.username)
        vcf.get_by_label("vCenter password").fill(sim.password)
        vcf.get_by_label("Certificate thumbprint").fill("not-a-thumbprint")
        vcf.get_by_role("button", name="Connect").click()
        expect(vcf.get_by_label("Certificate thumbprint")).to_have_attribute("aria-invalid", "true")
        expect(vcf.locator(".field-error")).to_contain_text("hex digits")

        # --- only the system CAs: the sync fails and the panel shows why
        vcf.get_by_label("Certificate thumbprint").fill("")
        vcf.get_by_role("button", name="Connect").click()
        expect(panel.locator(".vc-sync")).to_contain_text("failed", timeout=60_000)
        expect(panel.locator(".sync-error")).to_contain_text("not trusted")
        expect(panel.locator(".sync-error")).to_contain_text(pki.thumbprint)
        expect(panel.locator(".vc-url")).to_have_text(sim.url)
        expect(panel.locator(".vc-user")).to_have_text(sim.username)
        expect(panel.locator(".vc-tls")).to_contain_text("system CAs")
        expect(panel.locator(".vc-vms")).to_contain_text("No VM discovered yet")
        shot("vcenter-sync-failed")

        # --- the insecure switch warns (and excludes the other modes); then the CA's PEM
        vcf = panel.locator("form.vc-form")
        expect(vcf.get_by_role("heading", name="Change the vCenter connection")).to_be_visible()
        expect(vcf.get_by_label("vCenter URL")).to_have_value(sim.url)
        expect(vcf.get_by_label("vCenter password")).to_have_value("")
        insecure = vcf.get_by_label("Skip certificate checks (insecure)")
        insecure.check()
        expect(vcf.locator(".warning")).to_be_visible()
        expect(vcf.locator(".warning")).to_contain_text("Lab use only")
        expect(vcf.get_by_label("CA certificates (PEM)")).to_be_disabled()
        insecure.uncheck()
        expect(vcf.locator(".warning")).to_be_hidden()
        vcf.get_by_label("CA certificates (PEM)").fill(pki.ca_pem)
        vcf.get_by_label("vCenter password").fill(sim.password)
        vcf.get_by_role("button", name="Save connection").click()
        expect(panel.locator(".vc-sync")).to_contain_text("4 VM(s)", timeout=60_000)
        expect(panel.locator(".vc-sync .badge")).to_have_text("ok")
        expect(panel.locator(".sync-error")).to_have_count(0)
        expect(panel.locator(".vc-tls")).to_contain_text("CA certificates given with the connection (1)")
        vms = panel.locator(".vc-vms tbody tr")
        expect(vms).to_have_count(4)
        row = panel.get_by_role("row", name=re.compile(PICKED))
        expect(row).to_contain_text("1 · 8.0 MiB")
        expect(row).to_contain_text("standalone / DC0_H0")
        expect(row.locator(".badge-present")).to_be_visible()
        assert sim.password not in page.content()
        assert panel.locator("input[type=password]").input_value() == ""

        # --- a VM deleted in vCenter is marked missing by the next sync
        _delete_vm(sim, pki, GONE)
        panel.get_by_role("button", name="Sync now vc").click()
        gone = panel.get_by_role("row", name=re.compile(GONE))
        expect(gone).to_have_class("missing", timeout=60_000)
        expect(gone.locator(".badge-missing")).to_have_text("missing")
        expect(panel.get_by_role("heading", name="Virtual machines (3 present, 1 missing)")).to_be_visible()
        shot("vcenter")

        # --- a VM's detail: NICs, disks with device keys and datastore paths
        panel.get_by_role("link", name=PICKED, exact=True).click()
        expect(page.get_by_role("heading", name=f"VM {PICKED}")).to_be_visible()
        nics = page.get_by_role("table").filter(has=page.get_by_text(f"Network adapters of {PICKED}"))
        expect(nics.get_by_role("cell", name="VM Network")).to_be_visible()
        disks = page.get_by_role("table").filter(has=page.get_by_text(f"Disks of {PICKED}"))
        disk = sim.vm(PICKED)["disks"][0]
        expect(disks.get_by_role("cell", name=str(disk["key"]), exact=True)).to_be_visible()
        expect(disks.get_by_role("cell", name=f"device:{disk['key']}")).to_be_visible()
        expect(disks.get_by_role("cell", name=disk["file"])).to_be_visible()
        expect(page.get_by_text(picked_moref, exact=True)).to_be_visible()
        shot("vm-detail")

        # --- the plan builder: a VM from the inventory, its network mapped to a discovered one
        menu.get_by_role("link", name="Plans").click()
        page.get_by_role("link", name="New plan").click()
        page.get_by_label("Plan id").fill("vms")
        page.get_by_label("Name", exact=True).first.fill("Prod VMs")
        page.get_by_label("Source site").select_option("vc")
        page.get_by_label("Target site").select_option("local")
        picks = page.locator(".vm-picks input[type=checkbox]")
        expect(picks).to_have_count(3)  # present VMs only
        expect(page.get_by_label(GONE, exact=True)).to_have_count(0)
        expect(page.get_by_label("Machine id")).to_have_count(0)  # no file-path machine for a vmware site
        page.get_by_label(PICKED, exact=True).check()
        expect(page.get_by_role("group", name=f"Machine 1: VM {PICKED}")).to_be_visible()
        expect(page.get_by_label("Machine id")).to_have_value(PICKED)
        expect(page.get_by_label("Disk 1 source")).to_have_value(f"device:{disk['key']}")
        expect(page.get_by_label("Networks", exact=True)).to_have_value("VM Network")
        expect(page.locator(".unmapped")).to_contain_text("VM Network")
        page.get_by_label("RPO (minutes)").fill("600")
        page.get_by_role("button", name="Create plan").click()
        expect(page.locator(".error-summary")).to_contain_text("no mapping")  # the API's 422
        page.get_by_role("button", name="Add mapping").click()
        source = page.get_by_label("Source network")
        expect(source).to_have_value("VM Network")  # the unmapped one, chosen from the discovered
        offered = source.locator("option").all_inner_texts()
        assert {"VM Network", "DC0_DVPG0", "DC0_DVPG1"} <= set(offered), offered
        expect(page.locator(".unmapped")).to_have_count(0)
        page.get_by_label("Target network").fill("br-lan")
        page.get_by_label("Test network").fill("bubble")
        snapshots = page.get_by_label("VM snapshots")
        expect(snapshots.locator("option").first).to_have_text("Site default (crash-consistent)")
        snapshots.select_option("true")
        shot("plan-builder-vsphere")
        page.get_by_role("button", name="Create plan").click()
        expect(page.get_by_role("heading", name="Protection plans")).to_be_visible()
        expect(page.get_by_role("cell", name="Prod VMs vms")).to_be_visible()

        plan = call("GET", "/plans/vms")
        assert isinstance(plan, dict) and plan["source_site_id"] == "vc", plan
        (machine,) = plan["machines"]
        assert (
            machine["vm"]["moref"] == picked_moref and machine["vm"]["inventory_id"] == f"vc.{picked_moref}"
        )
        assert [d["source"] for d in machine["disks"]] == [
            f"device:{d['key']}" for d in sim.vm(PICKED)["disks"]
        ]
        assert machine["networks"] == ["VM Network"] and plan["quiesce"] is True
        assert plan["network_mapping"] == [{"source_network": "VM Network", "target_network": "br-lan",
                                            "test_network": "bubble", "security_groups": []}]  # fmt: skip

        # --- editing the plan shows the VM as picked
        page.get_by_role("link", name="Edit Prod VMs").click()
        expect(page.get_by_label(PICKED, exact=True)).to_be_checked()
        expect(page.get_by_label("Source network")).to_have_value("VM Network")
        expect(page.get_by_label("VM snapshots")).to_have_value("true")

        # --- a viewer sees the connection and the VMs, and no form or button
        user = call(
            "POST", "/users", {"username": "vera", "password": "viewer-password-1", "roles": ["viewer"]}
        )
        assert isinstance(user, dict) and user.get("username") == "vera", user
        page.get_by_role("button", name="Sign out").click()
        login("vera", "viewer-password-1")
        for hash_, ready in [
            ("/inventory", "Inventory"),
            (f"/inventory/vms/vc.{picked_moref}", f"VM {PICKED}"),
        ]:
            go(hash_)
            expect(page.get_by_role("heading", name=ready, exact=True)).to_be_visible()
            if hash_ == "/inventory":
                expect(panel.locator(".vc-vms tbody tr")).to_have_count(4)
                expect(panel.locator(".vc-url")).to_have_text(sim.url)
                assert panel.locator("form, input, textarea").count() == 0
                shot("viewer-vcenter")
            page.wait_for_timeout(300)
            assert page.locator(".action").count() == 0, hash_
            names = [n.strip() for n in page.get_by_role("button").all_inner_texts()]
            assert not [n for n in names if ACTION_NAMES.match(n)], (hash_, names)

        # --- tablet width: no horizontal scrolling; then the admin disconnects the site
        page.get_by_role("button", name="Sign out").click()
        login("admin", password)
        page.set_viewport_size({"width": 768, "height": 1024})
        for name, hash_ in [("inventory-vcenter", "/inventory"), ("plan-builder-vsphere", "/plans/vms/edit")]:
            go(hash_)
            page.wait_for_timeout(800)
            assert page.evaluate("document.documentElement.scrollWidth") <= 768, hash_
            shot(f"tablet-{name}")
        page.set_viewport_size({"width": 1366, "height": 900})
        go("/inventory")
        page.once("dialog", lambda dialog: dialog.accept())
        panel.get_by_role("button", name="Disconnect vc").click()
        expect(panel).to_contain_text("Not connected")
        expect(panel.get_by_role("heading", name="Connect to vCenter")).to_be_visible()
        expect(panel.locator(".vc-vms tbody tr")).to_have_count(4)  # the inventory stays
        site = call("GET", "/sites/vc")
        assert isinstance(site, dict) and site["vcenter"] is None, site
        browser.close()
    assert not problems, problems
