"""PLACEHOLDER: replaced by the Windows work."""

from __future__ import annotations

from node_runtime.prep.models import Change, PrepFinding, WindowsFacts


def decide_windows(facts: WindowsFacts, target: str) -> tuple[list[PrepFinding], list[Change]]:
    """Pure: what ``target`` needs changed in this Windows guest."""
    raise NotImplementedError
