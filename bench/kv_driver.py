"""The runs of `bench/kv_dispatch.py`: the bench plays orchestrator, model invoker and tools of every
run, talking to the dispatcher under test through Kafka and to the replica it picks over HTTP."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from agentstream import ids
from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.events import (
    LlmCallCompleted,
    LlmCallDispatched,
    LlmCallFailed,
    LlmCallRequested,
    RunCompleted,
    RunEvent,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.security.journal_trust import JournalSigner, stand_in_writer
from agentstream.topics import JOURNAL, load_topics
from bench.kv_fleet import journal_reader, log
from bench.kv_workload import RunSpec

TENANT = "bench"


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
        with journal_reader(self.settings, self.records.journal_topic, types) as read:
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
