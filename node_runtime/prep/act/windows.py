"""PLACEHOLDER: replaced by the Windows work."""

from __future__ import annotations

from node_runtime.prep.guest import Guest
from node_runtime.prep.models import Change


def apply_windows(guest: Guest, changes: list[Change]) -> list[Change]:
    """Apply the changes in order; return them with status applied or failed (and error)."""
    raise NotImplementedError
