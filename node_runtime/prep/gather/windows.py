"""PLACEHOLDER: replaced by the Windows work (signatures fixed by node_runtime/prep/run.py)."""

from __future__ import annotations

from node_runtime.prep.guest import Guest
from node_runtime.prep.models import PrepFinding, WindowsFacts


def windows_refusals(guest: Guest, root: str) -> list[PrepFinding]:
    """Before mounting: hibernated, dirty volume… (findings with ``refuses``)."""
    raise NotImplementedError


def gather_windows(guest: Guest, root: str) -> WindowsFacts:
    """With the root mounted: read SYSTEM/SOFTWARE hives into facts."""
    raise NotImplementedError
