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
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from agentstream.localkafka import free_port
from agentstream.stack import LAYOUT_ENV, PAYMENTS_AUTO_APPROVED, Deployment
from agentstream.tenancy.admin import create_tenant, issue_key
from bench.common import CpuMeter, bench_settings, cpu_seconds, percentile


def scenario(name: str, steps: int, start_delay_ms: int, turn_ms: int) -> dict[str, object]:
    turns: list[dict[str, object]] = [
        {
            "delay_ms": start_delay_ms if i == 0 else turn_ms,
            "tool_calls": [{"name": "calculator", "arguments": {"expression": f"{i} * 2"}}],
        }
        for i in range(steps)
    ]
    turns.append({"text": "done"})
    return {"name": name, "turns": turns}


TERMINAL = (b"event: RunCompleted", b"event: RunFailed", b"event: RunCancelled")


class SseSubscriber(asyncio.Protocol):
    """One SSE connection that stamps each event with the time its last byte arrived.

    The time is taken as the bytes come in, before any parsing, and the parse is a byte search
    for the event's journal timestamp: with a thousand connections in one process, a client that
    decodes every event as JSON first would add its own CPU time to the figure it measures."""

    def __init__(self, request: bytes, since_ms: float, latencies: list[float], done: asyncio.Future[None]) -> None:
        self.request, self.since_ms, self.latencies, self.done = request, since_ms, latencies, done
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now_ms = time.time() * 1000.0
        *messages, self.buffer = (self.buffer + data).split(b"\n\n")
        for message in messages:
            at = message.find(b'"timestamp_ms":')
            if at < 0:
                continue  # the response head, a keep-alive comment, chunk framing
            stamp = int(message[at + 15 : message.index(b",", at)])
            if stamp >= self.since_ms:
                self.latencies.append(now_ms - stamp)
            if any(t in message for t in TERMINAL):
                assert self.transport is not None
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def subscribe(port: int, key: str, run_id: str, latencies: list[float]) -> asyncio.Future[None]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    request = (
        f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    await loop.create_connection(
        lambda: SseSubscriber(request, time.time() * 1000.0, latencies, done), "127.0.0.1", port
    )
    return done


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
    parser.add_argument("--turn-ms", type=int, default=1000, help="the scripted model's think time per turn")
    parser.add_argument("--lockstep", action="store_true", help="every run steps at the same moment (worst case)")
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--processor-nice", type=int, default=10,
                        help="niceness of the processors (background work) relative to the gateway and broker")  # fmt: skip
    parser.add_argument("--layout", choices=("engine", "separate"), default="engine",
                        help="engine: every processor core in one process (what `dev` runs); separate: one each")  # fmt: skip
    args = parser.parse_args()
    os.environ[LAYOUT_ENV] = args.layout
    async with bench_settings("gateway") as (settings, _kafka):
        scen = settings.home / "scenarios"
        scen.mkdir()
        first_turn_ms = 4000 + args.subscribers * 4  # every subscriber is connected before the first step
        for i in range(args.runs):
            # Runs started at different moments step at different moments: spread their phases over
            # one turn, unless the worst case (all at once) is asked for.
            phase_ms = 0 if args.lockstep else i * args.turn_ms // args.runs
            (scen / f"sse{i}.json").write_text(
                json.dumps(scenario(f"sse{i}", args.steps, first_turn_ms + phase_ms, args.turn_ms))
            )
        await create_tenant(settings, "bench", "Bench", rate_per_s=100_000, burst=100_000, max_active_runs=100_000)
        key = await issue_key(settings, "bench", "bench")
        async with Deployment(settings, [scen], policies={"bench": PAYMENTS_AUTO_APPROVED}) as d:
            assert d.procs is not None
            for proc in d.procs.procs.values():
                os.setpriority(os.PRIO_PROCESS, proc.pid, args.processor_nice)
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
                    r = await client.post("/v1/runs", json={"task": f"[scenario:sse{i}] {i}", "max_steps": args.steps + 2},
                                          headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
                    r.raise_for_status()
                    run_ids.append(r.json()["id"])
            latencies: list[float] = []
            streams = [
                await subscribe(port, key, run_ids[i % len(run_ids)], latencies) for i in range(args.subscribers)
            ]
            gateway_pid = d.procs.procs["gateway-0"].pid
            cpu = CpuMeter.begin({"gateway": gateway_pid})
            t0 = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*streams), 300)
            stream_s = time.monotonic() - t0
            gateway_cpu = cpu_seconds(gateway_pid) - cpu.start["gateway"]
            creates_per_s = await measure_creates(url, key, args.creates, 32)
    live = len(latencies)
    print(
        json.dumps(
            {
                "creates_per_s": round(creates_per_s, 1),
                "sse_subscribers": args.subscribers,
                "runs_streamed": args.runs,
                "turn_ms": args.turn_ms,
                "lockstep": args.lockstep,
                "processor_nice": args.processor_nice,
                "layout": args.layout,
                "sse_events_delivered_live": live,
                "sse_deliveries_per_s": round(live / stream_s, 1),
                "gateway_cpu_share": round(gateway_cpu / stream_s, 2),
                "sse_delivery_ms_p50": round(percentile(latencies, 50), 1),
                "sse_delivery_ms_p99": round(percentile(latencies, 99), 1),
                "sse_delivery_ms_max": round(max(latencies) if latencies else float("nan"), 1),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
