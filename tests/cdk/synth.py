"""Synthesis of the CDK app for the tests (see conftest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Synthesized:
    name: str
    outdir: Path
    templates: dict[str, dict[str, Any]]  # stack name -> template
    report: dict[str, Any] | None
    built: Any  # cdk.app.LifeboatApp

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {
            f"{stack}/{lid}": r
            for stack, t in self.templates.items()
            for lid, r in t.get("Resources", {}).items()
            if r["Type"] == type_
        }


def synth(name: str, tmp: Path, config_overrides: dict[str, Any] | None) -> Synthesized:
    from cdk.app import build
    from cdk.config import EnvConfig

    config = EnvConfig(name=name, **(config_overrides or {})) if config_overrides is not None else None
    outdir = tmp / name
    built = build(config, outdir=str(outdir), context={"env": name} if config is None else None)
    try:
        built.app.synth()
    except RuntimeError as exc:
        failed = outdir / "policy-validation-report.json"
        findings = json.loads(failed.read_text()) if failed.exists() else str(exc)
        pytest.fail(f"synthesis of {name} failed: {json.dumps(findings, indent=1)[:20000]}")
    templates = {
        s.stack_name: json.loads((outdir / f"{s.artifact_id}.template.json").read_text())
        for s in built.stacks
    }
    report_path = outdir / "policy-validation-report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return Synthesized(name, outdir, templates, report, built)
