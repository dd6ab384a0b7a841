"""The ``lifeboat`` command: data-plane commands over a repository URL.

REPO is a path, ``file://…``, ``s3://bucket/prefix`` (AWS_* variables, AWS_ENDPOINT_URL)
or ``azure://container/prefix`` (AZURE_STORAGE_CONNECTION_STRING). The passphrase comes
from LIFEBOAT_PASSWORD or a prompt. Human output goes to the terminal; ``--json`` prints
one JSON document for scripts. Errors print one line and exit with the code from
``shared.errors.ERROR_TABLE``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from cli import control, prep
from node_runtime.recovery.restore import restore as restore_point
from node_runtime.replication.pipeline import ReplicationOptions
from node_runtime.replication.pipeline import replicate as replicate_disk
from node_runtime.sources.files import FileSource, load_extents
from shared.adapters.store_url import open_store
from shared.errors import InvalidInputError, LifeboatError, exit_code_for
from shared.policies.retention import RetentionPolicy, parse_duration
from shared.repo.check import check as check_repo
from shared.repo.compact import compact as compact_index
from shared.repo.index import IndexView
from shared.repo.object_cache import cache_from_env
from shared.repo.prune import forget as forget_points
from shared.repo.prune import prune as prune_repo
from shared.repo.repository import Repository

app = typer.Typer(
    name="lifeboat",
    help="Lifeboat: block-level, incremental, deduplicated, encrypted disk replication and recovery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
repo_app = typer.Typer(help="Create and inspect repositories.", no_args_is_help=True)
app.add_typer(repo_app, name="repo")

out = Console()
err = Console(stderr=True)

RepoOpt = Annotated[
    str,
    typer.Option(
        "--repo", "-r", help="Repository: path, file://, s3://bucket/prefix, azure://container/prefix."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
DiskOpt = Annotated[str, typer.Option("--disk", "-d", help="Disk id, e.g. vm1-disk0.")]


def parse_size(text: str) -> int:
    """``64K``, ``1M``, ``4M`` or a byte count."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        return int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)
    except ValueError as exc:
        raise InvalidInputError(f"invalid size {text!r}: use e.g. 64K, 1M or 4M") from exc


def _passphrase(confirm: bool = False) -> Callable[[], str]:
    def ask() -> str:
        secret = os.environ.get("LIFEBOAT_PASSWORD")
        if secret is not None:
            return secret
        if not sys.stdin.isatty():
            raise InvalidInputError("the repository is encrypted: set LIFEBOAT_PASSWORD or run in a terminal")
        return typer.prompt("Repository passphrase", hide_input=True, confirmation_prompt=confirm)

    return ask


def _open(url: str, **store_opts: Any) -> Repository:
    repo = Repository.open(open_store(url, **store_opts), _passphrase())
    repo.cache = cache_from_env(os.environ)
    return repo


@contextmanager
def _progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    if not enabled or not err.is_terminal:
        yield lambda done, total: None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _print_json(doc: Any) -> None:
    out.print_json(json.dumps(doc, default=str))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


# --- repo ---------------------------------------------------------------------------------
@repo_app.command("init")
def repo_init(
    repo: Annotated[str, typer.Argument(help="Where to create the repository.")],
    no_encryption: Annotated[bool, typer.Option("--no-encryption", help="Store data unencrypted.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an empty repository (encrypted with a passphrase unless --no-encryption)."""
    secret = None if no_encryption else _passphrase(confirm=True)()
    r = Repository.init(open_store(repo), secret)
    if as_json:
        _print_json(r.config)
    else:
        out.print(
            f"created repository {r.config['id']} at {r.describe()} (encryption: {r.config['encryption']})"
        )


@repo_app.command("info")
def repo_info(repo: Annotated[str, typer.Argument(help="Repository URL.")], as_json: JsonOpt = False) -> None:
    """Show a repository's config, size and contents."""
    r = _open(repo)
    stored = {"data": 0, "index": 0, "generations": 0, "shards": 0, "pages": 0, "points": 0}
    counts = dict.fromkeys(stored, 0)
    for prefix in stored:
        for info in r.store.list(prefix + "/"):
            stored[prefix] += info.size
            counts[prefix] += 1
    view = IndexView.open(r)  # the generation's totals and the uncovered deltas: no shard read
    gen, deltas = view.generation, view.snapshot.delta_rows().values()
    doc = {
        **r.config,
        "location": r.describe(),
        "disks": sorted({d for d, _ in r.point_names()}),
        "points": counts["points"],
        "packs": counts["data"],
        "index_generation": gen.id if gen else None,
        "index_deltas": len(view.delta_names),
        # a block two writers stored at once counts twice until prune
        "unique_blocks": (gen.entries if gen else 0) + len(deltas),
        "unique_bytes_raw": (sum(gen.raw_bytes) if gen else 0) + sum(e.raw_length for e in deltas),
        "bytes_stored": sum(stored.values()),
    }
    if as_json:
        _print_json(doc)
        return
    for k, v in doc.items():
        out.print(f"{k:>17}: {_human(v) if k.startswith(('bytes', 'unique_bytes')) else v}")


@repo_app.command("unlock")
def repo_unlock(
    repo: Annotated[str, typer.Argument(help="Repository URL.")],
    all_locks: Annotated[
        bool, typer.Option("--all", help="Also remove live locks (only when no Lifeboat process runs).")
    ] = False,
) -> None:
    """Remove stale locks left by killed processes (locks not refreshed for 30 minutes)."""
    r = _open(repo)
    removed = r.remove_locks(stale_only=not all_locks)
    out.print(f"removed {len(removed)} lock(s)")


@repo_app.command("compact")
def repo_compact(
    repo: Annotated[str, typer.Argument(help="Repository URL.")], as_json: JsonOpt = False
) -> None:
    """Merge the index's delta objects into a new generation of shards (safe while nodes
    replicate; replication also compacts by itself when deltas pile up)."""
    report = compact_index(_open(repo))
    if as_json:
        _print_json(report.__dict__)
    elif report.skipped:
        out.print(f"nothing to compact ({report.skipped}); deleted {report.deltas_deleted} leftover deltas")
    else:
        out.print(
            f"generation {report.generation}: merged {report.deltas_merged} deltas ({report.entries_merged} "
            f"entries), wrote {report.shards_written} of {report.shards_total} shards, {report.entries} "
            f"entries in all; deleted {report.deltas_deleted} deltas, {report.generations_deleted} "
            f"generations, {report.shards_deleted} shards"
        )


# --- data plane ---------------------------------------------------------------------------------
@app.command()
def replicate(
    source: Annotated[str, typer.Argument(help="Source disk: raw image file or block device.")],
    repo: RepoOpt,
    disk: DiskOpt,
    changed_extents: Annotated[
        str | None,
        typer.Option(help="JSON [[offset, length], ...] of changed ranges (CBT); read only those."),
    ] = None,
    block_size: Annotated[
        str | None, typer.Option(help="Block size for a new disk (64K-4M, default 1M).")
    ] = None,
    streams: Annotated[int, typer.Option(min=1, max=64, help="Parallel uploads.")] = 4,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Hash/compress threads (default: CPU count).")
    ] = None,
    limit_mbps: Annotated[
        float | None, typer.Option(min=0.01, help="Upload limit in MB/s (10^6 bytes).")
    ] = None,
    checkpoint_mb: Annotated[
        int, typer.Option(min=1, help="Commit progress every N MiB stored, so a killed run resumes.")
    ] = 256,
    as_json: JsonOpt = False,
) -> None:
    """Replicate SOURCE as a new recovery point of DISK; the last line printed is the point id."""
    r = _open(repo, limit_mbps=limit_mbps, max_concurrent=max(16, streams * 2))
    opts = ReplicationOptions(
        block_size=parse_size(block_size) if block_size else None,
        streams=streams,
        workers=workers or os.cpu_count() or 2,
        checkpoint_bytes=checkpoint_mb << 20,
    )
    extents = load_extents(changed_extents) if changed_extents else None
    with (
        FileSource(source, changed_extents=extents) as src,
        _progress(f"replicating {disk}", not as_json) as progress,
    ):
        point = replicate_disk(r, disk, src, opts, progress=progress)
    s = point.stats
    if as_json:
        _print_json(point.model_dump(mode="json", exclude={"pages"}))
    else:
        err.print(
            f"read {_human(s.bytes_read)} in {s.duration_s:.1f}s, new data {_human(s.bytes_new_raw)} "
            f"stored as {_human(s.bytes_new_stored)}, {s.holes} zero blocks (holes)"
        )
    print(point.id)


@app.command()
def points(
    repo: RepoOpt, disk: Annotated[str | None, typer.Option("--disk", "-d")] = None, as_json: JsonOpt = False
) -> None:
    """List recovery points, oldest first."""
    r = _open(repo)
    rows = r.list_points(disk)
    if as_json:
        _print_json([p.model_dump(mode="json", exclude={"pages"}) for p in rows])
        return
    table = Table("disk", "point", "time (UTC)", "size", "new data", "parent")
    for column in table.columns[:3]:
        column.no_wrap = True
    for p in rows:
        table.add_row(
            p.disk_id,
            p.id,
            p.time.strftime("%Y-%m-%d %H:%M:%S"),
            _human(p.disk_size),
            _human(p.stats.bytes_new_raw),
            p.parent or "-",
        )
    out.print(table)


@app.command()
def restore(
    target: Annotated[str, typer.Argument(help="Raw file (created, sparse) or block device to write.")],
    repo: RepoOpt,
    disk: DiskOpt,
    point: Annotated[str, typer.Option(help="Point id (or unique prefix) or 'latest'.")] = "latest",
    threads: Annotated[int, typer.Option(min=1, max=64, help="Parallel reads.")] = 4,
    as_json: JsonOpt = False,
) -> None:
    """Restore a recovery point of DISK to TARGET, verifying every block."""
    r = _open(repo)
    p = r.resolve_point(disk, point)
    with _progress(f"restoring {disk}", not as_json) as progress:
        stats = restore_point(r, p, target, threads=threads, progress=progress)
    if as_json:
        _print_json({"point": p.id, "target": target, **stats.__dict__})
    else:
        out.print(f"restored {p.id} to {target}: {_human(stats.bytes_written)} written, {stats.holes} holes")


@app.command()
def forget(
    repo: RepoOpt,
    disk: DiskOpt,
    keep_last: Annotated[int | None, typer.Option(min=0)] = None,
    keep_hourly: Annotated[int | None, typer.Option(min=0)] = None,
    keep_daily: Annotated[int | None, typer.Option(min=0)] = None,
    keep_weekly: Annotated[int | None, typer.Option(min=0)] = None,
    keep_monthly: Annotated[int | None, typer.Option(min=0)] = None,
    keep_yearly: Annotated[int | None, typer.Option(min=0)] = None,
    keep_within: Annotated[
        str | None, typer.Option(help="Keep points newer than this, e.g. 7d, 36h, 2w.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show decisions, delete nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete the points of DISK that the policy does not keep (run prune to free space)."""
    try:
        within = parse_duration(keep_within) if keep_within else None
        policy = RetentionPolicy(
            keep_last=keep_last,
            keep_hourly=keep_hourly,
            keep_daily=keep_daily,
            keep_weekly=keep_weekly,
            keep_monthly=keep_monthly,
            keep_yearly=keep_yearly,
            keep_within=within,
        )
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc
    decisions = forget_points(_open(repo), disk, policy, datetime.now(UTC), dry_run=dry_run)
    if as_json:
        _print_json([d.model_dump(mode="json") for d in decisions])
        return
    table = Table("point", "decision", "reasons")
    for d in decisions:
        table.add_row(
            d.point_id,
            "keep" if d.keep else ("would forget" if dry_run else "forgotten"),
            ", ".join(d.reasons),
        )
    out.print(table)


@app.command()
def prune(
    repo: RepoOpt,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be freed, change nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Free data that no recovery point references (safe to interrupt and rerun)."""
    report = prune_repo(_open(repo), dry_run=dry_run, log=lambda m: err.print(m) if not as_json else None)
    doc = {k: v for k, v in report.__dict__.items() if k != "steps"}
    if as_json:
        _print_json(doc)
    else:
        verb = "would delete" if dry_run else "deleted"
        out.print(
            f"{report.points} points, {report.live_blocks} live blocks; {verb} {report.packs_deleted} of "
            f"{report.packs_total} packs ({_human(report.bytes_deleted)}), repacked {report.packs_repacked}"
        )


@app.command()
def check(
    repo: RepoOpt,
    read_data: Annotated[bool, typer.Option("--read-data", help="Download and verify every block.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Verify repository structure (and with --read-data every block); exit 8 on problems."""
    r = _open(repo)
    with _progress("reading data", read_data and not as_json) as progress:
        report = check_repo(r, read_data=read_data, progress=progress)
    if as_json:
        _print_json({**report.__dict__, "ok": report.ok})
    else:
        for note in report.notes:
            err.print(f"note: {note}")
        for problem in report.problems:
            err.print(f"[red]problem:[/red] {problem}", markup=True, highlight=False)
        out.print(
            f"{report.points} points, {report.pages} pages, {report.index_objects} index objects, "
            f"{report.packs} packs, {report.blocks} blocks"
            + (f", {report.blocks_read} blocks read" if read_data else "")
        )
        out.print("no problems found" if report.ok else f"{len(report.problems)} problems found")
    if not report.ok:
        raise typer.Exit(8)


control.register(app)
prep.register(app)


def main() -> None:
    """Entry point: run the app, turning Lifeboat errors into one line and an exit code."""
    try:
        app()  # standalone: usage errors print their help and exit 2
    except LifeboatError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(exit_code_for(exc))


if __name__ == "__main__":
    main()
