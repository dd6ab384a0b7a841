"""The Bicep templates, offline: every file parses (pycep-parser), main.bicep wires every
module with every parameter it requires, and checkov (bicep framework) reports no failed
check except those suppressed inline with ``// checkov:skip=<ID>:<reason>``.

No Bicep compiler is available offline (DESIGN §4). checkov runs from its own virtualenv
(``make deps`` creates ``build/checkov-venv``; ``LIFEBOAT_CHECKOV`` points elsewhere):
its pinned dependencies (boto3, packaging, pycep-parser) conflict with the project's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from tests.servers import find_tool

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "bicep"
FILES = sorted(BICEP.rglob("*.bicep"))
MODULES = sorted(p.relative_to(BICEP).as_posix() for p in (BICEP / "modules").glob("*.bicep"))
SKIP = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def parse(path: Path) -> dict[str, Any]:
    return dict(BicepParser().parse(file_path=path))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(BICEP).as_posix())
def test_every_template_parses(path: Path) -> None:
    parsed = parse(path)
    assert parsed.get("parameters") or parsed.get("resources") or parsed.get("modules")


def test_main_wires_every_module_with_its_required_parameters() -> None:
    main = parse(BICEP / "main.bicep")
    used: dict[str, list[dict[str, Any]]] = {}
    for module in main["modules"].values():
        used.setdefault(module["detail"]["path"], []).append(module["config"].get("params") or {})
    assert sorted(used) == MODULES, "every module is deployed by main.bicep, and nothing else is referenced"
    for rel, calls in used.items():
        declared = parse(BICEP / rel)["parameters"]
        required = {name for name, p in declared.items() if p.get("default") is None}
        for params in calls:
            assert required <= set(params), (
                f"{rel}: main.bicep does not pass {sorted(required - set(params))}"
            )
            assert set(params) <= set(declared), (
                f"{rel}: unknown parameters {sorted(set(params) - set(declared))}"
            )


def test_main_parameters_are_the_documented_ones() -> None:
    params = parse(BICEP / "main.bicep")["parameters"]
    assert {"location", "prefix", "nodeCount", "nodeSize", "alertEmail"} <= set(params)
    doc = (ROOT / "docs/deploy-azure.md").read_text()
    undocumented = [name for name in params if f"`{name}`" not in doc]
    assert not undocumented, f"parameters missing from docs/deploy-azure.md: {undocumented}"


def _checkov() -> str:
    local = ROOT / "build/checkov-venv/bin/checkov"
    if not os.environ.get("LIFEBOAT_CHECKOV") and local.is_file():
        return str(local)
    return find_tool("checkov", "LIFEBOAT_CHECKOV")


def test_checkov_finds_nothing_unexplained() -> None:
    run = subprocess.run(
        [_checkov(), "--framework", "bicep", "--skip-download", "--directory", str(BICEP), "--output", "json"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr[-2000:]
    report = json.loads(run.stdout)
    report = report[0] if isinstance(report, list) else report
    results = report["results"]
    assert results.get("parsing_errors") == [], "checkov could not parse some templates"
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range']})"
        for c in results["failed_checks"]
    ]
    assert failed == [], "unexplained checkov findings: fix them or skip inline with a reason:\n" + "\n".join(
        failed
    )
    assert report["summary"]["passed"] > 30, "checkov ran almost no checks: did the bicep framework load?"
    # every suppression names a check and gives a reason
    for path in FILES:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = SKIP.search(line)
            if m:
                assert (m.group(2) or "").strip(), (
                    f"{path.name}:{n}: checkov skip of {m.group(1)} without a reason"
                )
    skipped = results["skipped_checks"]
    assert all(c.get("check_result", {}).get("suppress_comment") for c in skipped)
