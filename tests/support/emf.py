"""CloudWatch Embedded Metric Format documents, read back from what a process printed."""

from __future__ import annotations

import json
from typing import Any


def emf_documents(stdout: str) -> list[dict[str, Any]]:
    """Each EMF metric printed: ``{name, unit, namespace, dimensions, values}``."""
    found = []
    for line in stdout.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if not isinstance(doc, dict) or "_aws" not in doc:
            continue
        for directive in doc["_aws"]["CloudWatchMetrics"]:
            [dims] = directive["Dimensions"]
            for metric in directive["Metrics"]:
                raw = doc[metric["Name"]]
                found.append({
                    "name": metric["Name"], "unit": metric.get("Unit"), "namespace": directive["Namespace"],
                    "dimensions": {d: doc[d] for d in dims}, "values": raw if isinstance(raw, list) else [raw],
                })  # fmt: skip
    return found
