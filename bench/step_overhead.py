"""Platform overhead per durable step, and durable steps per second, under concurrent runs.

    .venv/bin/python bench/step_overhead.py --runs 200 --steps 10
    .venv/bin/python bench/step_overhead.py --runs 200 --steps 10 --layout separate --instances 2

A step is one model call plus the tool calls it asks for. Overhead is the step's wall time (from
the orchestrator's LlmCallRequested to the next one, or to the run's end) minus the model's and
the tool's own time as recorded in the journal. The Kafka round trip (produce with acks=all to
consume) is probed on the same broker during the same run. CPU seconds per step are read from
/proc for every process involved, the broker included. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, TopicPartition

from agentstream.client.journal import RunRequest
from agentstream.client.scan import read_journal
from agentstream.config import Settings
from agentstream.events import RunCompleted
from agentstream.kafka.consumer import consumer_config, fetch_batch
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.localkafka import LocalKafka
from agentstream.stack import LAYOUT_ENV, Deployment
from agentstream.topics import load_topics
from bench.common import CpuMeter, bench_settings, percentile, span_exporters, step_overheads
from bench.otlp_sink import Sink, traced
from bench.scenarios import overhead_scenario, write_scenarios
from bench.watch import TerminalWatcher


async def probe_rtt(
    bootstrap: str,
    extra: dict[str, str],
    topic: str,
    started: asyncio.Event,
    stop: asyncio.Event,
    min_samples: int = 50,
) -> list[float]:
    """Produce-to-consume round trips on a single-partition probe topic, every 50 ms while the load
    runs and until at least `min_samples` arrived (one short run still gets a figure). `started` is
    set once the first probe came back: the measured load starts after that."""
    received: dict[bytes, float] = {}
    ready = threading.Event()
    done = threading.Event()

    def consume() -> None:
        consumer = Consumer(consumer_config(bootstrap, extra, {"group.id": "rtt", "fetch.wait.max.ms": 5}))
        consumer.assign([TopicPartition(topic, 0, -1)])  # from the end
        consumer.consume(1, 1.0)
        ready.set()
        while not done.is_set():
            for msg in fetch_batch(consumer, 100, 0.05):
                if msg.error() is None and msg.key():
                    received[msg.key() or b""] = time.perf_counter()
        consumer.close()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    await asyncio.to_thread(ready.wait, 10)
    producer = AsyncProducer(producer_config(bootstrap, extra, {"linger.ms": 0}))
    sent: dict[bytes, float] = {}
    warm = 0
    while not received:  # the consumer's first fetch position is settled once a probe comes back
        key = f"warm{warm}".encode()
        await producer.send(topic, b"x", key=key, partition=0)
        warm += 1
        await asyncio.sleep(0.1)
    received.clear()
    started.set()
    i = 0
    while not stop.is_set() or sum(1 for k in sent if k in received) < min_samples:
        key = f"p{i}".encode()
        sent[key] = time.perf_counter()
        await producer.send(topic, b"x", key=key, partition=0)
        i += 1
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    done.set()
    await asyncio.to_thread(thread.join, 5)
    await producer.aclose()
    return [(received[k] - t) * 1000.0 for k, t in sent.items() if k in received]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--warmup-runs",
        type=int,
        default=None,
        help="runs done first, not measured (connections, caches); default: the measured "
        "number of runs, between 5 and 100",
    )
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--layout",
        choices=["engine", "separate"],
        default="engine",
        help="engine: every processor core in one process; separate: one process per processor",
    )
    parser.add_argument("--instances", type=int, default=1, help="instances of each processor process")
    parser.add_argument("--trace", action="store_true", help="tracing on: every process exports its spans over "
                        "OTLP/HTTP to a sink in this benchmark (off: the default, no spans made)")  # fmt: skip
    parser.add_argument("--trace-share", type=float, default=1.0, help="with --trace: the share of runs traced "
                        "(OTEL_TRACES_SAMPLER=traceidratio below 1; default every run)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.warmup_runs is None:
        args.warmup_runs = max(5, min(100, args.runs))
    return args


def sampling(share: float) -> None:
    """The share of runs traced, as the standard variables say it (inherited by every process)."""
    if share < 1.0:
        os.environ["OTEL_TRACES_SAMPLER"] = "traceidratio"
        os.environ["OTEL_TRACES_SAMPLER_ARG"] = str(share)
    else:
        os.environ.pop("OTEL_TRACES_SAMPLER", None)
        os.environ.pop("OTEL_TRACES_SAMPLER_ARG", None)


async def main() -> None:
    args = parse()
    if args.trace:
        sampling(args.trace_share)
    async with bench_settings("overhead") as (settings, kafka), traced(args.trace) as sink:
        result = await measure(settings, kafka, args, sink)
    print(json.dumps(result))


async def measure(settings: Settings, kafka: LocalKafka | None, args: argparse.Namespace, sink: Sink | None) -> dict[str, Any]:  # fmt: skip
    """One stack started on `settings`' broker, warmed up, measured and stopped. Tracing is on when
    `sink` is given and the environment names it (`bench.otlp_sink.traced`)."""
    os.environ[LAYOUT_ENV] = args.layout
    exported_before = (sink.bytes, sink.refused) if sink is not None else (0, 0)
    scen_dir = settings.home / "scenarios"
    write_scenarios(scen_dir, [overhead_scenario(args.steps - 1)])
    watcher = TerminalWatcher(settings)
    async with Deployment(settings, [scen_dir], wait_tools=("calculator",)) as d:
        assert d.procs is not None and d.model.proc is not None
        for instance in range(1, args.instances):
            for name in list({k.rsplit("-", 1)[0] for k in d.procs.procs}):
                d.procs.start(name, str(instance))
        pids = {k: p.pid for k, p in d.procs.procs.items()}
        pids["scripted-model"] = d.model.proc.pid
        broker_pid = kafka.running_pid() if kafka is not None else None
        if broker_pid is not None:
            pids["kafka-broker"] = broker_pid
        pids["bench-client"] = os.getpid()
        warm = set()
        for i in range(args.warmup_runs):
            warm.add(
                await d.client.request_run(
                    RunRequest(task=f"[scenario:overhead] warm-up {i}", tools=["calculator"], max_steps=args.steps + 2)
                )
            )
        await watcher.wait(warm, args.timeout)
        # What the warm-up leaves behind (its state changelog flush, the broker's segment and
        # compaction work) is not the measured runs' cost: let it settle first.
        await asyncio.sleep(3.0)
        stop, probing = asyncio.Event(), asyncio.Event()
        probe_topic = load_topics(settings.topic_prefix)["bench.probe"].name
        probe = asyncio.create_task(
            probe_rtt(settings.bootstrap_servers, settings.kafka_extra, probe_topic, probing, stop)
        )
        await asyncio.wait_for(probing.wait(), 60)
        pids.update(span_exporters(pids))
        meter = CpuMeter.begin(pids)
        t0 = time.monotonic()
        run_ids = set()
        for i in range(args.runs):
            run_ids.add(
                await d.client.request_run(
                    RunRequest(task=f"[scenario:overhead] run {i}", tools=["calculator"], max_steps=args.steps + 2)
                )
            )
        missing = await watcher.wait(run_ids, args.timeout)
        wall = time.monotonic() - t0
        cpu = meter.end()
        stop.set()
        rtts = await probe
    watcher.close()
    journal = await read_journal(settings)

    overheads: list[float] = []
    model_ms: list[float] = []
    completed = 0
    first_ts, last_ts = 10**15, 0
    for run_id in run_ids:
        entries = journal.get(run_id, [])
        if not entries:
            continue
        first_ts, last_ts = min(first_ts, entries[0].timestamp_ms), max(last_ts, entries[-1].timestamp_ms)
        completed += any(isinstance(e.event, RunCompleted) for e in entries)
        for overhead, latency in step_overheads(entries):
            overheads.append(overhead)
            model_ms.append(latency)
    # Where the slowest step waited: the widest gap between two consecutive events of a run.
    widest: tuple[float, str] = (0.0, "")
    for run_id in run_ids:
        entries = journal.get(run_id, [])
        for before, after in itertools.pairwise(entries):
            gap = after.timestamp_ms - before.timestamp_ms
            if gap > widest[0]:
                widest = (gap, f"{before.event.type_name} -> {after.event.type_name}")
    steps = len(overheads)
    span_s = max(1e-9, (last_ts - first_ts) / 1000.0)
    return {
        "runs": args.runs,
        "completed": completed,
        "lost": len(missing),
        "steps": steps,
        "step_overhead_ms_p50": round(percentile(overheads, 50), 2),
        "step_overhead_ms_p99": round(percentile(overheads, 99), 2),
        "kafka_rtt_ms_p50": round(percentile(rtts, 50), 2),
        "kafka_rtt_ms_p99": round(percentile(rtts, 99), 2),
        "model_http_ms_p50": round(percentile(model_ms, 50), 2),
        "steps_per_s": round(steps / span_s, 1),
        "wall_s": round(wall, 2),
        "cpu_ms_per_step": {k: round(v * 1000.0 / max(1, steps), 3) for k, v in sorted(cpu.items())},
        "cpu_ms_per_step_total": round(sum(cpu.values()) * 1000.0 / max(1, steps), 3),
        "cores": os.cpu_count(),
        "widest_gap_ms": widest[0],
        "widest_gap_between": widest[1],
        "layout": args.layout,
        "instances": args.instances,
        "tracing": sink is not None,
        "trace_share": args.trace_share if sink is not None else 0.0,
        "otlp_export_bytes": sink.bytes - exported_before[0] if sink is not None else 0,
        "otlp_exports_refused": sink.refused - exported_before[1] if sink is not None else 0,
    }


if __name__ == "__main__":
    asyncio.run(main())
