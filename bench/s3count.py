#!/usr/bin/env python3
"""Run the ``lifeboat`` CLI in this process and count the S3 requests it makes.

    python -m bench.s3count COUNTS.json replicate ... -r s3://bucket/prefix

Every botocore client created in the process gets two event handlers: ``before-call.s3``
(one per API call, by operation name: GetObject, ListObjectsV2, PutObject, ...) and
``before-send.s3`` (one per HTTP attempt, retries included). At exit the counts are
written to COUNTS.json as ``{"calls": {operation: n}, "http_attempts": n}``, whatever the
CLI's exit code. Used by bench/index_scale.py under ``/usr/bin/time -f %M``.
"""

from __future__ import annotations

import atexit
import json
import runpy
import sys
import threading
from collections import Counter
from typing import Any

import botocore.session

_lock = threading.Lock()
calls: Counter[str] = Counter()
attempts = [0]


def _on_call(model: Any = None, **_: Any) -> None:
    with _lock:
        calls[model.name if model is not None else "?"] += 1


def _on_send(**_: Any) -> None:
    with _lock:
        attempts[0] += 1


_create_client = botocore.session.Session.create_client


def _counting_create_client(self: botocore.session.Session, *args: Any, **kwargs: Any) -> Any:
    client = _create_client(self, *args, **kwargs)
    client.meta.events.register("before-call.s3", _on_call)
    client.meta.events.register("before-send.s3", _on_send)
    return client


def main() -> None:
    out = sys.argv[1]

    def dump() -> None:
        with _lock:
            doc = {"calls": dict(sorted(calls.items())), "http_attempts": attempts[0]}
        with open(out, "w") as f:
            json.dump(doc, f)

    atexit.register(dump)
    botocore.session.Session.create_client = _counting_create_client  # type: ignore[method-assign]
    sys.argv = ["lifeboat", *sys.argv[2:]]
    runpy.run_module("cli.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
