"""History does not matter: recovery, a gateway restart and reading an old run cost what is live.

    .venv/bin/python bench/history.py --history-events 10000
    .venv/bin/python bench/history.py --history-events 1000000

1. One real template run (scripted model, calculator tool calls) is made by a real deployment.
2. The journal is filled with at least N events of finished runs: the template cloned under
   fresh run ids, re-encoded and signed as each event's real writer, through the real producer
   (bench/history_fill.py). The processors are stopped meanwhile, then started again: their first
   catch-up over the history, and the gateway's first start (which builds the run index), are set
   up, not measured (reported as `setup_*`).
3. With `--in-flight` runs going (each `--in-flight-steps` model calls of `--step-delay-ms` plus a
   tool call):
   (a) every processor is SIGKILLed, its store (settings.state_dir) wiped, and it is restarted:
       `processor_recovery_s` is until every processor reports `running` on processors.status
       (processors publish every 2 s, so the figure is at most that late);
   (b) the gateway is restarted: `gateway_ready_s` until /healthz answers (it serves only once its
       projection caught up), `gateway_rss_mb` its resident memory 5 s later;
   (c) `agentstream runs show <the oldest run>` is timed as a command (`runs_show_s`, process start
       included).
   Then every in-flight run must complete, with the same trajectory as every other.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from agentstream.client.journal import JournalEntry, RunRequest
from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.events import TERMINAL_TYPES, ProcessorStatus, RunEvent
from agentstream.kafka.auth import ADMIN, with_principal
from agentstream.kafka.consumer import consumer_config, fetch_batch
from agentstream.localkafka import free_port
from agentstream.stack import Deployment, ProcessorProcesses, child_env
from agentstream.topics import JOURNAL, STATUS, load_topics
from bench.common import bench_settings, comparable_trajectory
from bench.history_fill import capture_template, fill_journal
from bench.scenarios import write_scenarios


class Tail:
    """Follows a topic from its end in a thread, handing each record's decoded event to `seen`."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.events: list[tuple[int, int, object]] = []
        self._consumer = Consumer(
            consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "bench-watch"})
        )
        md = self._consumer.list_topics(topic, timeout=10)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in md.topics[topic].partitions])
        self._consumer.consume(1, 1.0)  # positions resolved: nothing after this is missed
        self._codec = AvroCodec()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in fetch_batch(self._consumer, 1000, 0.2):
                if msg.error() is not None:
                    continue
                try:
                    event = self._codec.decode(msg.value())
                except DecodeError:
                    continue
                self.events.append((int(msg.offset() or 0), msg.timestamp()[1], event))
        self._consumer.close()

    async def until(self, found: Callable[[object], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(found(event) for _o, _t, event in list(self.events)):
            if time.monotonic() > deadline:
                raise TimeoutError("not seen in time")
            await asyncio.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def scenarios(steps: int, delay_ms: int) -> list[dict[str, object]]:
    def turns(count: int, delay: int) -> list[dict[str, object]]:
        made: list[dict[str, object]] = [
            {"delay_ms": delay, "tool_calls": [{"name": "calculator", "arguments": {"expression": f"{s} * 7 + 1"}}]}
            for s in range(count)
        ]
        return [*made, {"text": f"done after {count} steps"}]

    return [{"name": "histtpl", "turns": turns(3, 0)}, {"name": "inflight", "turns": turns(steps, delay_ms)}]


async def wait_statuses(tail: Tail, names: set[str], since_ms: int, timeout_s: float) -> dict[str, float]:
    """Seconds from `since_ms` to each processor's first `running` status after it."""
    live: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(live) < len(names) and time.monotonic() < deadline:
        for _offset, _ts, status in list(tail.events):
            if (
                isinstance(status, ProcessorStatus) and status.ts_ms >= since_ms and status.state == "running"
                and status.processor in names and status.partitions and status.processor not in live
            ):  # fmt: skip
                live[status.processor] = (status.ts_ms - since_ms) / 1000.0
        await asyncio.sleep(0.05)
    return live


async def wait_healthy(url: str, timeout_s: float) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() - started < timeout_s:
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.02)
    raise TimeoutError(f"the gateway at {url} was not ready within {timeout_s}s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def gateway_pid(procs: ProcessorProcesses) -> int:
    return procs.procs["gateway-0"].pid


def log(text: str) -> None:
    print(f"history: {text}", file=sys.stderr, flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history-events", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--in-flight-steps", type=int, default=30)
    parser.add_argument("--step-delay-ms", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    async with bench_settings("history") as (settings, _kafka):
        scen_dir = settings.home / "scenarios"
        write_scenarios(scen_dir, scenarios(args.in_flight_steps, args.step_delay_ms))
        status_topic = load_topics(settings.topic_prefix)[STATUS].name
        async with Deployment(settings, [scen_dir], wait_tools=("calculator",)) as d:
            done = Tail(settings, load_topics(settings.topic_prefix)[JOURNAL].name)
            template_id = await d.client.request_run(
                RunRequest(task="[scenario:histtpl] template", tools=["calculator"], max_steps=10)
            )
            await done.until(lambda e: isinstance(e, RunEvent) and e.run_id == template_id and e.type_name in TERMINAL_TYPES,
                             args.timeout)  # fmt: skip
            done.close()
        template = await capture_template(settings, template_id)
        log(f"template run {template_id}: {len(template)} events; filling the journal")
        old_runs, fill_s = await asyncio.to_thread(
            fill_journal, settings, template, args.history_events, uuid.uuid4().hex
        )
        history_events = len(old_runs) * len(template) + len(template)
        log(f"filled {history_events} events ({len(old_runs)} runs) in {fill_s:.1f}s")

        async with Deployment(settings, [scen_dir], wait_tools=("calculator",)) as d:
            procs = d.procs
            assert procs is not None
            names = {key.rsplit("-", 1)[0] for key in procs.procs}
            statuses = Tail(settings, status_topic)
            t = time.monotonic()
            caught_up = await wait_statuses(statuses, names, 0, args.timeout)
            setup_processors_s = time.monotonic() - t
            log(f"processors caught up with the history ({sorted(caught_up)}) in {setup_processors_s:.1f}s")
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            procs.start_gateway(port=port)
            setup_gateway_s = await wait_healthy(url, args.timeout)
            await asyncio.sleep(8)  # its checkpoint and index entries are written in the background
            log(f"gateway's first start (reads everything, builds the index): {setup_gateway_s:.1f}s")

            journal = Tail(settings, load_topics(settings.topic_prefix)[JOURNAL].name)
            in_flight = {
                await d.client.request_run(
                    RunRequest(task=f"[scenario:inflight] run {i}", tools=["calculator"], max_steps=args.in_flight_steps + 5)
                )
                for i in range(args.in_flight)
            }  # fmt: skip
            await asyncio.sleep(3)

            # (a) every processor loses its store and restarts
            for key in [k for k in procs.procs if not k.startswith("gateway")]:
                procs.kill(key)
            shutil.rmtree(settings.state_dir, ignore_errors=True)
            restart_ms = int(time.time() * 1000)
            for key in [k for k in procs.procs if not k.startswith("gateway")]:
                name, instance = key.rsplit("-", 1)
                procs.start(name, instance)
            # Waited out however long it takes, so (b) and (c) do not share the CPU with a replay.
            recovery = await wait_statuses(statuses, names, restart_ms, args.timeout)
            processor_recovery_s = max(recovery.values()) if len(recovery) == len(names) else float("nan")
            log(f"(a) processors live again: {recovery}")

            # (b) the gateway restarts
            procs.kill("gateway-0", signal.SIGTERM)
            procs.start_gateway(port=port)
            gateway_ready_s = await wait_healthy(url, 120)
            await asyncio.sleep(5)
            gateway_rss = rss_mb(gateway_pid(procs))
            log(f"(b) gateway ready in {gateway_ready_s:.2f}s, RSS {gateway_rss:.0f} MB")

            # (c) one old run, as an operator reads it
            env = with_principal(child_env(settings, d.model_url), ADMIN)
            t = time.monotonic()
            shown = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "agentstream.cli.main", "runs", "show", old_runs[0]],
                env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            runs_show_s = time.monotonic() - t
            if shown.returncode != 0:
                raise RuntimeError(f"runs show failed: {shown.stderr[-2000:]}")
            log(f"(c) runs show {old_runs[0]}: {runs_show_s:.2f}s, {len(shown.stdout.splitlines())} lines")

            deadline = time.monotonic() + args.timeout
            ended: set[str] = set()
            while time.monotonic() < deadline and ended < in_flight:
                ended = {e.run_id for _o, _t, e in list(journal.events)
                         if isinstance(e, RunEvent) and e.type_name == "RunCompleted" and e.run_id in in_flight}  # fmt: skip
                await asyncio.sleep(0.25)
            journal.close()
            statuses.close()
        trajectories: dict[str, list[JournalEntry]] = {run_id: [] for run_id in in_flight}
        seen: set[str] = set()
        for offset, ts, event in journal.events:
            if isinstance(event, RunEvent) and event.run_id in trajectories and event.event_id not in seen:
                seen.add(event.event_id)
                trajectories[event.run_id].append(JournalEntry(event, offset, ts))
        shapes = [comparable_trajectory(entries, run_id) for run_id, entries in trajectories.items()]
        common = max(shapes, key=shapes.count) if shapes else []

    print(json.dumps({
        "history_events": history_events,
        "history_runs": len(old_runs) + 1,
        "processor_recovery_s": round(processor_recovery_s, 2),
        "gateway_ready_s": round(gateway_ready_s, 2),
        "gateway_rss_mb": round(gateway_rss, 1),
        "runs_show_s": round(runs_show_s, 2),
        "in_flight": len(in_flight),
        "in_flight_completed": len(ended),
        "trajectories_differing": sum(1 for s in shapes if s != common),
        "fill_s": round(fill_s, 1),
        "fill_events_per_s": round(history_events / max(fill_s, 1e-9)),
        "setup_processors_catch_up_s": round(setup_processors_s, 1),
        "setup_gateway_first_start_s": round(setup_gateway_s, 1),
        "processor_recovery_s_each": {k: round(v, 2) for k, v in sorted(recovery.items())},
        "cores": os.cpu_count(),
    }))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
