"""A test recovery as a user runs it, on the embedded default: ``lifeboat up`` (API,
scheduler and its local node), real HTTP, the local QEMU target booting real guests.

Two tiny bootable disks (Debian kernel + busybox initramfs + syslinux, built by
tests/support/bootdisk.py; the guests stay up and print a heartbeat) and one broken
machine are protected. The scheduler makes the first points; the web disk is changed
(its boot marker) and replicated again; the plan is test-recovered from the *first*
point, so validation passes only if the chosen point was the one rebuilt. Boot groups
``database`` then ``web`` (2 s delay); the third machine asks for an instance type QEMU
does not have, so its instance creation fails, its compensation deletes its disk, and
the others still recover. Then the test is cleaned up: no process, no file is left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from shared.api_client import ApiClient
from tests.e2e.test_control_plane import Processes, free_port, wait_for
from tests.support.bootdisk import boot_line, build_boot_disk, copy_with_marker


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_test_recovery_into_qemu_from_a_chosen_point(procs: Processes, tmp_path: Path) -> None:
    db = build_boot_disk(tmp_path / "db.img", marker="db-m1", stay=True)
    web = build_boot_disk(tmp_path / "web.img", marker="web-m1", stay=True)
    batch = build_boot_disk(tmp_path / "batch.img", marker="batch-m1", size_mib=16)

    data = tmp_path / "lifeboat-data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs.start("up", "up", "--data-dir", str(data), "--port", str(port), "--scheduler-seconds", "1",
                "--source-root", str(tmp_path))
    password = wait_for(
        "admin password", lambda: re.search(r"password '([^']+)'", procs.log("up")), 60
    ).group(1)
    api = ApiClient(url)
    api.login("admin", password)
    site = api.request("GET", "/sites/local")
    assert site["recovery_target"]["platform"] == "qemu"

    def machine(mid: str, image: Path, **extra: object) -> dict[str, object]:
        return {"machine_id": mid, "disks": [{"disk_id": f"{mid}-d0", "source": str(image), "block_size": 65536}],
                "networks": ["lan"], "boot_marker": boot_line(f"{mid}-m1"), **extra}  # fmt: skip

    api.create_plan(
        id="shop", name="Shop", source_site_id="local", target_site_id="local", rpo_minutes=600,
        machines=[machine("db", db, private_ip="10.1.0.5"), machine("web", web, instance_type="1c384m"),
                  machine("batch", batch, instance_type="no-such-type")],
        network_mapping=[{"source_network": "lan", "target_network": "dr-lan", "test_network": "bubble"}],
        boot_groups=[{"name": "database", "machines": ["db"]},
                     {"name": "web", "machines": ["web"], "delay_seconds": 2}],
        boot_timeout_seconds=120,
    )  # fmt: skip
    api.plan_action("shop", "protect")  # never replicated: the scheduler runs it at once
    first = wait_for("first points", lambda: len(api.points(plan_id="shop")) >= 3 and api.points(plan_id="shop"),
                     timeout=180, every=1)  # fmt: skip
    first_time = max(datetime.fromisoformat(p["time"]) for p in first)

    # the web server changes (a new boot marker), and is replicated again
    changed = copy_with_marker(web, tmp_path / "web.next", marker="web-m2")
    os.replace(changed, web)
    api.plan_action("shop", "replicate-now")
    wait_for("second points", lambda: len(api.points(plan_id="shop")) >= 6, timeout=180, every=1)

    # test recovery from the first point: web must boot with its *old* marker
    job = api.request("POST", "/plans/shop/recover", {"mode": "test", "point_time": first_time.isoformat()})
    done = wait_for("recovery job", lambda: (j := api.job(job["id"]))["state"] in ("succeeded", "failed") and j,
                    timeout=400, every=1)  # fmt: skip
    report = api.request("GET", f"/recoveries/{job['id']}")
    machines = {m["machine_id"]: m for g in report["groups"] for m in g["machines"]}

    assert report["state"] == "partial", report["errors"]
    assert (
        done["state"] == "failed" and "batch" in done["errors"][-1]
    )  # partial runs fail the job, report kept
    assert [g["name"] for g in report["groups"]] == ["database", "web", "ungrouped"]
    assert report["groups"][0]["finished_at"] <= report["groups"][1]["started_at"]
    assert any("covers all 3 machines" in n for n in report["notes"])
    for mid in ("db", "web"):
        m = machines[mid]
        assert m["status"] == "recovered", m
        assert m["recovery_point_id"] in {p["id"] for p in first}
        assert [s["stage"] for s in m["stages"]] == [
            "reconstruct",
            "prepare-os",
            "create-instance",
            "attach-networks",
            "power-on",
            "validate-boot",
        ]
        assert m["evidence"]["ok"] and boot_line(f"{mid}-m1") in m["evidence"]["excerpt"]
        assert m["os"]["os_family"] == "linux" and m["os"]["bootable"]
        assert m["rto_seconds"] > 0
    assert machines["db"]["addresses"] == ["10.1.0.5"]
    assert report["rto_seconds"] == max(machines[m]["rto_seconds"] for m in ("db", "web"))
    batch_report = machines["batch"]
    assert batch_report["status"] == "failed" and batch_report["failed_stage"] == "create-instance"
    assert "no-such-type" in batch_report["error"]
    assert batch_report["cleanup"]["deleted"] and not batch_report["resources"]
    assert report["cleanup_state"] == "pending"

    # the guests are running (heartbeats), and the report downloads as HTML
    pids = [
        int(r["id"]) for m in ("db", "web") for r in machines[m]["resources"] if r["type"] == "qemu-process"
    ]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    html = api.text(f"/recoveries/{job['id']}/html")
    assert "database" in html and "validate-boot" in html and "create-instance" in html
    # and through the CLI
    env = {**os.environ, "LIFEBOAT_API": url, "LIFEBOAT_TOKEN": str(api.token)}
    listed = subprocess.run([sys.executable, "-m", "cli.main", "recoveries", "list", "--plan", "shop", "--json"],
                            env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert [r["id"] for r in json.loads(listed.stdout)] == [job["id"]]
    saved = tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "cli.main", "recoveries", "show", job["id"], "--html", str(saved)],
                   env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert saved.read_text() == html

    # a second test is refused until this one is cleaned up
    with pytest.raises(Exception, match="clean it up first"):
        api.request("POST", "/plans/shop/recover", {"mode": "test"})
    cleanup = api.request("POST", "/plans/shop/cleanup-test")
    wait_for("cleanup job", lambda: api.job(cleanup["id"])["state"] in ("succeeded", "failed"), timeout=120)
    assert api.job(cleanup["id"])["state"] == "succeeded", api.job(cleanup["id"])
    after = api.request("GET", f"/recoveries/{job['id']}")
    assert after["cleanup_state"] == "cleaned" and not after["cleanup"]["failed"]
    assert not any(_alive(p) for p in pids)
    run_dir = data / "recovered" / job["id"]
    assert not run_dir.exists() or not any(run_dir.rglob("*")), list(run_dir.rglob("*"))
