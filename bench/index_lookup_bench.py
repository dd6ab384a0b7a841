#!/usr/bin/env python3
"""New data into a large repository: what the index costs a full replication.

    python3 -m bench.index_lookup_bench [--entries 2000000] [--size 512M] [--repeat 3]

Builds, with the library, a repository whose index is one generation of ``--entries``
synthetic entries (random ids, written as shards directly: no deltas, no compaction), on
a real S3 server (SeaweedFS, started here) and an empty one beside it; then replicates the
same new image into each (in process, a fresh node cache each time) and reports the
pipeline's time, the S3 GETs it made and the shards it fetched. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node_runtime.replication.pipeline import replicate  # noqa: E402
from node_runtime.sources.files import FileSource  # noqa: E402
from shared.adapters.store_wrappers import CountingStore  # noqa: E402
from shared.repo.codec import IndexEntry  # noqa: E402
from shared.repo.compact import choose_prefix_bits, shards_from_sorted, write_generation  # noqa: E402
from shared.repo.keys import KdfParams  # noqa: E402
from shared.repo.object_cache import ObjectCache  # noqa: E402
from shared.repo.repository import Repository  # noqa: E402
from tests.servers import start_seaweedfs  # noqa: E402
from tests.support import make_disk  # noqa: E402

KDF = KdfParams(iterations=1, memory_kib=8192, lanes=1)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def big_index(repo: Repository, entries: int) -> float:
    """One generation of ``entries`` random ids, written as shards; seconds taken."""
    start = time.perf_counter()
    pack = os.urandom(32)
    rows = sorted((os.urandom(32), IndexEntry(pack, 8 + i, 1000, 1 << 20)) for i in range(entries))
    from datetime import UTC, datetime

    repo.upgrade()
    table = shards_from_sorted(repo, iter(rows), choose_prefix_bits(entries))
    write_generation(repo, table, [], None, datetime.now(UTC))
    return time.perf_counter() - start


def run_once(repo_store: CountingStore, image: Path, cache_dir: Path) -> dict:
    repo = Repository.open(repo_store, lambda: "pw")
    repo.cache = ObjectCache(cache_dir, max_bytes=2 << 30)
    repo_store.reset()
    disk = f"new-{os.urandom(4).hex()}"
    with FileSource(image) as src:
        point = replicate(repo, disk, src)
    return {
        "seconds": point.stats.duration_s,
        "gets": repo_store.gets,
        "blocks_read": point.stats.blocks_read,
        "blocks_new": point.stats.blocks_new,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", type=int, default=2_000_000)
    p.add_argument("--size", default="512M")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lookup-bench-") as tmp:
        work = Path(tmp)
        weed = start_seaweedfs(work / "weed")
        try:
            stores = {name: CountingStore(weed.store(name)) for name in ("big", "empty")}
            for store in stores.values():
                Repository.init(store, "pw", kdf=KDF)
            built = big_index(Repository.open(stores["big"], lambda: "pw"), args.entries)
            image = work / "new.img"
            make_disk.create(str(image), parse_size(args.size), 77)
            runs: dict[str, list[dict]] = {"big": [], "empty": []}
            for i in range(args.repeat):
                for name in ("big", "empty"):
                    # the image is new to both each time: a fresh disk id, its blocks are in the
                    # repository after the first repeat, so only the first repeat stores data
                    runs[name].append(run_once(stores[name], image, work / f"cache-{name}-{i}"))
        finally:
            weed.stop()
    print(f"{args.entries:,} entries built in {built:.1f} s; image {args.size}; medians of {args.repeat}")
    print("| repository | first run s | later runs s (median) | GETs first / later |")
    print("|---|---|---|---|")
    for name, rs in runs.items():
        later = [r["seconds"] for r in rs[1:]] or [rs[0]["seconds"]]
        print(
            f"| {name} | {rs[0]['seconds']:.2f} | {statistics.median(later):.2f} | "
            f"{rs[0]['gets']} / {statistics.median([r['gets'] for r in rs[1:]] or [0]):.0f} |"
        )


if __name__ == "__main__":
    main()
