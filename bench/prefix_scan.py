"""A state store's prefix scan as history grows: what a run's end costs the call ledgers (they
scan `pending/<run>/`, `clear/<run>/`, `started/<run>/`, `done/<run>/` to close the run).

    .venv/bin/python bench/prefix_scan.py --runs 100,3000

Each finished run leaves its keys deleted, as RocksDB tombstones until a compaction removes them.
`PartitionStore.keys_with_prefix` is timed beside the same scan without its upper bound, which
steps over every tombstone after the prefix until it meets a live key. The last line is one JSON
object: microseconds per scan, by finished runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream.kafka.state import PartitionStore

CALLS_PER_RUN = 20
LIVE_RUNS = 50
SCANS = 500


def unbounded(store: PartitionStore, prefix: bytes) -> list[bytes]:
    found = []
    for raw in store._db.keys(from_key=prefix):
        if not isinstance(raw, bytes) or not raw.startswith(prefix):
            break
        found.append(raw)
    return found


def measure(finished: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = PartitionStore(Path(tmp) / "p0")
        runs = [uuid.uuid4().hex for _ in range(finished)]
        for offset, run in enumerate(runs):
            for call in range(CALLS_PER_RUN):
                store.put(f"pending/{run}/c{call}", 1)
            store.commit(offset)
            for call in range(CALLS_PER_RUN):
                store.delete(f"pending/{run}/c{call}")
            store.commit(offset)
        for _ in range(LIVE_RUNS):
            store.put(f"pending/{uuid.uuid4().hex}/c0", 1)
        store.commit(finished)
        probes = runs[:SCANS]
        t0 = time.perf_counter()
        for run in probes:
            list(store.keys_with_prefix(f"pending/{run}/"))
        bounded_us = (time.perf_counter() - t0) / len(probes) * 1e6
        t0 = time.perf_counter()
        for run in probes:
            unbounded(store, f"pending/{run}/".encode())
        unbounded_us = (time.perf_counter() - t0) / len(probes) * 1e6
        store.close()
    return {"bounded_us": round(bounded_us, 2), "unbounded_us": round(unbounded_us, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="100,3000", help="finished runs before the scans, comma-separated")
    args = parser.parse_args()
    result = {str(n): measure(n) for n in (int(x) for x in args.runs.split(","))}
    print(json.dumps({"scan_us_by_finished_runs": result, "calls_per_run": CALLS_PER_RUN, "live_runs": LIVE_RUNS}))


if __name__ == "__main__":
    main()
