"""What a recovery reads with, in a node or a Lambda function: repositories opened read-only
and targets built once per configuration.

Imports nothing of the node agent: the recovery flow's Lambda functions import this module on
the Lambda runtime, whose layer has none of the node's source libraries (QMP, NBD, libguestfs).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from node_runtime.recovery.targets.base import Target
from node_runtime.sources.secrets import resolve_secret
from shared.adapters.store_url import open_store
from shared.domain.recovery import TargetConfig
from shared.repo.object_cache import cache_from_env
from shared.repo.repository import Repository

TargetFactory = Callable[[TargetConfig], Target]


def open_existing_repository(url: str, credentials_ref: str | None) -> Repository:
    """Open (never create) the repository a recovery reads."""
    secret = resolve_secret(credentials_ref)
    repo = Repository.open(open_store(url), lambda: secret or "")
    repo.cache = cache_from_env(os.environ)
    return repo


class CachedTargets:
    """Builds each distinct target configuration once (clients and pools are reused)."""

    def __init__(self, build: TargetFactory) -> None:
        self.build = build
        self.lock = threading.Lock()
        self.cache: dict[str, Target] = {}

    def __call__(self, config: TargetConfig) -> Target:
        key = config.model_dump_json()
        with self.lock:
            if key not in self.cache:
                self.cache[key] = self.build(config)
            return self.cache[key]
