"""The console's list view with 100,000 runs on record: p50/p95 of the runs list under typical
filters, and p95 of a run page (the run and its events) for runs long gone from memory.

    .venv/bin/python bench/console.py                 # 100,000 runs
    .venv/bin/python bench/console.py --runs 10000

1. The journal is filled with `--runs` finished runs, fast: synthetic events written straight to
   the journal through the real producer, each signed as the component that writes its type
   (a RunRequested with its run proof), so the gateway verifies them as processors' records. Runs
   vary as real ones do: two tenants (90/10), 1-3 of 8 tools, a cost, some flagged, some failed,
   cancelled or halted, one tool result each.
2. The gateway starts as its own process (`agentstream gateway`, no processors: the runs are
   over) and reads the journal from its start, as a first start does, filling its run index and
   the console's run catalog (`setup_gateway_s`, not measured). It holds only its LRU of runs.
3. Measured over real HTTP, one request at a time: `--list-requests` list pages, newest first,
   cycling through the console's filters (none, status, tool, flagged, cost range, id prefix,
   a combination, the next page by cursor); then `--page-requests` run pages (GET the run, then
   its whole event stream) of random runs, nearly all read back from the journal.
4. The gateway restarts: it reads the journal from its checkpoint only, and lists the older runs
   from the run index's summaries (`restart_all_listed_s`: from its start until every run of the
   tenant is listed; `restart_list_ms_p95` as in 3). `gateway_rss_mb`: its resident memory.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from confluent_kafka import Consumer, Producer

from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.events import (
    BudgetSettled,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunFlagged,
    RunHalted,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
)
from agentstream.kafka.consumer import consumer_config
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import producer_config
from agentstream.localkafka import free_port
from agentstream.security.journal_trust import JournalSigner, stand_in_writer
from agentstream.stack import ProcessorProcesses, child_env
from agentstream.tenancy.admin import create_tenant, issue_key
from agentstream.topics import JOURNAL, load_topics
from bench.common import bench_settings, percentile
from bench.history import rss_mb, wait_healthy

TOOLS = ("search", "calculator", "fetch_url", "sql_query", "send_email", "transfer_funds", "read_file", "translate")
TENANTS = ("acme", "globex")


def run_events(run_id: str, rng: random.Random) -> list[RunEvent]:
    """One finished run: requested, started, a model call and a tool call settled, its end."""
    tenant = TENANTS[0] if rng.random() < 0.9 else TENANTS[1]
    tools = rng.sample(TOOLS, rng.randint(1, 3))
    cost = round(rng.uniform(0.0001, 2.0), 6)
    events: list[RunEvent] = [
        RunRequested(f"{run_id}/requested", run_id, tenant, f"task of {run_id}", "scripted", tools, 10, run_id),
        RunStarted(f"{run_id}/started", run_id, tenant, "scripted", "[]", 10, "system"),
        BudgetSettled(f"{run_id}/settled/1", run_id, tenant, 1, f"{run_id}/1", "model", "", "scripted", cost,
                      500, 0, 50, 0.0, "v1"),
        ToolCallCompleted(f"{run_id}/tool/1", run_id, tenant, 1, f"{run_id}/1/0", tools[0], f"{run_id}/1/0",
                          "a tool result " * 20, False, 12.0),
        BudgetSettled(f"{run_id}/settled/2", run_id, tenant, 1, f"{run_id}/1/0", "tool", tools[0], "", 0.001,
                      0, 0, 0, 0.0, "v1"),
    ]  # fmt: skip
    if rng.random() < 0.05:
        events.append(RunFlagged(f"{run_id}/flag", run_id, tenant, 1, "repeated_denial", "asked 3 times", "s", 3, "{}"))
    end = rng.random()
    if end < 0.8:
        events.append(RunCompleted(f"{run_id}/end", run_id, tenant, 2, "the answer", "stop"))
    elif end < 0.9:
        events.append(RunFailed(f"{run_id}/end", run_id, tenant, 2, "ToolError", "the tool failed"))
    elif end < 0.95:
        events.append(RunCancelled(f"{run_id}/end", run_id, tenant, 2, "cancelled by a person"))
    else:
        events.append(RunHalted(f"{run_id}/end", run_id, tenant, 2, 1, "budget_usd", "over budget", True))
    return events


def fill(settings: Settings, runs: int, tag: str, concurrency: int = 50) -> tuple[list[str], float]:
    """Journals `runs` runs, `concurrency` interleaved at a time; the ids of the first tenant's (in
    journal order) and the seconds taken."""
    topic = load_topics(settings.topic_prefix)[JOURNAL].name
    consumer = Consumer(
        consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "agentstream-reader"})
    )
    partitions = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.close()
    records = RecordFactory(
        AvroCodec(), topic, partitions, JournalSigner("admin", component_keyring(settings, "admin"))
    )
    producer = Producer(producer_config(settings.bootstrap_servers, settings.kafka_extra,
                                        {"linger.ms": 20, "batch.size": 1_000_000,
                                         "queue.buffering.max.messages": 500_000}))  # fmt: skip
    rng = random.Random(7)
    ids = [f"run_{tag[:8]}{i:016x}" for i in range(runs)]
    mine: list[str] = []
    started = time.monotonic()
    for first in range(0, runs, concurrency):
        group = [run_events(run_id, rng) for run_id in ids[first : first + concurrency]]
        mine += [events[0].run_id for events in group if events[0].tenant_id == TENANTS[0]]
        for step in range(max(len(g) for g in group)):  # event i of each run, then event i + 1
            for events in group:
                if step >= len(events):
                    continue
                event = events[step]
                record = records.journal(event, as_writer=stand_in_writer(event.type_name))
                while True:
                    try:
                        kwargs: dict[str, Any] = {"key": record.key, "headers": record.headers}
                        producer.produce(record.topic, record.value, partition=record.partition or 0, **kwargs)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("journal records were not delivered")
    return mine, time.monotonic() - started


def log(text: str) -> None:
    print(f"console: {text}", file=sys.stderr, flush=True)


async def timed(
    http: httpx.AsyncClient, url: str, params: dict[str, str] | None = None
) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await http.get(url, params=params)
    elapsed = (time.perf_counter() - started) * 1000.0
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} {params}: {response.status_code} {response.text[:300]}")
    return elapsed, response


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--list-requests", type=int, default=400)
    parser.add_argument("--page-requests", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    async with bench_settings("console") as (settings, _kafka):
        await create_tenant(settings, "acme", "Acme", rate_per_s=10_000.0, burst=10_000)
        key = await issue_key(settings, "acme", "console-bench")
        procs = ProcessorProcesses(child_env(settings, "http://127.0.0.1:9"), settings.home / "logs")
        procs.issue_keys()
        tag = uuid.uuid4().hex
        ids, fill_s = await asyncio.to_thread(fill, settings, args.runs, tag)
        log(f"filled {args.runs} runs ({len(ids)} of tenant acme) in {fill_s:.1f}s")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {key}"}
        procs.start_gateway(port=port)
        try:
            setup_gateway_s = await wait_healthy(url, args.timeout)
            log(f"gateway's first start (reads the whole journal, fills its catalog): {setup_gateway_s:.1f}s")
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                await listed_whole(http, ids, 30.0)
                result: dict[str, object] = {"runs_on_record": args.runs, **await measure(http, ids, args)}
                result["gateway_rss_mb"] = round(rss_mb(procs.procs["gateway-0"].pid))
                await asyncio.sleep(6)  # a checkpoint past every run: the restart reads what is live only
            # A restart: the journal from its checkpoint only; older runs listed from the run index.
            procs.kill("gateway-0", signal.SIGTERM)
            restarted = time.monotonic()
            procs.start_gateway(port=port)
            restart_ready_s = await wait_healthy(url, args.timeout)
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                await listed_whole(http, ids, 0.0)  # the first list waits for the index to be read
                restart_listed_s = time.monotonic() - restarted
                after = await measure(http, ids, argparse.Namespace(list_requests=100, page_requests=0))
                result["restart_ready_s"] = round(restart_ready_s, 1)
                result["restart_all_listed_s"] = round(restart_listed_s, 1)
                result["restart_list_ms_p95"] = after["list_ms_p95"]
                result["restart_gateway_rss_mb"] = round(rss_mb(procs.procs["gateway-0"].pid))
            result |= {"fill_s": round(fill_s, 1), "setup_gateway_s": round(setup_gateway_s, 1)}
        finally:
            await procs.stop_all()
    # The figures asked for last, after the rest: one JSON object.
    print(json.dumps(result), flush=True)


async def listed_whole(http: httpx.AsyncClient, ids: list[str], wait_s: float) -> None:
    """Every run of the tenant is listed: paged through whole, oldest first (within `wait_s`:
    the catalog is written within a second of the projection catching up)."""
    deadline = time.monotonic() + wait_s
    while True:
        listed, cursor = [], None
        while True:
            params = {"order": "oldest", "limit": "500", **({"cursor": cursor} if cursor else {})}
            page = (await timed(http, "/v1/runs", params))[1].json()
            listed += [run["id"] for run in page["data"]]
            if (cursor := page["next_cursor"]) is None:
                break
        if len(listed) >= len(ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    if set(listed) != set(ids):
        raise RuntimeError(f"{len(ids)} runs of the tenant on record, {len(listed)} listed")


async def measure(http: httpx.AsyncClient, ids: list[str], args: argparse.Namespace) -> dict[str, float]:
    typical: list[dict[str, str]] = [
        {},
        {"status": "completed"},
        {"status": "failed"},
        {"tool": "search"},
        {"flagged": "true"},
        {"min_cost_usd": "1.5"},
        {"min_cost_usd": "0.2", "max_cost_usd": "0.3"},
        {"q": ids[len(ids) // 2][:20]},
        {"status": "completed", "tool": "transfer_funds", "min_cost_usd": "1"},
        {"status": "halted", "flagged": "true"},
    ]
    await timed(http, "/v1/runs", {"order": "newest"})  # warm: the first request pays imports
    list_ms: list[float] = []
    listed = 0
    cursor = None
    for i in range(args.list_requests):
        params = {"order": "newest", "limit": "50", **typical[i % len(typical)]}
        if i % len(typical) == 0 and cursor is not None:
            params["cursor"] = cursor  # the next page of the unfiltered list
        elapsed, response = await timed(http, "/v1/runs", params)
        page = response.json()
        cursor = page["next_cursor"] if i % len(typical) == 0 else cursor
        listed += len(page["data"])
        list_ms.append(elapsed)
    rng = random.Random(11)
    page_ms: list[float] = []
    for run_id in rng.sample(ids, min(len(ids), args.page_requests)):
        started = time.perf_counter()
        run = await http.get(f"/v1/runs/{run_id}")
        events = await http.get(f"/v1/runs/{run_id}/events", params={"truncate": "4000"})
        if run.status_code != 200 or events.status_code != 200 or "event: Run" not in events.text:
            raise RuntimeError(f"run page of {run_id}: {run.status_code} / {events.status_code}")
        page_ms.append((time.perf_counter() - started) * 1000.0)
    log(f"list: {len(list_ms)} pages ({listed} runs shown); run pages: {len(page_ms)}")
    return {
        "list_ms_p50": round(percentile(list_ms, 50), 1),
        "list_ms_p95": round(percentile(list_ms, 95), 1),
        "run_page_ms_p50": round(percentile(page_ms, 50), 1),
        "run_page_ms_p95": round(percentile(page_ms, 95), 1),
    }


if __name__ == "__main__":
    asyncio.run(main())
