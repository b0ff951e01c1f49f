"""KV-affinity dispatch: five routing policies over emulated model replicas, driven through Kafka.

    .venv/bin/python bench/kv_dispatch.py --replicas 4 --runs 200 --seed 1

Starts a local Kafka, N replica emulators (Llama-3.1-8B on H100 timing, `--kv-tokens` of KV each)
and, per policy, the real dispatcher process (`processors/kv_dispatcher/app.py` under
`agentstream.process.serve`, its own topic prefix). The bench plays orchestrator, model invoker and
tools: per run (10-30 turns; context growing from ~2k to ~30k tokens; 100-300 output tokens a turn;
tool gaps 0.5-5 s, log-uniform) it journals `LlmCallRequested`, waits for the dispatcher's
`LlmCallDispatched`, sends the turn to that replica (session = run id), journals `LlmCallCompleted`,
`ToolCallRequested`, sleeps the tool gap, `ToolCallCompleted`, and at the end `RunCompleted`. Runs
arrive as a Poisson process at the rate that offers `--kv-load` x the pool's KV (`bench/kv_workload.py`),
so every pool size is under the same pressure. Before the `--runs` measured runs, one isolated run
duration of warm-up arrivals (`--warmup-spans`, 1; `warmup_runs` in the JSON) fills the pool: they
are played like the others but not counted, so the measured runs find the pool as loaded as it
stays whatever their number (`--warmup-spans 0`: a cold start, where too few runs for that rate to
reach steady state is reported in `steady_state`, `warnings`, `goals.meaningful`). The same workload (seeded) runs
under every policy. Every emulated duration is multiplied by the policy's time scale (`time_scales`;
by default agentstream and the oracle share the least compression that fits `--wall-budget`, and
the baselines (round robin, least loaded, session hash), which take several times longer for the
same turns, are compressed further, to no higher a real turn rate; `--time-scale` sets one for
all); reported times are divided by it (emulated s).

Every figure below is over the measured runs only, but the KV demand, which is the pool's.

  mean_jct_s                 run arrival -> last turn done
  p99_ttft_s                 LlmCallRequested journaled -> first token (dispatch wait included)
  mean_queue_wait_s          time queued calls spent in the dispatcher's admission queue

Only time in the admission queue waits for emulated events, so only it is emulated time; a call's
trip through Kafka and the dispatcher is real latency, alike for every policy, counted at its real
length (queue time = journaled -> decided, by the dispatcher's stamp, less that of calls that did
not wait). The pin TTL and the longest queue wait are scaled. `loop_lag_ms_p50_p99`: how late the bench's event loop wakes
(real ms, x 1/scale in emulated terms), the CPU contention behind the figures.

  cache_hit_rate             cached prompt tokens / prompt tokens
  recomputed_prefill_tokens  per turn: uncached tokens minus the tokens new since the previous turn
  peak_kv_demand_tokens      max over time of the summed context of every live run (mean_: its mean)

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agentstream import ids
from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.doubles.replica_emulator.profile import DEFAULT_8B_H100
from agentstream.events import (
    LlmCallCompleted,
    LlmCallDispatched,
    LlmCallFailed,
    LlmCallRequested,
    ProcessorStatus,
    RunCompleted,
    RunEvent,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.kafka.auth import CREDENTIALS_DIR_ENV, with_principal
from agentstream.kafka.consumer import consumer_config, fetch_batch
from agentstream.kafka.journal import TYPE_HEADER, RecordFactory, header_pairs
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.security.journal_trust import JournalSigner, stand_in_writer
from agentstream.stack import ensure_topics
from agentstream.topics import JOURNAL, STATUS, load_topics
from bench.common import bench_settings, percentile
from bench.kv_workload import (
    DEFAULT_KV_LOAD,
    POLICY_OVERHEAD_S,
    WARMUP_SPANS,
    RunSpec,
    Workload,
    auto_time_scales,
    estimate_makespans,
    goals,
    make_workload,
    workload_warnings,
)

POLICIES = ["round_robin", "least_loaded", "session_hash", "agentstream", "oracle"]
ROOT = Path(__file__).resolve().parents[1]
TENANT = "bench"


def log(msg: str) -> None:
    print(f"[kv-dispatch {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes --------------------------------------------------------------------------------------


@dataclass
class Fleet:
    """The replica emulators and the dispatcher: child processes, every one killed on the way out."""

    count: int
    kv_tokens: int
    log_dir: Path
    max_queue_wait_s: float = 0.0  # emulated; 0: a new session waits until there is room
    prefill_chunk_tokens: int = DEFAULT_8B_H100.prefill_chunk_tokens  # 0: prefill never slows decodes
    emulators: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    infinite: bool = False
    time_scale: float = 0.0  # the emulators' (each policy may run at its own)
    dispatcher: subprocess.Popen[bytes] | None = None

    def start_emulators(self, infinite: bool, time_scale: float) -> None:
        self.stop_emulators()
        self.infinite, self.time_scale = infinite, time_scale
        for i in range(self.count):  # all started before any is waited for: they import in parallel
            cmd = [sys.executable, "-m", "agentstream.doubles.replica_emulator", "--port", "0", "--replica-id", f"r{i}",
                   "--kv-tokens", str(self.kv_tokens), "--time-scale", str(time_scale),
                   "--prefill-chunk-tokens", str(self.prefill_chunk_tokens)]  # fmt: skip
            proc = subprocess.Popen([*cmd, *(["--infinite-kv"] if infinite else [])], stdout=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)  # fmt: skip
            self.emulators.append(proc)
        for i, proc in enumerate(self.emulators):
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().strip()
            if not line.startswith("ready "):
                raise RuntimeError(f"emulator r{i} did not start: {line!r}")
            self.urls.append(line.split(" ", 1)[1])

    def start_dispatcher(self, settings: Settings, policy: str) -> None:
        env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
                   AGENTSTREAM_KV_PIN_TTL_S=str(30 * self.time_scale),
                   AGENTSTREAM_KV_MAX_QUEUE_WAIT_S=str(self.max_queue_wait_s * self.time_scale),
                   AGENTSTREAM_TOPIC_PREFIX=settings.topic_prefix, AGENTSTREAM_HOME=str(settings.home),
                   AGENTSTREAM_KV_POLICY=policy, AGENTSTREAM_LOG_LEVEL=os.environ.get("AGENTSTREAM_LOG_LEVEL", "WARNING"),
                   AGENTSTREAM_REPLICAS=",".join(f"r{i}={u}" for i, u in enumerate(self.urls)))  # fmt: skip
        if settings.kafka_credentials_dir is not None:  # the dispatcher's own principal, not the driver's
            env = with_principal({**env, CREDENTIALS_DIR_ENV: str(settings.kafka_credentials_dir)}, "kv-dispatcher")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"kv-dispatcher-{policy}.log", "ab") as out:
            self.dispatcher = subprocess.Popen(
                [sys.executable, "-m", "agentstream.processors.kv_dispatcher.app"], env=env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True,
            )  # fmt: skip

    def stop_dispatcher(self) -> None:
        if self.dispatcher is not None:
            _stop(self.dispatcher)
            self.dispatcher = None

    def stop_emulators(self) -> None:
        for proc in self.emulators:
            _stop(proc)
        self.emulators, self.urls = [], []

    def close(self) -> None:
        self.stop_dispatcher()
        self.stop_emulators()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_dispatcher_ready(settings: Settings, partitions: int, fleet: Fleet, timeout_s: float = 90) -> None:
    """Until the dispatcher's status says it owns every journal partition and is live."""
    topic = load_topics(settings.topic_prefix)[STATUS].name
    deadline = time.monotonic() + timeout_s
    with _reader(settings, topic, {ProcessorStatus.type_name}) as events:
        while time.monotonic() < deadline:
            if fleet.dispatcher is None or fleet.dispatcher.poll() is not None:
                raise RuntimeError("the dispatcher process exited; see its log under the bench home")
            for event in await asyncio.to_thread(events, 0.5):
                mine = isinstance(event, ProcessorStatus) and event.processor == "kv-dispatcher"
                if mine and len(event.partitions) == partitions and event.state == "running":
                    return
    raise TimeoutError("the dispatcher never became ready")


@contextlib.contextmanager
def _reader(settings: Settings, topic: str, types: set[str]) -> Iterator[Callable[[float], list[Any]]]:
    consumer = Consumer(consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "kv-bench"}))
    md = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    codec = AvroCodec()

    def read(timeout_s: float) -> list[Any]:
        out = []
        for msg in fetch_batch(consumer, 1000, timeout_s):  # returns as soon as anything arrived
            if msg.error() is None and dict(header_pairs(msg)).get(TYPE_HEADER, b"").decode() in types:
                out.append(codec.decode(msg.value()))
        return out

    try:
        yield read
    finally:
        consumer.close()


# -- driving one policy -----------------------------------------------------------------------------


class Http:
    """A minimal HTTP/1.1 keep-alive client for the chat requests. httpx's connection pool spends
    O(open connections) per request (and an import attempt per request checking for trio): at a few
    hundred concurrent requests it took more CPU than everything it measured, and its lag showed up
    stretched 20x by the time scale."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}

    async def post(self, url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        u = urlsplit(url)
        key = (u.hostname or "127.0.0.1", u.port or 80)
        head = (f"POST {u.path} HTTP/1.1\r\nhost: {u.netloc}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n").encode()  # fmt: skip
        while True:
            pool = self._idle.setdefault(key, [])
            reused = bool(pool)
            reader, writer = pool.pop() if reused else await asyncio.open_connection(*key)
            try:
                writer.write(head + body)
                await writer.drain()
                status = int((await reader.readuntil(b"\r\n")).split()[1])
                headers: dict[str, str] = {}
                while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                data = await reader.readexactly(int(headers.get("content-length", "0")))
            except (OSError, asyncio.IncompleteReadError, IndexError, ValueError):
                writer.close()
                if reused:  # the server closed an idle keep-alive connection: the request never ran
                    continue
                raise
            if headers.get("connection", "").lower() == "close":
                writer.close()
            else:
                pool.append((reader, writer))
            return status, headers, data

    def close(self) -> None:
        for pool in self._idle.values():
            for _reader, writer in pool:
                writer.close()


@dataclass
class Tally:
    jcts: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    rtts_ms: list[float] = field(default_factory=list)  # dispatch round trips of calls not queued (real)
    forward_s: list[float] = field(default_factory=list)  # journaled -> decided, calls not queued (real)
    queue_s: list[float] = field(default_factory=list)  # admission-queue time of queued calls (emulated)
    lag_ms: list[float] = field(default_factory=list)  # the bench's event-loop lag, sampled (real)
    prompt: int = 0
    cached: int = 0
    recomputed: int = 0
    queued: int = 0
    rejected: int = 0
    failed_runs: int = 0
    live: dict[str, int] = field(default_factory=dict)  # run -> context it holds now
    demand: int = 0
    peak_demand: int = 0
    # The integral of demand over the steady window (real time: after the first run duration, until
    # the last arrival), for its time-weighted mean without the fill and the drain.
    window: tuple[float, float] = (0.0, 0.0)
    demand_area: float = 0.0
    demand_since: float = 0.0

    def hold(self, run_id: str, tokens: int, now: float) -> None:
        self._account(now)
        self.demand += tokens - self.live.get(run_id, 0)
        self.live[run_id] = tokens
        self.peak_demand = max(self.peak_demand, self.demand)

    def drop(self, run_id: str, now: float) -> None:
        self._account(now)
        self.demand -= self.live.pop(run_id, 0)

    def _account(self, now: float) -> None:
        start, end = self.window
        self.demand_area += self.demand * max(0.0, min(now, end) - max(self.demand_since, start))
        self.demand_since = now

    @property
    def mean_demand(self) -> float:
        return self.demand_area / max(1e-9, self.window[1] - self.window[0])

    def typical_forward_s(self) -> float:
        """The usual journaled -> decided time of a call that did not wait: Kafka delivery and the
        dispatcher's own processing, what every policy's calls pay."""
        return statistics.median(self.forward_s[-200:]) if self.forward_s else 0.0


class Driver:
    """The orchestrator, model invoker and tools of every run, talking to the dispatcher via Kafka."""

    def __init__(self, settings: Settings, partitions: int, policy: str, scale: float) -> None:
        self.settings, self.policy, self.scale = settings, policy, scale
        # The driver stands in for the orchestrator and the model invoker: it signs as they would.
        signer = JournalSigner("admin", component_keyring(settings, "admin"))
        self.records = RecordFactory(AvroCodec(), load_topics(settings.topic_prefix)[JOURNAL].name, partitions, signer)
        self.producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
        self.http = Http()
        self.waiters: dict[str, asyncio.Future[RunEvent]] = {}
        self.early: dict[str, RunEvent] = {}
        self.sent: list[asyncio.Future[Any]] = []
        self.tally = Tally()
        # Warm-up runs' figures land here and are dropped; the pool's KV demand and the usual
        # dispatch trip stay on `tally` for every run.
        self.warmup_tally = Tally()
        self.text = "abcd" * 40_000  # 4 characters a token: the emulator counts prompts as chars / 4

    def send(self, event: RunEvent) -> None:
        # Not awaited: one producer keeps a partition's order, so a run's events arrive in sequence.
        r = self.records.journal(event, as_writer=stand_in_writer(event.type_name))
        self.sent.append(self.producer.send(r.topic, r.value, key=r.key, partition=r.partition, headers=r.headers))

    def _resolve(self, event: RunEvent) -> None:
        call_id = event.call_id if isinstance(event, LlmCallDispatched | LlmCallFailed) else ""
        waiter = self.waiters.pop(call_id, None)
        if waiter is None:
            self.early.setdefault(call_id, event)
        elif not waiter.done():
            waiter.set_result(event)

    def _listen(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        types = {LlmCallDispatched.type_name, LlmCallFailed.type_name}
        with _reader(self.settings, self.records.journal_topic, types) as read:
            while not stop.is_set():
                for event in read(0.05):
                    loop.call_soon_threadsafe(self._resolve, event)

    async def run_all(self, specs: list[RunSpec], steady_from_s: float) -> float:
        loop, stop = asyncio.get_running_loop(), threading.Event()
        listener = threading.Thread(target=self._listen, args=(loop, stop), daemon=True)
        listener.start()
        lag = asyncio.create_task(self._sample_lag())
        try:
            t0 = loop.time()
            span = specs[-1].arrival_s if specs else 0.0
            self.tally.window = (t0 + min(steady_from_s, span / 2) * self.scale, t0 + span * self.scale)
            await asyncio.gather(*(self._run(spec, t0) for spec in specs))
            makespan = (loop.time() - t0) / self.scale
            await asyncio.gather(*self.sent)
            return makespan
        finally:
            lag.cancel()
            stop.set()
            await asyncio.to_thread(listener.join)
            self.http.close()
            await self.producer.aclose()

    async def _sample_lag(self) -> None:
        """How late a 10 ms sleep wakes up: the CPU lag every emulated duration here suffers, which
        the time scale stretches by 1/scale."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.tally.lag_ms.append((loop.time() - before - 0.01) * 1000)

    async def _dispatch(self, request: LlmCallRequested) -> RunEvent:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[RunEvent] = loop.create_future()
        self.waiters[request.call_id] = waiter
        self.send(request)
        if request.call_id in self.early:
            self._resolve(self.early.pop(request.call_id))
        return await waiter

    async def _run(self, spec: RunSpec, t0: float) -> None:
        loop, scale, pool = asyncio.get_running_loop(), self.scale, self.tally
        t = pool if spec.measured else self.warmup_tally
        await asyncio.sleep(max(0.0, t0 + spec.arrival_s * scale - loop.time()))
        run_id, start, held = f"{self.policy}-{spec.index:04d}", loop.time(), 0
        unscaled = 0.0  # real seconds of platform round trips in this run
        for step, turn in enumerate(spec.turns, start=1):
            call_id = ids.llm_call_id(run_id, step)
            pool.hold(run_id, turn.prompt_tokens + turn.output_tokens, loop.time())
            stub = orjson.dumps([{"role": "user", "content": f"turn {i}"} for i in range(step)]).decode()
            asked, sent_wall = loop.time(), time.time()
            answer = await self._dispatch(LlmCallRequested(ids.requested_event_id(call_id), run_id, TENANT, step,
                                                           call_id, "emulated-8b", stub, "[]", turn.output_tokens))  # fmt: skip
            waited = loop.time() - asked
            if not isinstance(answer, LlmCallDispatched):
                pool.rejected += 1
                pool.failed_runs += 1
                break
            # Only the time a call spent in the admission queue waited for emulated events (sessions
            # ending): that part is emulated time. Its trip through Kafka and the dispatcher is real
            # platform latency that every policy's calls pay alike, so it counts at its real length.
            # The dispatcher stamps its decision (same host, same clock): decided - journaled is that
            # trip plus the queue, and the usual trip of a call that did not wait is subtracted.
            forward = answer.decided_ms / 1000 - sent_wall
            queued = "queued" in answer.reason
            t.queued += queued
            in_queue = max(0.0, min(waited, forward - pool.typical_forward_s())) if queued else 0.0
            if not queued:
                t.rtts_ms.append(waited * 1000)
                pool.forward_s.append(max(0.0, forward))
            else:
                t.queue_s.append(in_queue / scale)
            unscaled += waited - in_queue
            body = {"model": "emulated-8b", "max_tokens": turn.output_tokens, "user": run_id,
                    "messages": [{"role": "user", "content": self.text[: 4 * turn.prompt_tokens]}]}  # fmt: skip
            try:
                status, headers, data = await self.http.post(f"{answer.url}/v1/chat/completions", orjson.dumps(body))
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status, headers, data = 0, {}, repr(exc).encode()
            if status != 200:  # counted, not fatal: the run ends here and the others go on
                log(f"{call_id}: replica {answer.replica} answered {status}: {data[:200]!r}")
                pool.failed_runs += 1
                break
            usage = orjson.loads(data)["usage"]
            cached = int(usage["prompt_tokens_details"]["cached_tokens"])
            new = turn.prompt_tokens - held  # tokens this turn adds to what the last one left
            t.prompt += turn.prompt_tokens
            t.cached += cached
            t.recomputed += max(0, turn.prompt_tokens - cached - new)
            wait = (waited - in_queue) + in_queue / scale
            t.waits.append(wait)
            t.ttfts.append(wait + float(headers["x-emulator-ttft-ms"]) / 1000 / scale)
            held = turn.prompt_tokens + turn.output_tokens
            self.send(LlmCallCompleted(ids.completed_event_id(call_id), run_id, TENANT, step, call_id, "emulator",
                                       "emulated-8b", "", "[]", "length", turn.prompt_tokens, turn.output_tokens,
                                       cached, (loop.time() - asked) * 1000, 1))  # fmt: skip
            if step == len(spec.turns):
                t.jcts.append((loop.time() - start - unscaled) / scale + unscaled)
                break
            tool = ids.tool_call_id(run_id, step, 0)
            self.send(ToolCallRequested(ids.requested_event_id(tool), run_id, TENANT, step, tool, f"tc{step}",
                                        "bench_tool", "{}", tool, 600_000))  # fmt: skip
            await asyncio.sleep(turn.tool_gap_s * scale)
            self.send(ToolCallCompleted(ids.completed_event_id(tool), run_id, TENANT, step, tool, "bench_tool", tool,
                                        "ok", False, turn.tool_gap_s * 1000))  # fmt: skip
        self.send(RunCompleted(ids.terminal_id(run_id), run_id, TENANT, len(spec.turns), "done", "completed"))
        pool.drop(run_id, loop.time())


async def emulator_counters(urls: list[str]) -> dict[str, int]:
    total: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls:
            for key, value in (await http.get(f"{url}/_emulator/stats")).json()["counters"].items():
                total[key] = total.get(key, 0) + int(value)
    return total


async def run_policy(base: Settings, fleet: Fleet, policy: str, w: Workload, scale: float) -> dict[str, Any]:
    settings = dataclasses.replace(base, topic_prefix=f"{base.topic_prefix}{policy.replace('_', '')}",
                                   home=base.home / policy)  # fmt: skip
    settings.home.mkdir(parents=True, exist_ok=True)
    await ensure_topics(settings)
    partitions = load_topics(settings.topic_prefix)[JOURNAL].partitions
    began = time.monotonic()
    if not fleet.urls or fleet.infinite != (policy == "oracle") or fleet.time_scale != scale:
        await asyncio.to_thread(fleet.start_emulators, policy == "oracle", scale)
    else:
        async with httpx.AsyncClient(timeout=10) as http:
            for url in fleet.urls:
                (await http.post(f"{url}/_emulator/reset")).raise_for_status()
    fleet.start_dispatcher(settings, policy)
    try:
        await wait_dispatcher_ready(settings, partitions, fleet)
        driver = Driver(settings, partitions, policy, scale)
        makespan = await driver.run_all(w.specs, w.measured_from_s or w.run_s)
    finally:
        await asyncio.to_thread(fleet.stop_dispatcher)
    t, counters = driver.tally, await emulator_counters(fleet.urls)
    return {
        "mean_jct_s": round(statistics.mean(t.jcts), 2) if t.jcts else None,
        "p50_jct_s": round(percentile(t.jcts, 50), 2),
        "p99_ttft_s": round(percentile(t.ttfts, 99), 3),
        "mean_ttft_s": round(statistics.mean(t.ttfts), 3),
        "cache_hit_rate": round(t.cached / max(1, t.prompt), 4),
        "recomputed_prefill_tokens": t.recomputed,
        "queued": t.queued,
        "rejected": t.rejected,
        "failed_runs": t.failed_runs,
        "mean_dispatch_wait_s": round(statistics.mean(t.waits), 3),
        "mean_queue_wait_s": round(statistics.mean(t.queue_s), 2) if t.queue_s else 0.0,
        "dispatch_round_trip_ms_p50": round(percentile(t.rtts_ms, 50), 1) if t.rtts_ms else None,
        "peak_kv_demand_tokens": t.peak_demand,
        "mean_kv_demand_tokens": round(t.mean_demand),
        "loop_lag_ms_p50_p99": [round(percentile(t.lag_ms, 50), 1), round(percentile(t.lag_ms, 99), 1)],
        "makespan_s": round(makespan, 1),
        "replica_evictions": counters.get("evictions", 0),
        "time_scale": scale,
        "wall_s": round(time.monotonic() - began, 1),
    }


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked before any process starts or event loop runs (a usage error exits 2
    with its message alone)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--runs", type=int, default=200, help="measured runs (after the warm-up)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-scale", type=float, default=None,
                        help="real seconds per emulated second (default: chosen to fit --wall-budget)")  # fmt: skip
    parser.add_argument("--wall-budget", type=float, default=230, help="wall seconds for all policies (goal: 300)")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--max-queue-wait-s", type=float, default=0.0,
                        help="emulated seconds a new session waits for KV before going over the estimate (0: no limit)")  # fmt: skip
    parser.add_argument("--kv-tokens", type=int, default=DEFAULT_8B_H100.kv_capacity_tokens,
                        help="KV capacity of each replica in tokens (default: the 8B-on-H100 profile's)")  # fmt: skip
    parser.add_argument("--prefill-chunk-tokens", type=int, default=DEFAULT_8B_H100.prefill_chunk_tokens,
                        help="the emulators' prompt tokens per step beside decodes (0: prefill never slows decodes)")  # fmt: skip
    parser.add_argument("--kv-load", type=float, default=DEFAULT_KV_LOAD,
                        help="offered KV demand / the pool's KV capacity, which sets the arrival rate")  # fmt: skip
    parser.add_argument("--warmup-spans", type=float, default=WARMUP_SPANS,
                        help="isolated run durations of unmeasured arrivals first, filling the pool (0: cold start)")  # fmt: skip
    parser.add_argument("--arrival-rate", type=float, default=None,
                        help="runs per emulated second per replica (overrides --kv-load)")  # fmt: skip
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if unknown := sorted(set(policies) - set(POLICIES)):
        parser.error(f"unknown policies {unknown}")
    if args.runs < 1 or args.replicas < 1:
        parser.error("--runs and --replicas must be at least 1")
    if args.warmup_spans < 0:
        parser.error("--warmup-spans must not be negative (0 starts cold)")
    try:  # the emulators' own rule for their profile, told here before any of them starts
        DEFAULT_8B_H100.with_changes(prefill_chunk_tokens=args.prefill_chunk_tokens)
    except ValueError as exc:
        parser.error(f"--prefill-chunk-tokens: {exc}")
    if args.time_scale is not None and args.time_scale <= 0:
        parser.error(f"--time-scale must be positive (real seconds per emulated second), not {args.time_scale}")
    args.policies = policies
    return args


async def main(args: argparse.Namespace) -> None:
    policies: list[str] = args.policies
    capacity = args.kv_tokens * args.replicas
    rate = args.arrival_rate * args.replicas if args.arrival_rate else None
    w = make_workload(args.runs, args.seed, capacity, args.kv_load, rate, args.warmup_spans)
    turns = [t for s in w.specs for t in s.turns]
    estimates = estimate_makespans(w, args.replicas, policies)
    if args.time_scale:
        scales = dict.fromkeys(policies, args.time_scale)
    else:
        scales = auto_time_scales(estimates, len(turns), args.wall_budget, POLICY_OVERHEAD_S)
    expected_wall = sum(estimates[p] * scales[p] for p in policies) + POLICY_OVERHEAD_S * len(policies)
    if expected_wall > args.wall_budget:
        log(
            f"expected wall time ~{expected_wall:.0f} s, over the {args.wall_budget:.0f} s budget at time scales {scales}"
        )
    warnings = workload_warnings(w, args.replicas)
    log(f"{args.runs} runs after {w.warmup_runs} warm-up runs, {len(turns)} turns, {args.replicas} replicas x {args.kv_tokens} KV tokens, "
        f"{w.rate_per_s:.3f} runs/s (KV load {w.kv_load:.2f}), time scales {scales}"
        f"{'' if args.time_scale else ' (auto)'}")  # fmt: skip
    for warning in warnings:
        log(f"warning: {warning}")
    began = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    async with bench_settings("kvdispatch") as (settings, _kafka):
        fleet = Fleet(args.replicas, args.kv_tokens, settings.home / "logs", args.max_queue_wait_s,
                      args.prefill_chunk_tokens)  # fmt: skip
        try:
            for policy in policies:
                log(f"{policy}: running")
                results[policy] = await run_policy(settings, fleet, policy, w, scales[policy])
                log(f"{policy}: {json.dumps(results[policy])}")
        finally:
            await asyncio.to_thread(fleet.close)
    # The demand the workload makes when nothing holds it back: the oracle run's, else the largest.
    unheld = results.get("oracle") or max(results.values(), key=lambda r: r["peak_kv_demand_tokens"], default={})
    peak, mean = unheld.get("peak_kv_demand_tokens", 0), unheld.get("mean_kv_demand_tokens", 0)
    workload = {
        "arrival_rate_per_s": round(w.rate_per_s, 3),
        "offered_kv_load": round(w.kv_load, 3),
        "runs_per_replica": round(args.runs / args.replicas, 1),
        "warmup_runs": w.warmup_runs,
        "measured_from_s": round(w.measured_from_s, 1),
        "isolated_run_s": round(w.run_s, 1),
        "arrivals_span_s": round(w.span_s, 1),
        "arrivals_span_in_run_durations": round(w.span_s / w.run_s, 2),
        "steady_state": not warnings,
        "turns_total": len(turns),
        "turns_per_run": [10, 30],
        "context_tokens": [min(t.prompt_tokens for t in turns), max(t.prompt_tokens for t in turns)],
        "output_tokens": [100, 300],
        "tool_gap_s": [0.5, 5.0],
        "peak_kv_demand_tokens": peak,
        "mean_kv_demand_tokens": mean,
        "kv_capacity_total_tokens": capacity,
        "peak_kv_demand_vs_capacity": round(peak / capacity, 3),
        "mean_kv_demand_vs_capacity": round(mean / capacity, 3),
    }
    out = {
        "replicas": args.replicas, "runs": args.runs, "warmup_runs": w.warmup_runs, "warmup_spans": args.warmup_spans,
        "seed": args.seed, "time_scales": scales,
        "time_scale_auto": not args.time_scale, "kv_tokens_per_replica": args.kv_tokens,
        "prefill_chunk_tokens": args.prefill_chunk_tokens,
        "wall_s": round(time.monotonic() - began, 1),
        "estimated_makespan_s": {p: round(v) for p, v in estimates.items()}, "expected_wall_s": round(expected_wall),
        "workload": workload, "policies": results,
        "goals": goals(results, peak > capacity, not warnings), "warnings": warnings,
    }  # fmt: skip
    print(json.dumps(out))


def _run() -> None:
    args = parse_args()
    loop = asyncio.new_event_loop()
    task = loop.create_task(main(args))
    # SIGTERM cancels the bench like Ctrl-C does, so every child process is stopped on the way out.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    finally:
        loop.close()


if __name__ == "__main__":
    _run()
