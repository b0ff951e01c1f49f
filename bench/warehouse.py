"""The audit warehouse end to end: N demo runs on the real stack (every core in one engine process,
the scripted model), the journal landed by a real Kafka Connect worker running the platform's
converter and Iceberg's sink into one events table.

    .venv/bin/python bench/warehouse.py --runs 1000

Lag is per event: from the journal's append time (LogAppendTime, the row's journal_time) to the
moment the event is first visible to a reader of the table (the audit reader, pyiceberg on the
SQLite catalog, polled every 0.25 s; each poll plans the current snapshot and reads only the Parquet
data files it has not read yet).
Throughput is the events landed over the time from the first append to the last visible event.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream.audit import WarehouseUnavailable
from agentstream.audit.warehouse import Warehouse
from agentstream.client.journal import RunRequest
from agentstream.connect.journal import EVENTS_TABLE, read_topic
from agentstream.connect.local import ensure_principal, local_worker, register_journal, warehouse_plugins
from agentstream.settings import WarehouseSettings, load
from agentstream.stack import AUTO_APPROVE_DEMO, LAYOUT_ENV, Deployment
from bench.common import bench_settings, percentile

TOOLS = ["calculator", "get_current_time", "transfer_funds"]


class Watcher:
    """The table's rows as they become visible: each event id's first-seen wall time."""

    def __init__(self, warehouse: Path) -> None:
        self.warehouse = warehouse
        self.tables: Warehouse | None = None
        self.table = EVENTS_TABLE.split(".")[1]
        self.read: set[str] = set()
        self.ids: Counter[str] = Counter()
        self.lags: list[float] = []
        self.last_seen = 0.0

    def poll(self) -> None:
        now = time.time()
        try:
            self.tables = self.tables or Warehouse(self.warehouse)
            table = self.tables.table(self.table, reload=True)
        except WarehouseUnavailable:
            return  # no catalog or no table before the first commit
        tasks = [t for t in table.scan().plan_files() if t.file.file_path not in self.read]
        if not tasks:
            return
        rows = self.tables.read(self.table, tasks).select(["event_id", "journal_time"]).to_pylist()
        self.read.update(t.file.file_path for t in tasks)
        for row in rows:
            self.ids[str(row["event_id"])] += 1
            self.lags.append(now - row["journal_time"].timestamp())
            self.last_seen = now

    async def until(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while sum(self.ids.values()) < count and time.monotonic() < deadline:
            await asyncio.to_thread(self.poll)
            await asyncio.sleep(0.25)


async def main(args: argparse.Namespace) -> dict[str, object]:
    async with bench_settings("warehouse") as (settings, _):
        update = {"enabled": True, "connect_port": args.port, "commit_interval_s": args.commit_interval,
                  "file_format": "parquet"}  # fmt: skip
        wh = load(WarehouseSettings).model_copy(update=update)
        worker = local_worker(settings, wh, await warehouse_plugins(settings))
        await ensure_principal(settings, worker)
        await worker.start()
        try:
            sink = await register_journal(settings, worker, wh)
            watcher = Watcher(sink.warehouse)
            poller = asyncio.create_task(watcher.until(10**9, timeout_s=10**6))
            async with Deployment(settings, policies=AUTO_APPROVE_DEMO, extra_env={LAYOUT_ENV: "engine"}) as d:
                began = time.time()
                run_ids = await asyncio.gather(*(
                    d.client.request_run(RunRequest(task=f"[scenario:demo] r{i}", tools=TOOLS))
                    for i in range(args.runs)
                ))  # fmt: skip
                for run_id in run_ids:
                    async for _ in d.client.follow(run_id, timeout_s=600):
                        pass
                runs_wall_s = time.time() - began
            poller.cancel()
            journal = await asyncio.to_thread(read_topic, settings.bootstrap_servers, settings.kafka_extra,
                                              sink.topics[0])  # fmt: skip
            await watcher.until(len(journal), timeout_s=args.commit_interval * 3 + 60)
        finally:
            await worker.stop()
    expected = Counter((m.key() or b"").decode() for m in journal)
    landed = sum(min(n, watcher.ids[k]) for k, n in expected.items())
    first_append = min(m.timestamp()[1] for m in journal) / 1000
    return {
        "runs": args.runs,
        "events": len(journal),
        "events_in_warehouse": landed,
        "duplicates": sum(max(0, n - expected[k]) for k, n in watcher.ids.items()),
        "lag_s_p50": round(percentile(watcher.lags, 50), 2),
        "lag_s_p99": round(percentile(watcher.lags, 99), 2),
        "commit_interval_s": args.commit_interval,
        "events_per_s": round(landed / max(1e-3, watcher.last_seen - first_append), 1),
        "runs_wall_s": round(runs_wall_s, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--commit-interval", type=float, default=10.0, help="the sink's commit interval (s)")
    parser.add_argument("--port", type=int, default=18093, help="the Connect worker's REST port")
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = asyncio.run(main(parse_args()))
    print(json.dumps(result))
