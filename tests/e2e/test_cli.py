"""The ``lifeboat`` CLI as a user runs it: separate processes, real stores.

Stores: a local folder, SeaweedFS (a real S3 server on loopback, auth enforced) and
Azurite (the Azure Blob emulator on loopback). Images come from make_disk.py. Every
round trip is checked by sha256.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.servers import Azurite, SeaweedFS
from tests.support.disks import MiB, create, sha256

PASSWORD = "e2e-passphrase"


class Cli:
    """Runs ``lifeboat`` in a subprocess against one repository URL."""

    def __init__(self, repo: str, env: dict[str, str]) -> None:
        self.repo = repo
        self.env = {**os.environ, "LIFEBOAT_PASSWORD": PASSWORD, **env}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cli.main", *args]

    def run(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args),
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"lifeboat {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def replicate(self, disk: str, image: Path, *extra: str) -> str:
        out = self.run("replicate", "--repo", self.repo, "--disk", disk, *extra, str(image)).stdout
        return out.strip().splitlines()[-1]

    def replicate_json(self, disk: str, image: Path, *extra: str) -> dict:
        out = self.run("replicate", "--repo", self.repo, "--disk", disk, "--json", *extra, str(image)).stdout
        doc_text, point_id = out.rsplit("\n", 2)[0], out.strip().splitlines()[-1]
        doc = json.loads(doc_text)
        assert doc["id"] == point_id
        return doc

    def restore_sha(self, disk: str, point: str, target: Path) -> str:
        self.run("restore", "--repo", self.repo, "--disk", disk, "--point", point, str(target))
        digest = sha256(target)
        target.unlink()
        return digest


@pytest.fixture(params=["folder", "seaweedfs", "azurite"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    ns = uuid.uuid4().hex[:12]
    if request.param == "folder":
        return Cli(str(tmp_path / "repo"), {})
    if request.param == "seaweedfs":
        s3: SeaweedFS = request.getfixturevalue("seaweedfs")
        return Cli(
            f"s3://{s3.bucket}/{ns}",
            {
                "AWS_ENDPOINT_URL": s3.endpoint,
                "AWS_ACCESS_KEY_ID": s3.access_key,
                "AWS_SECRET_ACCESS_KEY": s3.secret_key,
                "AWS_DEFAULT_REGION": s3.region,
            },
        )
    az: Azurite = request.getfixturevalue("azurite")
    return Cli(f"azure://{az.container}/{ns}", {"AZURE_STORAGE_CONNECTION_STRING": az.connection_string()})


def test_round_trip_full_and_incremental(cli: Cli, tmp_path: Path) -> None:
    cli.run("repo", "init", cli.repo)
    img = create(tmp_path / "vm1.img", 24 * MiB, seed=11)
    shas, points = [], []
    points.append(cli.replicate("vm1-disk0", img))
    shas.append(sha256(img))

    changed = tmp_path / "changed.json"
    subprocess.run(
        [sys.executable, "tests/support/make_disk.py", "mutate", str(img), "--fraction", "0.05", "--seed", "3",
         "--extents-out", str(changed)],
        check=True, capture_output=True,
    )  # fmt: skip
    incremental = cli.replicate_json("vm1-disk0", img, "--changed-extents", str(changed))
    points.append(incremental["id"])
    shas.append(sha256(img))
    full_blocks = json.loads(cli.run("points", "--repo", cli.repo, "--json").stdout)[0]["stats"][
        "blocks_read"
    ]
    assert incremental["stats"]["blocks_read"] < full_blocks / 2

    subprocess.run(
        [sys.executable, "tests/support/make_disk.py", "mutate", str(img), "--fraction", "0.05", "--seed", "4"],
        check=True, capture_output=True,
    )  # fmt: skip
    points.append(cli.replicate("vm1-disk0", img))  # no extent list
    shas.append(sha256(img))

    listed = json.loads(cli.run("points", "--repo", cli.repo, "--disk", "vm1-disk0", "--json").stdout)
    assert [p["id"] for p in listed] == points
    for point, sha in zip(points, shas, strict=True):
        assert cli.restore_sha("vm1-disk0", point, tmp_path / "out.img") == sha
    assert cli.restore_sha("vm1-disk0", "latest", tmp_path / "out.img") == shas[-1]
    assert cli.run("check", "--repo", cli.repo, "--read-data").returncode == 0
    info = json.loads(cli.run("repo", "info", cli.repo, "--json").stdout)
    assert info["disks"] == ["vm1-disk0"] and info["points"] == 3


def test_wrong_passphrase_and_bad_input_give_clear_errors(tmp_path: Path) -> None:
    cli = Cli(str(tmp_path / "repo"), {})
    cli.run("repo", "init", cli.repo)
    img = create(tmp_path / "vm1.img", 2 * MiB, seed=1)
    wrong = cli.run("points", "--repo", cli.repo, check=False, env={"LIFEBOAT_PASSWORD": "nope"})
    assert wrong.returncode == 7 and "wrong passphrase" in wrong.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    r = cli.run(
        "replicate", "--repo", cli.repo, "--disk", "vm1", "--changed-extents", str(bad), str(img), check=False
    )
    assert r.returncode == 2 and "JSON array" in r.stderr
    r = cli.run("replicate", "--repo", cli.repo, "--disk", "../x", str(img), check=False)
    assert r.returncode == 2 and "invalid disk id" in r.stderr
    r = cli.run("restore", "--repo", cli.repo, "--disk", "vm1", str(tmp_path / "o.img"), check=False)
    assert r.returncode == 4 and "no recovery points" in r.stderr
    r = cli.run("points", "--repo", str(tmp_path / "nowhere"), check=False)
    assert r.returncode == 4 and "no repository" in r.stderr
    r = cli.run("repo", "init", cli.repo, check=False)
    assert r.returncode == 5 and "already exists" in r.stderr
    no_secret = cli.run("points", "--repo", cli.repo, check=False, env={"LIFEBOAT_PASSWORD": ""})
    assert no_secret.returncode == 7
    for args in (["replicate", "--repo", cli.repo, "--disk", "vm1", "--block-size", "3M", str(img)],
                 ["replicate", "--repo", cli.repo, "--disk", "vm1", "--block-size", "lots", str(img)]):  # fmt: skip
        r = cli.run(*args, check=False)
        assert r.returncode == 2 and "size" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_corrupt_pack_is_named_by_restore_and_check(tmp_path: Path) -> None:
    cli = Cli(str(tmp_path / "repo"), {})
    cli.run("repo", "init", cli.repo)
    img = create(tmp_path / "vm1.img", 8 * MiB, seed=2)
    cli.replicate("vm1", img)
    pack = next(p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file())
    data = bytearray(pack.read_bytes())
    data[100] ^= 0x40
    pack.write_bytes(bytes(data))
    r = cli.run("restore", "--repo", cli.repo, "--disk", "vm1", str(tmp_path / "out.img"), check=False)
    assert r.returncode == 8 and pack.name in r.stderr
    r = cli.run("check", "--repo", cli.repo, "--read-data", check=False)
    assert r.returncode == 8 and pack.name in r.stderr


def test_sigkill_mid_replication_then_resume(tmp_path: Path) -> None:
    """Kill -9 during a run: earlier points restore, check passes, the next run sends less."""
    cli = Cli(str(tmp_path / "repo"), {})
    cli.run("repo", "init", cli.repo)
    first = create(tmp_path / "a.img", 16 * MiB, seed=1)
    p1 = cli.replicate("vm1", first)
    sha1 = sha256(first)

    second = create(tmp_path / "b.img", 96 * MiB, seed=2)
    index_dir = tmp_path / "repo" / "index"
    before = len(list(index_dir.iterdir()))
    proc = subprocess.Popen(
        cli.argv("replicate", "--repo", cli.repo, "--disk", "vm1", "--limit-mbps", "12", "--checkpoint-mb", "8",
                 "--streams", "1", str(second)),
        env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(index_dir.iterdir())) < before + 2:  # two checkpoints committed
        assert proc.poll() is None, f"replication ended before it could be killed: {proc.stderr.read()!r}"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    points = json.loads(cli.run("points", "--repo", cli.repo, "--json").stdout)
    assert [p["id"] for p in points] == [p1]
    assert cli.restore_sha("vm1", p1, tmp_path / "out.img") == sha1
    check = cli.run("check", "--repo", cli.repo, "--read-data")
    assert "no problems found" in check.stdout

    resumed = cli.replicate_json("vm1", second)
    fresh = Cli(str(tmp_path / "fresh"), {})
    fresh.run("repo", "init", fresh.repo)
    full = fresh.replicate_json("vm1", second)
    assert resumed["stats"]["bytes_new_stored"] < full["stats"]["bytes_new_stored"] - 8 * MiB
    assert cli.restore_sha("vm1", "latest", tmp_path / "out.img") == sha256(second)
    assert cli.run("check", "--repo", cli.repo).returncode == 0


def test_two_writers_and_a_compactor_share_one_repository(cli: Cli, tmp_path: Path) -> None:
    """Two ``replicate`` processes (shared locks) and ``repo compact`` (the compact lock) at
    once: neither writer waits for the other, no index entry is lost."""
    cli.run("repo", "init", cli.repo)
    seed = create(tmp_path / "seed.img", 8 * MiB, seed=30)
    cli.replicate("seed", seed, "--checkpoint-mb", "1")  # deltas for the compactor to merge
    images = {f"vm{n}": create(tmp_path / f"vm{n}.img", 32 * MiB, seed=31 + n) for n in range(2)}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "stdin": subprocess.DEVNULL}
    writers = {
        disk: subprocess.Popen(
            cli.argv("replicate", "--repo", cli.repo, "--disk", disk, "--checkpoint-mb", "2", str(img)),
            env=cli.env,
            text=True,
            **pipes,
        )
        for disk, img in images.items()
    }
    compacted = json.loads(cli.run("repo", "compact", cli.repo, "--json").stdout)
    assert compacted["deltas_merged"] >= 1 and compacted["generation"]
    points = {}
    for disk, proc in writers.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        points[disk] = out.strip().splitlines()[-1]
    final = json.loads(cli.run("repo", "compact", cli.repo, "--json").stdout)
    # the seed's deltas and each writer's, merged by one compaction or the other
    assert compacted["deltas_merged"] + final["deltas_merged"] >= 3
    for disk, point in points.items():
        assert cli.restore_sha(disk, point, tmp_path / "out.img") == sha256(images[disk])
    assert "no problems found" in cli.run("check", "--repo", cli.repo, "--read-data").stdout
    info = json.loads(cli.run("repo", "info", cli.repo, "--json").stdout)
    assert info["points"] == 3 and info["index_deltas"] == 0
    assert info["index_generation"] == (final["generation"] or compacted["generation"])
    assert info["unique_blocks"] == (final["entries"] or compacted["entries"]) > 0
