"""``lifeboat prep inspect|apply DISK... --target qemu|aws|azure``: the Prep Node for operators.

Both open the machine's disks (boot disk first; raw or qcow2 images, or block devices) in a
libguestfs appliance. ``inspect`` never writes; ``apply`` is a dry run too unless ``--write``
is given. Exit codes: 0 when nothing failed, 14 when preparation was refused (BitLocker, a
hibernated, dirty or corrupt volume) or a change failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from node_runtime.prep.guest import DiskSource
from node_runtime.prep.models import PREP_TARGETS, GuestPrep
from node_runtime.prep.run import prepare_disks
from shared.errors import InvalidInputError

out = Console()
DisksArg = Annotated[
    list[Path], typer.Argument(help="The machine's disk images or devices, boot disk first.")
]
TargetOpt = Annotated[
    str, typer.Option("--target", "-t", help=f"Target platform: {', '.join(PREP_TARGETS)}.")
]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="Image format of every disk (default: qcow2 for *.qcow2, else raw)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
FAILED_EXIT = 14


def _sources(disks: list[Path], fmt: str | None) -> list[DiskSource]:
    missing = [str(d) for d in disks if not d.exists()]
    if missing:
        raise InvalidInputError(f"no such disk: {', '.join(missing)}")
    return [
        DiskSource(path=str(d), format=fmt or ("qcow2" if d.suffix == ".qcow2" else "raw")) for d in disks
    ]


def _target(target: str) -> str:
    if target not in PREP_TARGETS:
        raise InvalidInputError(f"--target must be one of {', '.join(PREP_TARGETS)}, not {target!r}")
    return target


def _show(result: GuestPrep, as_json: bool, wrote: bool) -> None:
    summary = result.summary()
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        os = summary["os"]
        assert isinstance(os, dict)
        name = str(os.get("product") or "")
        if os.get("version") and str(os["version"]) not in name:
            name = f"{name} {os['version']}".strip()
        out.print(f"{os['type']} guest{': ' + name if name else ''}, prepared for {result.target}")
        if result.findings:
            table = Table("severity", "finding", "message", title="Findings")
            for f in result.findings:
                table.add_row(f.severity, f.code, f.message)
            out.print(table)
        if result.changes:
            table = Table("status", "change", "where", "before -> after", title="Changes")
            for c in result.changes:
                table.add_row(c.status, c.code, c.where, f"{c.before or ''} -> {c.after or ''}" + (
                    f"\n{c.error}" if c.error else ""))  # fmt: skip
            out.print(table)
        if result.refused:
            out.print("refused: nothing was changed")
        elif not result.changes:
            out.print("nothing to change")
        elif not wrote:
            out.print("dry run: nothing was written (lifeboat prep apply --write makes these changes)")
    if result.refused or any(c.status == "failed" for c in result.changes):
        raise typer.Exit(FAILED_EXIT)


def register(app: typer.Typer) -> None:
    """Add ``lifeboat prep``."""
    prep = typer.Typer(help="Prepare a machine's disks to boot on a target platform (libguestfs).",
                       no_args_is_help=True)  # fmt: skip
    app.add_typer(prep, name="prep")

    @prep.command("inspect")
    def inspect(disks: DisksArg, target: TargetOpt, fmt: FormatOpt = None, as_json: JsonOpt = False) -> None:
        """Read the guest (never writes) and list findings and the changes the target needs."""
        _show(prepare_disks(_sources(disks, fmt), target=_target(target), apply=False), as_json, wrote=False)

    @prep.command("apply")
    def apply(
        disks: DisksArg,
        target: TargetOpt,
        write: Annotated[bool, typer.Option("--write", help="Make the changes (default: dry run).")] = False,
        fmt: FormatOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Make the changes the target needs (drivers, fstab, boot loader, network, registry). Dry run
        unless --write; shut the machine down first, and keep a copy: changes are made in place."""
        result = prepare_disks(_sources(disks, fmt), target=_target(target), apply=write)
        _show(result, as_json, wrote=write)
