"""The model router over real HTTP against real scripted model servers: fallbacks, circuit
breakers, bulkheads, timeouts and the journaled routing decisions. Plus the pure tier policy."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentstream.config import ModelSettings
from agentstream.doubles.scripted_model import ScriptedModelServer, running_scripted_model
from agentstream.events import LlmCallCompleted, LlmCallFailed, LlmCallRequested, LlmCallRouted
from agentstream.llm import Message, ToolCall, messages_to_json
from agentstream.localkafka import free_port as free_tcp_port
from agentstream.processors.model_invoker.breaker import CircuitBreaker
from agentstream.processors.model_invoker.invoke import ModelInvoker
from agentstream.processors.model_invoker.providers import RetryPolicy
from agentstream.processors.model_invoker.router import BreakerSettings, ModelRouter, RoutedResult, chat_request
from agentstream.processors.model_invoker.routes import ROUTES_ENV, Route, RouteTable
from agentstream.routing import FRONTIER, LONG_CONTEXT_TOKENS, SMALL, choose_tier


def _scenarios(who: str, *, faulty: bool) -> list[dict[str, Any]]:
    """The same scenario names on every server; only the primary (`faulty`) misbehaves."""
    fail = {"fail_attempts": [{"status": 503, "times": 999}]} if faulty else {}
    reject = {"fail_attempts": [{"status": 400, "times": 999}]} if faulty else {}
    return [
        {"name": "ok", "turns": [{"text": f"from {who}"}], "repeat_last": True},
        {"name": "down", "turns": [{"text": f"from {who}", **fail}], "repeat_last": True},
        {"name": "reject", "turns": [{"text": f"from {who}", **reject}], "repeat_last": True},
        {"name": "slow", "turns": [{"text": f"from {who}", "delay_ms": 1500 if faulty else 0}], "repeat_last": True},
        {"name": "busy", "turns": [{"text": f"from {who}", "delay_ms": 300}], "repeat_last": True},
    ]


class Fleet:
    def __init__(self) -> None:
        self.servers: dict[str, ScriptedModelServer] = {}
        self.urls: dict[str, str] = {}
        self._ids = itertools.count()

    def receipts(self, name: str, call_id: str) -> list[int]:
        return list(self.servers[name].stats()["calls"].get(call_id, []))

    def request(self, scenario: str, tier: str = FRONTIER) -> LlmCallRequested:
        call_id = f"run-{next(self._ids)}/s0002/llm"
        messages = (Message("user", f"[scenario:{scenario}] hello"),)
        return LlmCallRequested(
            f"{call_id}/requested", call_id.split("/")[0], "tenant", 2, call_id, "req-model",
            messages_to_json(messages), "[]", 64, tier, "test",
        )  # fmt: skip

    def table(self, order: list[str], *, timeout_s: float = 5.0, concurrency: int = 8) -> RouteTable:
        providers = {
            n: {"kind": "openai", "base_url": self.urls[n], "timeout_s": timeout_s, "max_concurrency": concurrency}
            for n in order
        }
        return RouteTable.from_mapping(
            {"providers": providers, "tiers": {FRONTIER: [{"provider": n, "model": f"{n}-model"} for n in order]}},
            env={},
        )


@pytest.fixture(scope="module")
async def fleet() -> AsyncIterator[Fleet]:
    f = Fleet()
    f.servers = {"a": ScriptedModelServer(scenarios=_scenarios("a", faulty=True))}
    f.servers["b"] = ScriptedModelServer(scenarios=_scenarios("b", faulty=False))
    async with running_scripted_model(server=f.servers["a"]) as a, running_scripted_model(server=f.servers["b"]) as b:
        f.urls = {"a": a, "b": b}
        yield f


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.002)


def _router(table: RouteTable, clock: Clock | None = None, **kw: Any) -> ModelRouter:
    return ModelRouter(table, kw.pop("policy", POLICY), clock=clock or Clock(), wall_ms=lambda: 42, **kw)


def _decisions(r: RoutedResult) -> list[tuple[int, str, str, str]]:
    return [(e.attempt, e.provider, e.model, e.reason) for e in r.routed]


async def test_5xx_retries_then_falls_back_and_every_decision_is_journaled(fleet: Fleet) -> None:
    router = _router(fleet.table(["a", "b"]))
    request = fleet.request("down")
    events = await ModelInvoker(router).perform(request)
    await router.aclose()
    routed = [e for e in events if isinstance(e, LlmCallRouted)]
    assert [(e.attempt, e.provider, e.model, e.reason) for e in routed] == [
        (1, "a", "a-model", "first choice for tier frontier"),
        (2, "a", "a-model", "retry after server_error"),
        (3, "b", "b-model", "fallback after server_error: a"),
    ]
    assert [e.event_id for e in routed] == [f"{request.call_id}/routed/a0{n}" for n in (1, 2, 3)]
    assert all(e.decided_ms == 42 and e.tier == FRONTIER and e.step == 2 for e in routed)
    failed = [e for e in events if isinstance(e, LlmCallFailed)]
    assert [(e.event_id, e.provider, e.status, e.final) for e in failed] == [
        (f"{request.call_id}/failed/a01", "a", 503, False),
        (f"{request.call_id}/failed/a02", "a", 503, False),
    ]
    done = events[-1]
    assert isinstance(done, LlmCallCompleted) and events.index(done) == len(events) - 1
    assert (done.provider, done.model, done.text, done.attempts) == ("b", "b-model", "from b", 3)
    assert len(fleet.receipts("a", request.call_id)) == 2 and len(fleet.receipts("b", request.call_id)) == 1


async def test_a_failed_attempt_is_journaled_when_its_retry_starts_not_when_the_call_ends(fleet: Fleet) -> None:
    from agentstream.kafka.progress import progress_to

    router = _router(fleet.table(["a", "b"]))
    request = fleet.request("down")
    journaled: list[list[str]] = []
    receipts_then: list[int] = []

    async def sink(events: list[Any]) -> None:
        journaled.append([e.event_id for e in events])
        receipts_then.append(len(fleet.receipts("a", request.call_id)))

    with progress_to(sink):
        final = await ModelInvoker(router).perform(request)
    await router.aclose()
    call = request.call_id
    # Before the retry on `a` (attempt 2) was sent: attempt 1's decision and failure, non-final.
    assert journaled == [[f"{call}/routed/a01", f"{call}/failed/a01"]] and receipts_then == [1]
    # The rest at the end, nothing twice.
    assert [e.event_id for e in final] == [f"{call}/routed/a02", f"{call}/routed/a03", f"{call}/failed/a02",
                                           f"{call}/completed"]  # fmt: skip
    # Outside a work item (no sink) the same call returns everything at the end, as before.
    router = _router(fleet.table(["a", "b"]))
    alone = await ModelInvoker(router).perform(fleet.request("down"))
    await router.aclose()
    assert len(alone) == 6


async def test_a_connection_failure_names_the_endpoint_without_its_credentials() -> None:
    from agentstream.llm import ProviderError
    from agentstream.processors.model_invoker.providers import OpenAIChatProvider

    port = free_tcp_port()
    provider = OpenAIChatProvider(f"http://user:pw@127.0.0.1:{port}/v1?key=sekrit", "sk-test", timeout_s=2)
    try:
        chat = chat_request(Fleet().request("ok"))
        with pytest.raises(ProviderError) as caught:
            await provider.complete(chat)
    finally:
        await provider.aclose()
    message = str(caught.value)
    assert f"127.0.0.1:{port}/v1" in message and caught.value.error_type == "connection"
    assert "sekrit" not in message and "pw" not in message and "sk-test" not in message


async def test_breaker_opens_skips_the_provider_and_recovers_half_open(fleet: Fleet) -> None:
    clock = Clock()
    breaker = BreakerSettings(failure_threshold=2, window_s=60, cooldown_s=10)
    router = _router(fleet.table(["a", "b"]), clock, breaker=breaker, policy=RetryPolicy(max_attempts=1))
    for _ in range(2):
        assert (await router.complete(fleet.request("down"), FRONTIER)).provider == "b"
    assert router.lane("a").breaker.state == "open"
    skipped = fleet.request("down")
    result = await router.complete(skipped, FRONTIER)
    assert fleet.receipts("a", skipped.call_id) == []  # never called
    assert _decisions(result) == [(1, "b", "b-model", "circuit open: a")]
    clock.now += 10  # cooldown over: one trial call, which fails and re-opens the circuit
    trial = await router.complete(fleet.request("down"), FRONTIER)
    assert [e.provider for e in trial.routed] == ["a", "b"] and router.lane("a").breaker.state == "open"
    clock.now += 10  # the next trial succeeds and closes it
    healed = await router.complete(fleet.request("ok"), FRONTIER)
    assert (healed.provider, _decisions(healed)[0][3]) == ("a", "first choice for tier frontier")
    assert router.lane("a").breaker.state == "closed"
    await router.aclose()


async def test_no_candidate_left_fails_fast_and_retryable(fleet: Fleet) -> None:
    router = _router(fleet.table(["a"]), breaker=BreakerSettings(failure_threshold=1), policy=RetryPolicy(1))
    await router.complete(fleet.request("down"), FRONTIER)
    events = await ModelInvoker(router).perform(fleet.request("ok"))
    await router.aclose()
    routed, failed = events
    assert isinstance(routed, LlmCallRouted) and routed.reason == "circuit open: a; no candidate available"
    assert isinstance(failed, LlmCallFailed) and (failed.error_type, failed.retryable, failed.final) == (
        "circuit_open",
        True,
        True,
    )


async def test_bulkhead_full_goes_to_the_fallback(fleet: Fleet) -> None:
    router = _router(fleet.table(["a", "b"], concurrency=1))
    first, second = await asyncio.gather(
        router.complete(fleet.request("busy"), FRONTIER), router.complete(fleet.request("busy"), FRONTIER)
    )
    await router.aclose()
    assert (first.provider, second.provider) == ("a", "b")
    assert _decisions(second) == [(1, "b", "b-model", "bulkhead full: a")]


async def test_bulkhead_full_waits_when_it_is_the_only_candidate(fleet: Fleet) -> None:
    router = _router(fleet.table(["b"], concurrency=1))
    requests = [fleet.request("busy"), fleet.request("busy")]
    results = await asyncio.gather(*(router.complete(r, FRONTIER) for r in requests))
    await router.aclose()
    assert [r.provider for r in results] == ["b", "b"]
    (t1,), (t2,) = (fleet.receipts("b", r.call_id) for r in requests)
    assert abs(t2 - t1) >= 250  # the second was sent only once the first had answered (300 ms)


async def test_a_hanging_provider_times_out_and_falls_back(fleet: Fleet) -> None:
    router = _router(fleet.table(["a", "b"], timeout_s=0.3), policy=RetryPolicy(max_attempts=1))
    started = time.monotonic()
    result = await router.complete(fleet.request("slow"), FRONTIER)
    await router.aclose()
    assert time.monotonic() - started < 1.2
    assert result.failures[0].error.error_type == "timeout" and result.provider == "b"
    assert _decisions(result)[1][3] == "fallback after timeout: a"


async def test_a_terminal_400_does_not_fall_back(fleet: Fleet) -> None:
    router = _router(fleet.table(["a", "b"]))
    request = fleet.request("reject")
    events = await ModelInvoker(router).perform(request)
    await router.aclose()
    assert [type(e).__name__ for e in events] == ["LlmCallRouted", "LlmCallFailed"]
    failed = events[1]
    assert isinstance(failed, LlmCallFailed) and (failed.status, failed.retryable, failed.final) == (400, False, True)
    assert fleet.receipts("b", request.call_id) == [] and len(fleet.receipts("a", request.call_id)) == 1
    assert router.lane("a").breaker.state == "closed"


async def test_pinned_replica_is_tried_first_and_cached(fleet: Fleet) -> None:
    router = _router(fleet.table(["a", "b"]))
    pinned = await router.complete(fleet.request("ok"), FRONTIER, pinned_url=fleet.urls["b"])
    assert _decisions(pinned) == [(1, f"pinned:{fleet.urls['b']}", "a-model", "pinned replica")]
    assert router.pinned_lane(fleet.urls["b"]) is router.pinned_lane(fleet.urls["b"])
    down = await router.complete(fleet.request("down"), FRONTIER, pinned_url=fleet.urls["a"])
    assert [e.provider for e in down.routed] == [f"pinned:{fleet.urls['a']}"] * 2 + ["a", "a", "b"]
    await router.aclose()


async def test_without_a_routes_file_one_provider_serves_every_tier(fleet: Fleet, tmp_path: Path) -> None:
    table = RouteTable.from_env(ModelSettings(base_url=fleet.urls["b"]), env={})
    assert table.candidates(SMALL) == table.candidates("") == (Route("openai"),)
    router = _router(table)
    result = await router.complete(fleet.request("ok", tier=SMALL), SMALL)
    await router.aclose()
    assert (result.provider, result.model, result.result and result.result.text) == ("openai", "req-model", "from b")
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "providers:\n  p: {kind: anthropic, base_url: 'http://x', api_key_env: K, timeout_s: 3, max_concurrency: 2}\n"
        "tiers:\n  small: [{provider: p, model: m}]\n"
    )
    loaded = RouteTable.from_env(ModelSettings(), env={ROUTES_ENV: str(routes), "K": "secret"})
    spec = loaded.providers["p"]
    assert (spec.kind, spec.api_key, spec.timeout_s, spec.max_concurrency) == ("anthropic", "secret", 3.0, 2)
    assert loaded.candidates(FRONTIER) == loaded.candidates(SMALL) == (Route("p", "m"),)


def test_circuit_breaker_states() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=3, window_s=10, cooldown_s=5, clock=clock)

    def state() -> str:  # a call each time: mypy would narrow the property after one comparison
        return b.state

    b.record_failure()
    clock.now += 11  # outside the window: forgotten
    b.record_failure()
    b.record_failure()
    assert state() == "closed" and b.allow()
    b.record_failure()
    assert state() == "open" and not b.allow()
    clock.now += 5
    assert state() == "half_open" and b.allow() and not b.allow()  # one trial at a time
    b.record_success()
    assert state() == "closed"
    b.record_failure()
    b.record_success()  # a success resets the count
    b.record_failure()
    b.record_failure()
    assert state() == "closed"


_CALL = (ToolCall("c1", "calculator", "{}"),)


def _after_tools(*results: Message) -> tuple[Message, ...]:
    return (Message("user", "add the bills"), Message("assistant", "", tool_calls=_CALL), *results)


def test_choose_tier_is_pure_and_documented() -> None:
    first = (Message("system", "be careful"), Message("user", "split the bills"))
    assert choose_tier(1, first, "m") == (FRONTIER, "first step: planning")
    ok = _after_tools(Message("tool", "42", tool_call_id="c1"))
    assert choose_tier(2, ok, "m") == (SMALL, "routine step after 1 successful tool result(s)")
    assert choose_tier(2, ok, "m") == choose_tier(2, ok, "m")
    failed = _after_tools(Message("tool", "boom", tool_call_id="c1", is_error=True))
    assert choose_tier(2, failed, "m")[0] == FRONTIER and "tool error" in choose_tier(2, failed, "m")[1]
    long = _after_tools(Message("tool", "x" * 4 * (LONG_CONTEXT_TOKENS + 1), tool_call_id="c1"))
    assert choose_tier(2, long, "m")[1].startswith("long context")
    hard = _after_tools(Message("tool", "Now prove the invariant step by step", tool_call_id="c1"))
    assert choose_tier(2, hard, "m") == (FRONTIER, "hard reasoning: mentions 'prove'")
    assert choose_tier(3, (*ok, Message("user", "thanks, also book it")), "m")[0] == FRONTIER
    assert choose_tier(1, first, SMALL) == (SMALL, "tier small requested by the run")


async def test_a_first_choice_answering_at_once_journals_its_completion_alone(fleet: Fleet) -> None:
    router = _router(fleet.table(["a", "b"]))
    events = await ModelInvoker(router).perform(fleet.request("ok"))
    pinned = await ModelInvoker(router).perform(fleet.request("ok"), pinned_url=fleet.urls["b"])
    retried = await ModelInvoker(router).perform(fleet.request("down"))
    await router.aclose()
    assert [type(e).__name__ for e in events] == ["LlmCallCompleted"]
    assert isinstance(events[0], LlmCallCompleted) and (events[0].provider, events[0].model) == ("a", "a-model")
    # A decision the completion does not already tell is still journaled: a pinned replica, a retry.
    assert [type(e).__name__ for e in pinned] == ["LlmCallRouted", "LlmCallCompleted"]
    assert sum(isinstance(e, LlmCallRouted) for e in retried) == 3


async def test_a_call_that_gives_up_journals_each_failure_once_the_last_one_final(fleet: Fleet) -> None:
    from agentstream.kafka.progress import progress_to

    router = _router(fleet.table(["a"]), policy=RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.002))
    request = fleet.request("down")
    journaled: list[str] = []

    async def sink(events: list[Any]) -> None:
        journaled.extend(e.event_id for e in events)

    with progress_to(sink):
        final = await ModelInvoker(router).perform(request)
    await router.aclose()
    call = request.call_id
    failed = [e for e in final if isinstance(e, LlmCallFailed)]
    # Attempts 1 and 2 went out as their retries started; the call's end adds only attempt 3, final.
    assert [i for i in journaled if "/failed/" in i] == [f"{call}/failed/a01", f"{call}/failed/a02"]
    assert [(e.event_id, e.final) for e in failed] == [(f"{call}/failed/a03", True)]
