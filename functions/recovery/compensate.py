"""Compensation: delete what a failed state created, newest first, never raising."""

from __future__ import annotations

import logging

from node_runtime.recovery.targets.base import Cleaner
from shared.domain.recovery import CleanupOutcome, Resource

log = logging.getLogger("lifeboat.recovery")


def delete_all(cleaner: Cleaner, resources: list[Resource]) -> CleanupOutcome:
    """Delete newest first; never raises: failures are listed with their reason."""
    outcome = CleanupOutcome()
    for r in reversed(resources):
        try:
            (outcome.deleted if cleaner.delete(r) else outcome.already_gone).append(r)
        except Exception as exc:  # one stuck resource must not keep the others
            log.warning("cleanup of %s %s failed: %s", r.type, r.id, exc)
            outcome.failed.append(f"{r.type} {r.id}: {exc}")
    return outcome
