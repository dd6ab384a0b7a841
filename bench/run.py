#!/usr/bin/env python3
"""Lifeboat against restic, borg and the machine's own limit, on the same disk images, in one run.

    python3 bench/run.py --size 2G --repeat 3 --out docs/BENCHMARKS.md [--workdir bench/work]

Measures (each timed step repeated --repeat times, medians reported): the machine limit
(cat, b3sum, zstd -1 -T2 over the image), full backup throughput, bytes stored, cross-VM
dedup, incremental backup after a 5% mutation, restore throughput (sha256-verified) and
peak RSS. Writes the Markdown report to --out and the raw measurements to --json (bench/results.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAKE_DISK = ROOT / "tests" / "support" / "make_disk.py"
RESULTS_JSON = ROOT / "bench" / "results.json"
PASSWORD = "lifeboat-bench-passphrase"
MIB = 1 << 20
TIME = "/usr/bin/time"


class BenchError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"bench: {message}")


# --------------------------------------------------------------------------- processes


class Runner:
    """Runs commands under GNU time with the peers' passphrases set; records wall time and peak RSS."""

    def __init__(self, work: Path) -> None:
        self.rss_file = work / ".rss"
        home = work / "home"
        self.env = dict(
            os.environ,
            LIFEBOAT_PASSWORD=PASSWORD,
            RESTIC_PASSWORD=PASSWORD,
            RESTIC_CACHE_DIR=str(home / "restic-cache"),
            BORG_PASSPHRASE=PASSWORD,
            BORG_BASE_DIR=str(home / "borg"),
            BORG_DISPLAY_PASSPHRASE="no",
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        )

    def timed(self, cmd: list[str], cwd: Path | None = None) -> dict:
        """Run cmd (stdout discarded); return {"seconds", "rss_kib"}. Raises BenchError on failure."""
        start = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-f", "%M", "-o", str(self.rss_file), *cmd],
            cwd=cwd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise BenchError(
                f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}"
            )
        rss_kib = int(self.rss_file.read_text().split()[-1])
        return {"seconds": seconds, "rss_kib": rss_kib}

    def output(self, cmd: list[str], cwd: Path | None = None) -> str:
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=self.env, check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as e:
            raise BenchError(
                f"command failed (exit {e.returncode}): {' '.join(cmd)}\n{e.stderr[-3000:]}"
            ) from e
        return proc.stdout


def sync() -> None:
    """Flush dirty pages (written repositories, restored images) so writeback does not land in the next run."""
    subprocess.run(["sync"], check=True)


def du_bytes(path: Path) -> int:
    return int(
        subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True).stdout.split()[0]
    )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def copy_sparse(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)


# --------------------------------------------------------------------------- tools


class Tool:
    """A backup tool: how to init a repository, back up an image, restore it."""

    name = ""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def init(self, repo: Path) -> None:
        raise NotImplementedError

    def backup_cmd(self, repo: Path, img: Path, disk: str, label: str, extents: Path | None) -> list[str]:
        raise NotImplementedError

    def restore_cmd(self, repo: Path, img: Path, dest: Path) -> list[str]:
        """Command (run with cwd=dest) that restores the first backup ("vm1"/"full") of img into dest."""
        raise NotImplementedError

    def fresh_repo(self, repos: Path, tag: str) -> Path:
        repo = repos / f"{self.name}-{tag}"
        rmtree(repo)
        repo.parent.mkdir(parents=True, exist_ok=True)
        self.init(repo)
        return repo

    def backup(
        self, repo: Path, img: Path, disk: str = "vm1", label: str = "full", extents: Path | None = None
    ) -> dict:
        return self.runner.timed(self.backup_cmd(repo, img, disk, label, extents), cwd=img.parent)

    def restore(self, repo: Path, img: Path, dest: Path) -> tuple[dict, Path]:
        rmtree(dest)
        dest.mkdir(parents=True)
        measured = self.runner.timed(self.restore_cmd(repo, img, dest), cwd=dest)
        measured["sync_seconds"] = self.runner.timed(["sync"])["seconds"]
        found = [p for p in dest.rglob(img.name) if p.is_file()]
        if len(found) != 1:
            raise BenchError(f"{self.name}: expected one restored {img.name} under {dest}, found {found}")
        return measured, found[0]


class Lifeboat(Tool):
    name = "lifeboat"

    def init(self, repo: Path) -> None:
        self.runner.output(["lifeboat", "repo", "init", str(repo)])

    def backup_cmd(self, repo, img, disk, label, extents):
        cmd = ["lifeboat", "replicate", "--repo", str(repo), "--disk", disk, str(img)]
        return cmd + (["--changed-extents", str(extents)] if extents else [])

    def restore_cmd(self, repo, img, dest):
        return [
            "lifeboat",
            "restore",
            "--repo",
            str(repo),
            "--disk",
            "vm1",
            "--point",
            "latest",
            str(dest / img.name),
        ]

    def stored_bytes_reported(self, repo: Path) -> int:
        return int(
            json.loads(self.runner.output(["lifeboat", "repo", "info", str(repo), "--json"]))["bytes_stored"]
        )


class Restic(Tool):
    name = "restic"

    def init(self, repo: Path) -> None:
        self.runner.output(["restic", "init", "--repo", str(repo)])

    def backup_cmd(self, repo, img, disk, label, extents):
        return ["restic", "--repo", str(repo), "backup", "--tag", f"{disk}-{label}", img.name]

    def restore_cmd(self, repo, img, dest):
        return [
            "restic",
            "--repo",
            str(repo),
            "restore",
            "latest",
            "--tag",
            "vm1-full",
            "--target",
            str(dest),
        ]


class Borg(Tool):
    name = "borg"

    def init(self, repo: Path) -> None:
        self.runner.output(["borg", "init", "--encryption", "repokey-blake2", str(repo)])

    def backup_cmd(self, repo, img, disk, label, extents):
        return ["borg", "create", "--compression", "zstd,3", f"{repo}::{disk}-{label}", img.name]

    def restore_cmd(self, repo, img, dest):
        return ["borg", "extract", f"{repo}::vm1-full"]


# --------------------------------------------------------------------------- measures


def samples(runs: list[dict]) -> dict:
    return {"seconds": [r["seconds"] for r in runs], "rss_kib": [r["rss_kib"] for r in runs]}


def measure_limit(runner: Runner, img: Path, repeat: int) -> dict:
    """cat / b3sum / zstd -1 -T2 over the image, output discarded; one un-timed warm-up each."""
    cmds = {
        "cat": ["cat", str(img)],
        "b3sum": ["b3sum", str(img)],
        "zstd -1 -T2": ["zstd", "-1", "-T2", "-c", str(img)],
    }
    for cmd in cmds.values():
        runner.timed(cmd)
    runs: dict[str, list[dict]] = {name: [] for name in cmds}
    for _ in range(repeat):
        for name, cmd in cmds.items():
            runs[name].append(runner.timed(cmd))
    return {name: samples(r) for name, r in runs.items()}


def measure_full(tools: list[Tool], img: Path, repos: Path, repeat: int) -> tuple[dict, dict[str, Path]]:
    """Full backup into a fresh repository per repeat; tools interleaved; returns the last repos."""
    for tool in tools:  # warm-up: a throw-away repository
        repo = tool.fresh_repo(repos, "warmup")
        tool.backup(repo, img)
        rmtree(repo)
    sync()
    runs: dict[str, list[dict]] = {t.name: [] for t in tools}
    stored: dict[str, list[int]] = {t.name: [] for t in tools}
    kept: dict[str, Path] = {}
    for i in range(repeat):
        for tool in tools:
            if tool.name in kept:
                rmtree(kept[tool.name])
            repo = tool.fresh_repo(repos, f"full{i}")
            runs[tool.name].append(tool.backup(repo, img))
            sync()
            stored[tool.name].append(du_bytes(repo))
            kept[tool.name] = repo
    result = {t.name: {**samples(runs[t.name]), "stored_bytes": stored[t.name]} for t in tools}
    lifeboat = next(t for t in tools if isinstance(t, Lifeboat))
    result["lifeboat"]["stored_bytes_reported"] = lifeboat.stored_bytes_reported(kept["lifeboat"])
    return result, kept


def measure_restore(
    tools: list[Tool], kept: dict[str, Path], img: Path, want_sha: str, restores: Path, repeat: int
) -> dict:
    """Restore the full backup to a file; verify sha256 every time; one un-timed warm-up each."""

    def one(tool: Tool) -> dict:
        dest = restores / tool.name
        measured, restored = tool.restore(kept[tool.name], img, dest)
        got = sha256(restored)
        if got != want_sha:
            raise BenchError(f"{tool.name} restored {restored} with sha256 {got}, source has {want_sha}")
        rmtree(dest)
        return measured

    for tool in tools:
        one(tool)
    runs: dict[str, list[dict]] = {t.name: [] for t in tools}
    for _ in range(repeat):
        for tool in tools:
            runs[tool.name].append(one(tool))
    return {
        name: {**samples(r), "sync_seconds": [x["sync_seconds"] for x in r], "verified_sha256": want_sha}
        for name, r in runs.items()
    }


def measure_dedup(tools: list[Tool], kept: dict[str, Path], img2: Path, repos: Path) -> dict:
    """Back up a second VM image (different seed) into the repository holding the first: bytes added,
    against the bytes the same image takes in a repository of its own."""
    result = {}
    for tool in tools:
        alone = tool.fresh_repo(repos, "vm2-alone")
        tool.backup(alone, img2, disk="vm2")
        sync()
        standalone = du_bytes(alone)
        rmtree(alone)
        repo = kept[tool.name]
        before = du_bytes(repo)
        measured = tool.backup(repo, img2, disk="vm2")
        sync()
        result[tool.name] = {
            "added_bytes": du_bytes(repo) - before,
            "standalone_bytes": standalone,
            **measured,
        }
    return result


def measure_incremental(
    tools: list[Tool],
    pristine: Path,
    img: Path,
    extents: Path,
    repos: Path,
    repeat: int,
    verify: Callable[[Tool, Path], None],
) -> tuple[dict, dict]:
    """Base backup of the pristine image, mutate 5% in place, time the second backup (fresh repos per repeat)."""
    lifeboat = next(t for t in tools if isinstance(t, Lifeboat))
    variants: dict[str, tuple[Tool, bool]] = {
        "lifeboat --changed-extents": (lifeboat, True),
        "lifeboat (full read)": (lifeboat, False),
        **{t.name: (t, False) for t in tools if t is not lifeboat},
    }
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    added: dict[str, list[int]] = {v: [] for v in variants}
    mutation: dict = {}
    for i in range(repeat):
        copy_sparse(pristine, img)
        bases = {}
        for v, (tool, _) in variants.items():
            bases[v] = tool.fresh_repo(repos, f"incr{i}-{'x' if v.endswith('extents') else 'r'}")
            tool.backup(bases[v], img)
        out = subprocess.run(
            [
                sys.executable,
                str(MAKE_DISK),
                "mutate",
                str(img),
                "--fraction",
                "0.05",
                "--seed",
                "7",
                "--extents-out",
                str(extents),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        mutation = json.loads(out.strip().splitlines()[-1])
        sync()
        before = {v: du_bytes(r) for v, r in bases.items()}
        for v, (tool, use_extents) in variants.items():
            runs[v].append(tool.backup(bases[v], img, label="incr", extents=extents if use_extents else None))
            sync()
            added[v].append(du_bytes(bases[v]) - before[v])
        if i == repeat - 1:
            for v, (tool, _) in variants.items():
                if tool is lifeboat:
                    verify(tool, bases[v])
        for repo in bases.values():
            rmtree(repo)
    return {v: {**samples(runs[v]), "added_bytes": added[v]} for v in variants}, mutation


# --------------------------------------------------------------------------- report


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def mib_s(size: int, seconds: float) -> float:
    return size / MIB / seconds


def summarize(res: dict) -> dict:
    """Medians, throughputs and the ratios the targets are judged on."""
    size = res["image"]["size_bytes"]
    tput = {k: mib_s(size, median(v["seconds"])) for k, v in res["full"].items()}
    limit = {k: mib_s(size, median(v["seconds"])) for k, v in res["limit"].items()}
    restore = {k: mib_s(size, median(v["seconds"])) for k, v in res["restore"].items()}
    full_s = {k: median(v["seconds"]) for k, v in res["full"].items()}
    durable = {
        k: median([a + b for a, b in zip(v["seconds"], v["sync_seconds"], strict=True)])
        for k, v in res["restore"].items()
    }
    incr_tool = {"lifeboat --changed-extents": "lifeboat", "lifeboat (full read)": "lifeboat"}
    incr_frac = {v: median(r["seconds"]) / full_s[incr_tool.get(v, v)] for v, r in res["incremental"].items()}
    stored = {k: median(v["stored_bytes"]) for k, v in res["full"].items()}
    rss_mib = {
        phase: {k: max(v["rss_kib"]) / 1024 for k, v in res[phase].items()}
        for phase in ("full", "restore", "incremental")
    }
    lb_rss = max(
        rss_mib["full"]["lifeboat"],
        rss_mib["restore"]["lifeboat"],
        rss_mib["incremental"]["lifeboat --changed-extents"],
        rss_mib["incremental"]["lifeboat (full read)"],
    )
    ratios = {
        "full throughput lifeboat/restic": tput["lifeboat"] / tput["restic"],
        "full throughput lifeboat/borg": tput["lifeboat"] / tput["borg"],
        "full throughput lifeboat/(zstd -1 -T2)": tput["lifeboat"] / limit["zstd -1 -T2"],
        "full throughput lifeboat/cat": tput["lifeboat"] / limit["cat"],
        **{f"incremental/full time {v}": f for v, f in incr_frac.items()},
        "restore throughput lifeboat/restic": restore["lifeboat"] / restore["restic"],
        "restore throughput lifeboat/borg": restore["lifeboat"] / restore["borg"],
        "restore incl. sync lifeboat/restic": durable["restic"] / durable["lifeboat"],
        "stored bytes lifeboat/restic": stored["lifeboat"] / stored["restic"],
        "stored bytes lifeboat/borg": stored["lifeboat"] / stored["borg"],
        "peak RSS full backup lifeboat/restic": rss_mib["full"]["lifeboat"] / rss_mib["full"]["restic"],
        "peak RSS restore lifeboat/restic": rss_mib["restore"]["lifeboat"] / rss_mib["restore"]["restic"],
        "incremental bytes added/changed lifeboat --changed-extents": median(
            res["incremental"]["lifeboat --changed-extents"]["added_bytes"]
        )
        / res["mutation"]["changed_bytes"],
    }
    targets = [
        ("Full replication ≥ 3x restic throughput", ratios["full throughput lifeboat/restic"], 3.0, "x"),
        (
            "Full replication ≥ 60% of zstd -1 -T2",
            ratios["full throughput lifeboat/(zstd -1 -T2)"],
            0.60,
            "%",
        ),
        (
            "Incremental with extent list ≤ 10% of full time",
            incr_frac["lifeboat --changed-extents"],
            0.10,
            "%≤",
        ),
        (
            "Incremental bytes added ≤ 1.3x the bytes changed",
            ratios["incremental bytes added/changed lifeboat --changed-extents"],
            1.3,
            "x≤",
        ),
        ("Restore ≥ 2x restic throughput", ratios["restore throughput lifeboat/restic"], 2.0, "x"),
        ("Restore incl. sync ≥ 2x restic's", ratios["restore incl. sync lifeboat/restic"], 2.0, "x"),
        ("Stored bytes ≤ restic's", ratios["stored bytes lifeboat/restic"], 1.0, "x≤"),
        ("Peak RSS ≤ 300 MiB (lifeboat, any run)", lb_rss, 300.0, "MiB≤"),
    ]
    return {
        "throughput_mib_s": {"full": tput, "limit": limit, "restore": restore},
        "median_seconds": {"full": full_s},
        "incremental_fraction": incr_frac,
        "stored_bytes": stored,
        "peak_rss_mib": rss_mib,
        "ratios": ratios,
        "targets": [
            {
                "target": name,
                "measured": value,
                "threshold": thr,
                "kind": kind,
                "met": value <= thr if kind.endswith("≤") else value >= thr,
            }
            for name, value, thr, kind in targets
        ],
    }


def fmt_target(value: float, kind: str) -> str:
    if kind.startswith("%"):
        return f"{value:.1%}"
    if kind.startswith("MiB"):
        return f"{value:.0f} MiB"
    return f"{value:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def spread(seconds: list[float]) -> str:
    return f"{min(seconds):.2f}-{max(seconds):.2f}"


def render(res: dict) -> str:
    s, m, img = res["summary"], res["machine"], res["image"]
    size = img["size_bytes"]
    rep = res["params"]["repeat"]
    tput = s["throughput_mib_s"]
    out = [
        "# Benchmarks",
        "",
        f"Generated by `python3 bench/run.py --size {res['params']['size']} --repeat {rep}` on "
        f"{m['date']} (total {res['params']['total_minutes']:.1f} min). Raw measurements: "
        "[bench/results.json](../bench/results.json). Everything below comes from that one run; "
        "the machine is small and shared, so read the **ratios**, not the absolute times.",
        "",
        "## Machine",
        "",
        table(["", ""], [[k, f"`{v}`" if k.endswith("version") else str(v)] for k, v in m.items()]),
        "",
        "## Method",
        "",
        f"- Images: `tests/support/make_disk.py create --size {res['params']['size']}` with `--seed 1` (vm1) and "
        f"`--seed 2` (vm2): {size / MIB:.0f} MiB each, {img['allocated_bytes'] / MIB:.0f} MiB allocated "
        "(the image files are sparse: zero units are holes). All files, repositories and restore targets "
        f"live in `{res['params']['workdir']}` on the same file system ({m['workdir filesystem']}).",
        "- **Warm page cache.** Nothing is dropped from the page cache: the images are read from RAM by every "
        "tool. Each tool runs once un-timed first as a warm-up (machine-limit commands, full backups into a "
        "throw-away repository, restores). `sync` runs after every backup/restore (outside the timed command) so write-back of "
        "one run does not land in the next; timed runs do not include it.",
        f"- Each timed step runs {rep}x with the tools interleaved; tables show the **median** wall time and "
        "min-max. Throughput = image size (logical bytes, holes included) / median wall seconds. Peak RSS is "
        "GNU time's `%M` (max over the repeats).",
        "- Machine limit: `cat IMG`, `b3sum IMG`, `zstd -1 -T2 -c IMG`, output to /dev/null.",
        "- lifeboat: `lifeboat repo init` (encrypted, AES-256-GCM), `lifeboat replicate` with default "
        "settings (1 MiB blocks, `--workers` = CPU count, `--streams 4`), local-folder repository. "
        "restic: `restic init`, `restic backup IMG` (defaults). borg: `borg init -e repokey-blake2`, "
        "`borg create --compression zstd,3` (otherwise defaults). Full backups go into a fresh repository "
        "each repeat.",
        "- Stored bytes: `du -sb` of the repository after the first backup.",
        "- Cross-VM dedup: vm2 backed up into the repository that holds vm1 (lifeboat as `--disk vm2`); "
        "bytes added = `du -sb` after - before.",
        f"- Incremental: per repeat, fresh repositories get an un-timed base backup of vm1; then "
        f"`make_disk.py mutate --fraction 0.05 --seed 7 --extents-out` rewrites {res['mutation']['changed_bytes'] / MIB:.0f} MiB "
        f"in {res['mutation']['extents']} extents in place, and the second backup is timed: lifeboat with "
        "`--changed-extents`, lifeboat without (reads every block), restic and borg (which re-read the "
        "modified file). Fraction = median incremental time / the same tool's median full-backup time. "
        "Both lifeboat incremental points are restored and sha256-checked against the mutated image.",
        "- Restore: lifeboat `restore` to a file (sparse), `restic restore latest --target DIR`, "
        "`borg extract` (in DIR), peers with default settings (they write the zeros). Every restored image "
        "(warm-up included) is sha256-checked against the source; a mismatch aborts the run.",
        "",
        "## Targets",
        "",
        table(
            ["Target (2-core machine)", "Measured", "Met"],
            [
                [t["target"], fmt_target(t["measured"], t["kind"]), "met" if t["met"] else "**not met**"]
                for t in s["targets"]
            ],
        ),
        "",
        "## Machine limit",
        "",
        table(
            ["Command", "Median s", "MiB/s", "min-max s"],
            [
                [f"`{k}`", f"{median(v['seconds']):.2f}", f"{tput['limit'][k]:.0f}", spread(v["seconds"])]
                for k, v in res["limit"].items()
            ],
        ),
        "",
        "## Full backup",
        "",
        table(
            ["Tool", "Median s", "MiB/s", "min-max s", "lifeboat/tool", "Peak RSS MiB"],
            [
                [
                    k,
                    f"{median(v['seconds']):.2f}",
                    f"{tput['full'][k]:.0f}",
                    spread(v["seconds"]),
                    f"{tput['full']['lifeboat'] / tput['full'][k]:.2f}x",
                    f"{max(v['rss_kib']) / 1024:.0f}",
                ]
                for k, v in res["full"].items()
            ],
        ),
        "",
        "## Incremental backup (5% changed)",
        "",
        table(
            ["Tool", "Median s", "min-max s", "Fraction of own full", "Bytes added (median)", "Peak RSS MiB"],
            [
                [
                    k,
                    f"{median(v['seconds']):.2f}",
                    spread(v["seconds"]),
                    f"{s['incremental_fraction'][k]:.1%}",
                    f"{median(v['added_bytes']) / MIB:.1f} MiB",
                    f"{max(v['rss_kib']) / 1024:.0f}",
                ]
                for k, v in res["incremental"].items()
            ],
        ),
        "",
        "## Bytes stored after the first backup",
        "",
        table(
            ["Tool", "Bytes (du -sb)", "MiB", "% of image", "vs restic"],
            [
                [
                    k,
                    f"{int(b):,}",
                    f"{b / MIB:.1f}",
                    f"{b / size:.1%}",
                    f"{b / s['stored_bytes']['restic']:.3f}x",
                ]
                for k, b in s["stored_bytes"].items()
            ],
        ),
        "",
        f"lifeboat's own `repo info` reports bytes_stored = {res['full']['lifeboat']['stored_bytes_reported']:,}.",
        "",
        "## Cross-VM dedup (vm2 into the repository holding vm1)",
        "",
        table(
            ["Tool", "vm2 alone (bytes)", "vm2 added to vm1's repo (bytes)", "Saved by cross-VM dedup"],
            [
                [
                    k,
                    f"{v['standalone_bytes']:,}",
                    f"{v['added_bytes']:,}",
                    f"{1 - v['added_bytes'] / v['standalone_bytes']:.1%}",
                ]
                for k, v in res["dedup"].items()
            ],
        ),
        "",
        "## Restore",
        "",
        table(
            [
                "Tool",
                "Median s",
                "MiB/s",
                "min-max s",
                "lifeboat/tool",
                "+ sync s (median)",
                "Peak RSS MiB",
                "sha256",
            ],
            [
                [
                    k,
                    f"{median(v['seconds']):.2f}",
                    f"{tput['restore'][k]:.0f}",
                    spread(v["seconds"]),
                    f"{tput['restore']['lifeboat'] / tput['restore'][k]:.2f}x",
                    f"{median(v['sync_seconds']):.2f}",
                    f"{max(v['rss_kib']) / 1024:.0f}",
                    "verified",
                ]
                for k, v in res["restore"].items()
            ],
        ),
        "",
        "lifeboat fsyncs the restored image before it exits; restic and borg do not. The `+ sync` column is "
        "a `sync` run (timed on its own) right after each restore: the write-back each tool leaves behind.",
        "",
        f"Including that write-back (tool + `sync`), lifeboat restores "
        f"{s['ratios']['restore incl. sync lifeboat/restic']:.2f}x as fast as restic.",
        "",
        "## Peak RSS (MiB, max over repeats)",
        "",
        table(
            ["Tool", "Full backup", "Incremental", "Restore"],
            [
                [
                    k,
                    f"{s['peak_rss_mib']['full'][k]:.0f}",
                    " / ".join(
                        f"{s['peak_rss_mib']['incremental'][v]:.0f}"
                        for v in s["peak_rss_mib"]["incremental"]
                        if v == k or (k == "lifeboat" and v.startswith("lifeboat"))
                    ),
                    f"{s['peak_rss_mib']['restore'][k]:.0f}",
                ]
                for k in res["full"]
            ],
        ),
        "",
        "(lifeboat incremental: with extents / full read.)",
        "",
        "## Ratios",
        "",
        table(["Ratio", "Value"], [[k, f"{v:.3f}"] for k, v in s["ratios"].items()]),
        "",
        "## Notes",
        "",
        f"- lifeboat skips the image's holes (SEEK_DATA/SEEK_HOLE) and reads {img['allocated_bytes'] / MIB:.0f} "
        f"of {size / MIB:.0f} MiB; `cat`, `zstd` and the peers read all of it (zstd also compresses the zeros). "
        "Throughputs all use the logical size, so lifeboat's ratio to `zstd -1 -T2` includes that advantage.",
        f"- The mutation changes {res['mutation']['changed_bytes'] / MIB:.0f} MiB in 64 KiB-aligned regions; "
        "with 1 MiB blocks lifeboat reads every block an extent touches, and stores a block of which at most "
        "half changed as a patch of its 16 KiB chunks that changed (docs/FORMAT.md §5.1; bytes added "
        f"{median(res['incremental']['lifeboat --changed-extents']['added_bytes']) / MIB:.0f} MiB), and every "
        "lifeboat run also pays a fixed start-up (interpreter and imports, Argon2id key unwrap, repository "
        "lock), which weighs on short incremental runs.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- write

#: sections other benchmarks (bench/control_plane_bench.py, recovery_bench.py, vsphere_bench.py,
#: kvm_bench.py) own inside the same document
KEPT_SECTIONS = (
    ("<!-- control-plane:start -->", "<!-- control-plane:end -->"),
    ("<!-- recovery:start -->", "<!-- recovery:end -->"),
    ("<!-- vsphere:start -->", "<!-- vsphere:end -->"),
    ("<!-- kvm:start -->", "<!-- kvm:end -->"),  # bench/kvm_bench.py
    ("<!-- index-scale:start -->", "<!-- index-scale:end -->"),  # bench/index_scale.py
    ("<!-- index-lookup:start -->", "<!-- index-lookup:end -->"),  # bench/index_lookup_bench.py
    ("<!-- wan:start -->", "<!-- wan:end -->"),  # bench/wan_bench.py
)


def write_report(out: Path, text: str) -> None:
    """Write the report to ``out``, carrying over (at the end) any section other benchmarks
    keep between their markers in the existing file."""
    old = out.read_text() if out.exists() else ""
    kept = []
    for start, end in KEPT_SECTIONS:
        i = old.find(start)
        j = old.find(end, i + len(start)) if i >= 0 else -1
        if i >= 0 and j >= 0 and start not in text:
            kept.append(old[i : j + len(end)])
    if kept:
        text = text.rstrip("\n") + "\n\n" + "\n\n".join(kept) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


# --------------------------------------------------------------------------- machine


def first_line(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def cpu_and_ram() -> tuple[str, str]:
    """The CPU model and the RAM size, from /proc."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )
    mem_kib = int(
        next(
            ln.split()[1]
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if ln.startswith("MemTotal")
        )
    )
    return model, f"{mem_kib / MIB:.1f} GiB"


def replace_section(path: Path, section: str, start: str, end: str) -> None:
    """Put ``section`` (which begins with ``start`` and ends with ``end``) in place of the
    one between those markers in ``path``, or append it."""
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: section, old, count=1)
    else:
        new = old.rstrip("\n") + ("\n\n" if old.strip() else "") + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def machine_info(work: Path) -> dict:
    model, ram = cpu_and_ram()
    from importlib.metadata import version

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": first_line(["nproc"]),
        "CPU": model,
        "RAM": ram,
        "kernel": platform.release(),
        "workdir filesystem": first_line(["stat", "-f", "-c", "%T", str(work)]),
        "python version": platform.python_version(),
        "lifeboat version": f"{version('lifeboat')} ({first_line(['git', '-C', str(ROOT), 'describe', '--always', '--dirty'])})",
        "restic version": first_line(["restic", "version"]),
        "borg version": first_line(["borg", "--version"]),
        "b3sum version": first_line(["b3sum", "--version"]),
        "zstd version": first_line(["zstd", "--version"]),
    }


def check_tools() -> None:
    missing = [t for t in ("lifeboat", "restic", "borg", "b3sum", "zstd", "cat") if shutil.which(t) is None]
    if not Path(TIME).exists():
        missing.append(TIME)
    if missing:
        raise BenchError(
            f"missing tools: {', '.join(missing)} (run bench/install_peers.sh; pip install -e .)"
        )


# --------------------------------------------------------------------------- main


def make_image(out: Path, size: str, seed: int) -> None:
    subprocess.run(
        [sys.executable, str(MAKE_DISK), "create", str(out), "--size", size, "--seed", str(seed)], check=True
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="2G", help="image size (make_disk.py syntax, e.g. 256M, 2G)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per step; medians reported")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    p.add_argument(
        "--json", type=Path, default=RESULTS_JSON, help="raw measurements (default bench/results.json)"
    )
    p.add_argument("--workdir", type=Path, default=ROOT / "bench" / "work")
    p.add_argument("--from-json", type=Path, help="re-render --out from saved measurements; run nothing")
    a = p.parse_args()
    if a.from_json:
        res = json.loads(a.from_json.read_text())
        res["summary"] = summarize(res)
        write_report(a.out, render(res))
        return
    if a.repeat < 1:
        raise BenchError("--repeat must be ≥ 1")
    check_tools()
    started = time.perf_counter()
    work = a.workdir.resolve()
    rmtree(work)
    work.mkdir(parents=True)
    runner = Runner(work)
    tools: list[Tool] = [Lifeboat(runner), Restic(runner), Borg(runner)]
    repos, restores = work / "repos", work / "restore"

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    log(f"creating images ({a.size}) in {work}")
    pristine, img, img2, extents = (
        work / "vm1-pristine.img",
        work / "vm1.img",
        work / "vm2.img",
        work / "changed.json",
    )
    make_image(pristine, a.size, 1)
    make_image(img2, a.size, 2)
    copy_sparse(pristine, img)
    want_sha = sha256(pristine)
    res: dict = {
        "machine": machine_info(work),
        "params": {"size": a.size, "repeat": a.repeat, "workdir": os.path.relpath(work, ROOT)},
        "image": {
            "size_bytes": img.stat().st_size,
            "allocated_bytes": pristine.stat().st_blocks * 512,
            "sha256": want_sha,
        },
    }

    def verify_incremental(tool: Tool, repo: Path) -> None:
        _, restored = tool.restore(repo, img, restores / "incr")
        if sha256(restored) != sha256(img):
            raise BenchError(f"{tool.name}: incremental point in {repo} does not restore the mutated image")
        rmtree(restores / "incr")

    log("machine limit")
    res["limit"] = measure_limit(runner, img, a.repeat)
    log("full backups")
    res["full"], kept = measure_full(tools, img, repos, a.repeat)
    log("restores")
    res["restore"] = measure_restore(tools, kept, img, want_sha, restores, a.repeat)
    log("cross-VM dedup")
    res["dedup"] = measure_dedup(tools, kept, img2, repos)
    for repo in kept.values():
        rmtree(repo)
    log("incremental backups")
    res["incremental"], res["mutation"] = measure_incremental(
        tools, pristine, img, extents, repos, a.repeat, verify_incremental
    )
    res["params"]["total_minutes"] = (time.perf_counter() - started) / 60
    res["summary"] = summarize(res)
    a.json.write_text(json.dumps(res, indent=2) + "\n")
    write_report(a.out, render(res))
    log(f"wrote {a.out} and {a.json}")
    for t in res["summary"]["targets"]:
        print(
            f"  {'met    ' if t['met'] else 'NOT MET'}  {t['target']}: {fmt_target(t['measured'], t['kind'])}"
        )


if __name__ == "__main__":
    main()
