"""The model router: tiers of candidate providers, tried in order, each behind a circuit breaker,
a bulkhead and a per-attempt deadline. The route table and its file format are in `routes.py`
(env `AGENTSTREAM_MODEL_ROUTES`).

For one call the router walks the tier's candidates (a replica pinned by the KV dispatcher first):

- a candidate whose breaker is open is skipped without being called ("circuit open: <name>");
- one whose bulkhead is full is skipped when another candidate follows ("bulkhead full: <name>"),
  and waited for only when nothing else could take the call;
- retryable errors (429, 5xx, timeouts, connection errors) are retried on the same provider with
  the `RetryPolicy` backoff, up to its `max_attempts`; then the next candidate is tried
  ("fallback after <error_type>: <name>");
- a terminal (non-retryable) error ends the call at once: a 400 would be a 400 anywhere.

Every attempt journals its decision as an `LlmCallRouted` (id `<call_id>/routed/aNN`, numbered
like the attempts of `LlmCallFailed`). When no candidate can be tried at all, the call fails with a
retryable `circuit_open` error, journaled as attempt 1 on the first candidate.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

from agentstream.events import LlmCallRequested, LlmCallRouted
from agentstream.llm import (
    ChatRequest,
    ChatResult,
    ConversationMemo,
    ModelProvider,
    ProviderError,
    messages_from_json,
    tools_from_json,
)
from agentstream.processors.model_invoker.breaker import CircuitBreaker
from agentstream.processors.model_invoker.providers.retry import RetryPolicy
from agentstream.processors.model_invoker.routes import DEFAULT_TIER, ProviderSpec, Route, RouteTable

__all__ = ["BreakerSettings", "ModelRouter", "PinnedSettings", "Route", "RouteTable", "RoutedResult"]


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int = 5
    window_s: float = 30.0
    cooldown_s: float = 15.0


@dataclass(frozen=True, slots=True)
class PinnedSettings:
    """How a replica pinned by the KV dispatcher is called: always OpenAI-compatible."""

    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    max_concurrency: int = 32
    stream: bool = False


@dataclass(frozen=True, slots=True)
class AttemptFailure:
    provider: str
    error: ProviderError


FIRST_CHOICE = "first choice for tier "


def is_plain_first_choice(decision: LlmCallRouted) -> bool:
    """The route table's first choice, taken at the first attempt: nothing the completion that
    follows does not already say (its provider and model; the tier is the request's)."""
    return decision.attempt == 1 and decision.reason == f"{FIRST_CHOICE}{decision.tier}"


# Called before a retry with the routing decisions and the failures so far (see ModelRouter.complete).
RetryHook = Callable[[tuple[LlmCallRouted, ...], tuple[AttemptFailure, ...]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RoutedResult:
    routed: tuple[LlmCallRouted, ...]
    failures: tuple[AttemptFailure, ...]  # one per failed attempt, in order
    result: ChatResult | None  # None: the call failed with `failures[-1]`
    provider: str  # the provider that answered (or failed last)
    model: str  # the model sent to it
    attempts: int
    latency_ms: float  # from the first attempt to the answer; waits for a first slot excluded


class Lane:
    """One provider with its breaker, bulkhead and per-attempt deadline."""

    def __init__(self, name: str, provider: ModelProvider, breaker: CircuitBreaker, concurrency: int, timeout_s: float):
        self.name = name
        self.provider = provider
        self.breaker = breaker
        self.slots = asyncio.Semaphore(concurrency)
        self.timeout_s = timeout_s


@dataclass(slots=True)
class _Call:
    request: LlmCallRequested
    chat: ChatRequest
    tier: str
    routed: list[LlmCallRouted] = field(default_factory=list)
    failures: list[AttemptFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why the next candidate is being tried
    started: float | None = None
    last: tuple[str, str] = ("", "")  # (provider, model) of the latest attempt
    on_retry: RetryHook | None = None


def chat_request(request: LlmCallRequested, conversations: ConversationMemo | None = None) -> ChatRequest:
    return ChatRequest(
        model=request.model,
        messages=(
            conversations.parse(request.run_id, request.messages_json)
            if conversations is not None
            else messages_from_json(request.messages_json)
        ),
        tools=tools_from_json(request.tools_json),
        max_tokens=request.max_tokens,
        call_id=request.call_id,
    )


class ModelRouter:
    def __init__(
        self,
        table: RouteTable,
        policy: RetryPolicy,
        *,
        providers: Mapping[str, ModelProvider] | None = None,
        breaker: BreakerSettings = BreakerSettings(),
        pinned: PinnedSettings = PinnedSettings(),
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """`providers` replaces the adapters `table` would build (by provider name)."""
        self.table = table
        self.policy = policy
        self._breaker = breaker
        self._pinned = pinned
        self._clock = clock
        self._wall_ms = wall_ms
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter only spaces retries; it never reaches the journal
        given = providers or {}
        self._lanes = {name: self._lane(spec, given.get(name)) for name, spec in table.providers.items()}
        self._pinned_lanes: dict[str, Lane] = {}
        self._conversations = ConversationMemo()

    def _lane(self, spec: ProviderSpec, provider: ModelProvider | None) -> Lane:
        b = self._breaker
        breaker = CircuitBreaker(b.failure_threshold, b.window_s, b.cooldown_s, self._clock)
        return Lane(spec.name, provider or spec.build(), breaker, spec.max_concurrency, spec.timeout_s)

    def lane(self, name: str) -> Lane:
        return self._lanes[name]

    def pinned_lane(self, url: str) -> Lane:
        """The lane for a replica URL, created on first use and kept (with its breaker)."""
        lane = self._pinned_lanes.get(url)
        if lane is None:
            p = self._pinned
            spec = ProviderSpec(f"pinned:{url}", "openai", url, p.api_key, p.timeout_s, p.max_concurrency, p.stream)
            lane = self._pinned_lanes[url] = self._lane(spec, None)
        return lane

    async def aclose(self) -> None:
        for lane in [*self._lanes.values(), *self._pinned_lanes.values()]:
            await lane.provider.aclose()

    async def complete(
        self, request: LlmCallRequested, tier: str, *, pinned_url: str | None = None, on_retry: RetryHook | None = None
    ) -> RoutedResult:
        """Routes and runs the call. `on_retry` is called with the routing decisions and failures
        so far each time a lane is about to be retried after a backoff: the failures before it
        are then certainly not the call's last, and can be journaled as they happen."""
        tier = tier or DEFAULT_TIER
        routes = self.table.candidates(tier)
        candidates = [(self._lanes[r.provider], r.model or request.model) for r in routes]
        if pinned_url:
            candidates.insert(0, (self.pinned_lane(pinned_url), routes[0].model or request.model))
        call = _Call(request, chat_request(request, self._conversations), tier, on_retry=on_retry)
        deferred: list[tuple[Lane, str]] = []
        for index, (lane, model) in enumerate(candidates):
            if lane.slots.locked() and index < len(candidates) - 1:
                call.notes.append(f"bulkhead full: {lane.name}")
                deferred.append((lane, model))
                continue
            done = await self._try(call, lane, model)
            if done is not None:
                return done
        for lane, model in deferred:  # nothing else took the call: wait for a slot after all
            call.notes.append(f"waited for bulkhead: {lane.name}")
            done = await self._try(call, lane, model)
            if done is not None:
                return done
        if not call.failures:
            lane, model = candidates[0]
            call.notes.append("no candidate available")
            self._journal(call, lane, model)
            error = ProviderError(
                f"no provider available for tier {tier}: {'; '.join(call.notes)}",
                retryable=True,
                error_type="circuit_open",
            )
            call.failures.append(AttemptFailure(lane.name, error))
        return self._finish(call, None)

    async def _try(self, call: _Call, lane: Lane, model: str) -> RoutedResult | None:
        """Runs the call on one lane with retries. A result ends the call, as does a terminal error;
        None means: go on to the next candidate."""
        if not lane.breaker.allow():
            call.notes.append(f"circuit open: {lane.name}")
            return None
        if not call.notes:
            call.notes.append("pinned replica" if lane.name.startswith("pinned:") else f"{FIRST_CHOICE}{call.tier}")
        async with lane.slots:
            attempt = 1
            while True:
                self._journal(call, lane, model)
                result = await self._attempt(call, lane, model)
                if result is not None:
                    return self._finish(call, result)
                error = call.failures[-1].error
                if not error.retryable:
                    return self._finish(call, None)
                call.notes = [f"fallback after {error.error_type}: {lane.name}"]
                if attempt >= self.policy.max_attempts:
                    return None
                await self._sleep(self.policy.backoff_s(attempt, self._rng, error.retry_after_s))
                if not lane.breaker.allow():
                    call.notes.append(f"circuit open: {lane.name}")
                    return None
                call.notes = [f"retry after {error.error_type}"]
                attempt += 1
                if call.on_retry is not None:
                    await call.on_retry(tuple(call.routed), tuple(call.failures))

    async def _attempt(self, call: _Call, lane: Lane, model: str) -> ChatResult | None:
        started = time.perf_counter()
        if call.started is None:
            call.started = started
        try:
            async with asyncio.timeout(lane.timeout_s):
                result = await lane.provider.complete(replace(call.chat, model=model))
        except TimeoutError:
            error = ProviderError(
                f"{lane.name}: no response within {lane.timeout_s:g}s", retryable=True, error_type="timeout"
            )
        except ProviderError as exc:
            error = exc
        else:
            lane.breaker.record_success()
            return result
        call.failures.append(AttemptFailure(lane.name, error))
        if error.retryable:
            lane.breaker.record_failure()
        else:
            lane.breaker.record_success()  # the provider answered; the request was at fault
        return None

    def _journal(self, call: _Call, lane: Lane, model: str) -> None:
        r = call.request
        attempt = len(call.routed) + 1
        call.routed.append(
            LlmCallRouted(
                event_id=f"{r.call_id}/routed/a{attempt:02d}",
                run_id=r.run_id,
                tenant_id=r.tenant_id,
                step=r.step,
                call_id=r.call_id,
                attempt=attempt,
                tier=call.tier,
                provider=lane.name,
                model=model,
                reason="; ".join(call.notes),
                decided_ms=self._wall_ms(),
            )
        )
        call.notes = []
        call.last = (lane.name, model)

    def _finish(self, call: _Call, result: ChatResult | None) -> RoutedResult:
        latency = 0.0 if call.started is None else (time.perf_counter() - call.started) * 1000.0
        return RoutedResult(
            routed=tuple(call.routed),
            failures=tuple(call.failures),
            result=result,
            provider=call.last[0],
            model=call.last[1],
            attempts=len(call.routed),
            latency_ms=latency,
        )
