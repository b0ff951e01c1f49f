"""The run API under load: creates per second, and SSE delivery latency to many subscribers.

    .venv/bin/python bench/gateway.py --subscribers 1000 --runs 50

The gateway runs as its own process (`agentstream gateway`), with the processors and the scripted
model as in production. Subscribers are plain HTTP/1.1 connections (one per subscriber) spread
over the runs; delivery latency is the time from the event's journal append (its Kafka timestamp)
to the moment a subscriber has read it, for events appended after the subscriber connected. The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from agentstream.localkafka import free_port
from agentstream.stack import PAYMENTS_AUTO_APPROVED, Deployment
from agentstream.tenancy.admin import create_tenant, issue_key
from bench.common import bench_settings, percentile


def scenario(steps: int, start_delay_ms: int) -> dict[str, object]:
    turns: list[dict[str, object]] = [
        {
            "delay_ms": start_delay_ms if i == 0 else 200,
            "tool_calls": [{"name": "calculator", "arguments": {"expression": f"{i} * 2"}}],
        }
        for i in range(steps)
    ]
    turns.append({"text": "done"})
    return {"name": "sse", "turns": turns}


async def subscribe(
    port: int, key: str, run_id: str, latencies: list[float], connected: asyncio.Event, counts: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    since_ms = time.time() * 1000.0
    counts[0] += 1
    if counts[0] >= counts[1]:
        connected.set()
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                now_ms = time.time() * 1000.0
                data = json.loads(line[6:])
                if data["timestamp_ms"] >= since_ms:
                    latencies.append(now_ms - data["timestamp_ms"])
                if data["type"] in ("RunCompleted", "RunFailed", "RunCancelled"):
                    return
    finally:
        writer.close()


async def measure_creates(url: str, key: str, count: int, concurrency: int) -> float:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with slots:
                r = await client.post("/v1/runs", json={"task": f"[scenario:demo] create {i}", "max_steps": 10},
                                      headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return count / (time.perf_counter() - t0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--creates", type=int, default=300)
    args = parser.parse_args()
    async with bench_settings("gateway") as (settings, _kafka):
        scen = settings.home / "scenarios"
        scen.mkdir()
        (scen / "sse.json").write_text(json.dumps(scenario(args.steps, 4000 + args.subscribers * 4)))
        await create_tenant(settings, "bench", "Bench", rate_per_s=100_000, burst=100_000, max_active_runs=100_000)
        key = await issue_key(settings, "bench", "bench")
        async with Deployment(settings, [scen], policies={"bench": PAYMENTS_AUTO_APPROVED}) as d:
            assert d.procs is not None
            port = free_port()
            d.procs.start_gateway(port=port)
            url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as client:
                for _ in range(200):
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                run_ids = []
                for i in range(args.runs):
                    r = await client.post("/v1/runs", json={"task": f"[scenario:sse] {i}", "max_steps": args.steps + 2},
                                          headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
                    r.raise_for_status()
                    run_ids.append(r.json()["id"])
            latencies: list[float] = []
            connected = asyncio.Event()
            counts = [0, args.subscribers]
            subscribers = [
                asyncio.create_task(subscribe(port, key, run_ids[i % len(run_ids)], latencies, connected, counts))
                for i in range(args.subscribers)
            ]
            await asyncio.wait_for(connected.wait(), 60)
            await asyncio.wait_for(asyncio.gather(*subscribers), 300)
            creates_per_s = await measure_creates(url, key, args.creates, 32)
    print(
        json.dumps(
            {
                "creates_per_s": round(creates_per_s, 1),
                "sse_subscribers": args.subscribers,
                "runs_streamed": args.runs,
                "sse_events_delivered_live": len(latencies),
                "sse_delivery_ms_p50": round(percentile(latencies, 50), 1),
                "sse_delivery_ms_p99": round(percentile(latencies, 99), 1),
                "sse_delivery_ms_max": round(max(latencies) if latencies else float("nan"), 1),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
