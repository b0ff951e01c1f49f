"""The timing model of one replica: admission, prefill and decode, as asyncio sleeps.

What it reproduces of a continuous-batching server (vLLM):
- at most `max_running` requests run at once; later ones wait in one FIFO queue;
- a request is admitted only when its whole KV reservation (prompt + output tokens) fits, evicting
  idle sessions but never a running one; until then it waits, and so does everyone behind it
  (strict FIFO, as vLLM's scheduler does not let later requests overtake a blocked head);
- prefill of the uncached prompt tokens is compute-bound, so prefills run one at a time (a FIFO
  lock), each costing uncached x prefill_s_per_token;
- decode is memory-bound and batched, so decodes overlap one another; each token is one engine step,
  the profile's ITL stretched by `decode_batch_slowdown` as the batch fills;
- prefill and decode share the one GPU (chunked prefill, vLLM's default scheduling): while a prefill
  is under way every step also carries a chunk of `prefill_chunk_tokens` prompt tokens, so each
  decoding request's step lasts ITL + chunk x prefill_s_per_token, and the prefill pays one ITL per
  chunk for the decodes riding along. A replica busy re-prefilling therefore slows every stream on
  it, as vLLM's tuning guide and Sarathi-Serve (OSDI '24) describe; `prefill_chunk_tokens=0` turns
  the interference off (the idealisation of an earlier emulator, kept to compare figures).
TTFT = queueing + waiting for the prefill lock + prefill + one decode step.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agentstream.doubles.replica_emulator.kvcache import CacheCounters, KvCache
from agentstream.doubles.replica_emulator.profile import ReplicaProfile
from agentstream.doubles.replica_emulator.stepclock import StepClock


class RequestTooLarge(ValueError):
    """The request's KV reservation exceeds the whole cache: it could never be admitted."""


@dataclass(frozen=True, slots=True)
class GenerationResult:
    cached_tokens: int
    prefill_tokens: int
    output_tokens: int
    ttft_s: float
    total_s: float
    queued_s: float


@dataclass(slots=True)
class _Ticket:
    session: str
    prompt_tokens: int
    reserve_tokens: int
    # Resolves to the cached prefix length once admitted.
    admitted: asyncio.Future[int]


class ReplicaEngine:
    def __init__(self, profile: ReplicaProfile, cache: KvCache | None = None) -> None:
        self.profile = profile
        self.cache = cache if cache is not None else KvCache(profile.kv_capacity_tokens)
        self._queue: deque[_Ticket] = deque()
        self._running = 0
        # asyncio.Lock wakes waiters in arrival order, which is what makes prefill FIFO.
        self._prefill = asyncio.Lock()
        self._prefilling = False
        self._decoding = 0
        self._clock = StepClock(self.step_s())
        self.completed = 0
        self.generated_tokens = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def counters(self) -> CacheCounters:
        return self.cache.counters

    def reset(self) -> None:
        self.cache.reset()
        self.completed = 0
        self.generated_tokens = 0

    def inter_token_s(self) -> float:
        """The current decode step time, from how full the batch is right now."""
        p = self.profile
        fill = (self._running - 1) / (p.max_running - 1) if p.max_running > 1 else 0.0
        return p.decode_s_per_token * (1 + p.decode_batch_slowdown * max(0.0, fill)) * p.time_scale

    def step_s(self) -> float:
        """How long a decoding request's step lasts now: the ITL, plus a prefill chunk while one runs."""
        p = self.profile
        chunk = p.prefill_chunk_tokens * p.prefill_s_per_token * p.time_scale if self._prefilling else 0.0
        return max(self.inter_token_s() + chunk, 1e-9)

    def prefill_s(self, tokens: int) -> float:
        """How long prefilling `tokens` takes: its compute, plus one ITL per chunk when decodes share the
        steps (a chunk is a whole step, decode tokens included)."""
        p = self.profile
        compute = tokens * p.prefill_s_per_token * p.time_scale
        if p.prefill_chunk_tokens <= 0 or self._decoding == 0 or tokens <= 0:
            return compute
        return compute + math.ceil(tokens / p.prefill_chunk_tokens) * self.inter_token_s()

    def _retime(self) -> None:
        self._clock.set_step_s(self.step_s())

    async def generate(
        self,
        session: str,
        prompt_tokens: int,
        output_tokens: int,
        on_first_token: Callable[[], None] | None = None,
    ) -> GenerationResult:
        """Emulates one request end to end; `on_first_token` is called when the first token would be
        out (streaming servers flush their first chunk then)."""
        if prompt_tokens < 1 or output_tokens < 1:
            raise ValueError("prompt_tokens and output_tokens must be at least 1")
        reserve = prompt_tokens + output_tokens
        if reserve > self.cache.capacity_tokens:
            raise RequestTooLarge(
                f"request needs {reserve} KV tokens but the replica holds only {self.cache.capacity_tokens}"
            )
        loop = asyncio.get_running_loop()
        start = loop.time()
        ticket = _Ticket(session, prompt_tokens, reserve, loop.create_future())
        self._queue.append(ticket)
        self._admit()
        try:
            cached = await ticket.admitted
        except asyncio.CancelledError:
            self._abandon(ticket)
            raise
        queued = loop.time() - start
        decoding = False
        try:
            prefill = prompt_tokens - cached
            async with self._prefill:
                await self._run_prefill(prefill)
            decoding = True
            self._decoding += 1
            await self._clock.wait_steps(1)
            ttft = loop.time() - start
            if on_first_token is not None:
                on_first_token()
            await self._clock.wait_steps(output_tokens - 1)
            total = loop.time() - start
        finally:
            self._decoding -= decoding
            self._running -= 1
            self._retime()
            # A cancelled request still leaves what it computed behind, as vLLM's prefix cache does.
            self.cache.release(session, reserve)
            self._admit()
        self.completed += 1
        self.generated_tokens += output_tokens
        return GenerationResult(cached, prefill, output_tokens, ttft, total, queued)

    async def _run_prefill(self, tokens: int) -> None:
        duration = self.prefill_s(tokens)
        self._prefilling = tokens > 0 and self.profile.prefill_chunk_tokens > 0
        self._retime()
        try:
            await asyncio.sleep(duration)
        finally:
            self._prefilling = False
            self._retime()

    def _admit(self) -> None:
        """Admits queued requests in order while a slot is free and the head's reservation fits."""
        while self._queue and self._running < self.profile.max_running:
            head = self._queue[0]
            if head.admitted.cancelled():
                # Its task was cancelled but has not run `_abandon` yet.
                self._queue.popleft()
                continue
            cached = self.cache.admit(head.session, head.prompt_tokens, head.reserve_tokens)
            if cached is None:
                return  # the head waits for running requests to free blocks; nobody overtakes it
            self._queue.popleft()
            self._running += 1
            self._retime()
            head.admitted.set_result(cached)

    def _abandon(self, ticket: _Ticket) -> None:
        if ticket in self._queue:
            self._queue.remove(ticket)
            self._admit()  # the abandoned head may have been blocking admissible requests
        elif ticket.admitted.done() and not ticket.admitted.cancelled():
            # Admitted in the same loop iteration as the cancellation: hand the slot back.
            self._running -= 1
            self._retime()
            self.cache.release(ticket.session, ticket.reserve_tokens)
            self._admit()
