"""Guest preparation as the recovery flow's PrepareOS state, as a node runs it (marker ``prep``).

Real parts: a Debian-layout ext4 image replicated into a folder repository, reconstruction,
the ASL flow on the local runner, the node's guest preparation (NBD export of the target's
disk, qcow2 overlay, libguestfs) and the patches written through the target's patch_disk.
The platform is the in-memory fake target; the disk it ends with is read back with
libguestfs. A flow without a node (Lambda) reports that guest preparation did not run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from functions.api.report_html import render_report_html
from functions.recovery.local_runner import run_recovery
from functions.recovery.node_jobs import guest_prep
from functions.recovery.ports import RecoveryPorts
from node_runtime.prep.guest import DiskSource, open_guest
from node_runtime.replication.pipeline import ReplicationOptions, replicate
from node_runtime.sources.files import FileSource
from shared.adapters.local.folder_store import FolderStore
from shared.domain.inventory import Site, SiteKind
from shared.domain.plans import ProtectedDisk, ProtectedMachine, ProtectionPlan
from shared.domain.points import DiskPoint, RecoveryPoint
from shared.domain.recovery import QemuTargetConfig, RecoveryMode
from shared.repo.keys import KdfParams
from shared.repo.repository import Repository
from shared.services.recovery import build_flow_input
from tests.prep.linux_images import debian_image
from tests.support.fake_target import FakeTarget

pytestmark = pytest.mark.prep


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("prep-flow")
    image = debian_image(root / "web.img")
    repo = Repository.init(
        FolderStore(root / "repo"), "pw", kdf=KdfParams(iterations=1, memory_kib=8192, lanes=1)
    )
    with FileSource(str(image)) as src:
        p = replicate(repo, "web-disk", src, ReplicationOptions(block_size=1 << 20))
    point = RecoveryPoint(
        id="run-1-web", plan_id="plan-1", machine_id="web", run_id="run-1", time=datetime(2026, 12, 1, tzinfo=UTC),
        site_id="dr", disks=[DiskPoint(disk_id="web-disk", point_id=p.id, disk_size=p.disk_size)],
    )  # fmt: skip
    plan = ProtectionPlan(
        id="plan-1", name="web", source_site_id="prod", target_site_id="dr",
        machines=[ProtectedMachine(machine_id="web", disks=[ProtectedDisk(disk_id="web-disk", source="/x/web")])],
    )  # fmt: skip
    site = Site(id="dr", name="dr", site_kind=SiteKind.LOCAL, repository_url=str(root / "repo"),
                credentials_ref="env:UNUSED", recovery_target=QemuTargetConfig(work_dir=str(root / "vms")))  # fmt: skip
    return {"repo": repo, "point": point, "plan": plan, "site": site, "root": root}


def _run(protected: dict[str, Any], fake: FakeTarget, **ports: Any) -> Any:
    flow = build_flow_input(protected["plan"], protected["site"], [protected["point"]], job_id="job-1",
                            mode=RecoveryMode.TEST, point_time=None, now=datetime.now(UTC))  # fmt: skip
    notes: list[str] = []
    report, _ = run_recovery(
        flow.model_copy(deep=True),
        RecoveryPorts(target_for=lambda _c: fake.target(), open_repository=lambda _u, _c: protected["repo"],
                      notify=notes.append, **ports),
        sleep=lambda _s: None,
    )  # fmt: skip
    return report, notes


def test_node_flow_prepares_the_guest_and_the_target_disk_holds_the_changes(
    protected: dict[str, Any],
) -> None:
    fake = FakeTarget()
    report, notes = _run(protected, fake, guest_prep=guest_prep)
    assert report.state == "succeeded", report.errors
    (machine,) = report.machines()
    guest = machine.os["guest"]
    assert guest["os"]["distro"] == "debian" and guest["applied"] and not guest["refused"]
    applied = {(c["code"], c["status"]) for c in guest["changes"]}
    assert ("linux.fstab_by_uuid", "applied") in applied and ("linux.network_dhcp", "applied") in applied
    failed = [c for c in guest["changes"] if c["status"] == "failed"]
    assert [c["code"] for c in failed] == [
        "linux.initramfs_drivers"
    ]  # no real update-initramfs in this image
    assert all("content" not in c for c in guest["changes"])  # the report stays small
    assert machine.os["os_family"] == "linux" and machine.os["guest_bytes_patched"] > 0
    assert any(
        "preparing the guest for qemu" in n and "linux.fstab_by_uuid" in n for n in notes
    )  # before the changes
    page = render_report_html(report)
    assert (
        "Guest preparation for qemu: linux" in page
        and "<td>linux.fstab_by_uuid</td><td>/etc/fstab</td>" in page
    )
    (disk,) = fake.disks.values()
    image = protected["root"] / "recovered.img"
    image.write_bytes(bytes(disk))
    with open_guest([DiskSource(path=str(image))], readonly=True) as g:
        (root,) = g.roots()
        g.mount_root(root, writable=False)
        assert "UUID=" in g.read_text("/etc/fstab") and "/dev/sda1" not in g.read_text("/etc/fstab")
        assert "console=ttyS0,115200" in g.read_text("/boot/grub/grub.cfg")
        assert not g.exists("/etc/udev/rules.d/70-persistent-net.rules")


def test_flow_without_a_node_says_guest_preparation_did_not_run(protected: dict[str, Any]) -> None:
    report, _ = _run(protected, FakeTarget())
    (machine,) = report.machines()
    assert machine.os["guest"] is None
    assert "guest_prep_not_run" in {f["code"] for f in machine.os["findings"]}


def test_guest_preparation_failure_is_a_finding_and_the_machine_still_recovers(
    protected: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIBGUESTFS_BACKEND", "no-such-backend")  # the appliance cannot start
    report, _ = _run(protected, FakeTarget(), guest_prep=guest_prep)
    (machine,) = report.machines()
    assert report.state == "succeeded" and machine.status == "recovered"
    (failure,) = [f for f in machine.os["findings"] if f["code"] == "guest_prep_failed"]
    assert failure["severity"] == "error" and "libguestfs appliance" in failure["message"]


def test_a_site_can_turn_guest_preparation_off(protected: dict[str, Any]) -> None:
    site = protected["site"].model_copy(deep=True)
    site.recovery_target.prepare_guest = False
    report, _ = _run({**protected, "site": site}, FakeTarget(), guest_prep=guest_prep)
    (machine,) = report.machines()
    assert report.state == "succeeded" and machine.os["guest"] is None
    assert "guest_prep_off" in {f["code"] for f in machine.os["findings"]}
