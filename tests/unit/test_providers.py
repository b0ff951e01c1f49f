"""The real provider adapters against the scripted model server, over real HTTP."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from agentstream.doubles.scripted_model import ScriptedModelServer, running_scripted_model
from agentstream.llm import ChatRequest, ChatResult, Message, ModelProvider, ProviderError, ToolSpec
from agentstream.processors.model_invoker.providers import (
    AnthropicMessagesProvider,
    OpenAIChatProvider,
    RetryPolicy,
    complete_with_retries,
    make_provider,
)
from agentstream.processors.model_invoker.providers.http1 import HttpClient

TOOLS = (
    ToolSpec(
        "calculator",
        "Evaluate an arithmetic expression",
        {"type": "object", "properties": {"expression": {"type": "string"}}},
    ),
    ToolSpec(
        "get_current_time",
        "Current time in a timezone",
        {"type": "object", "properties": {"timezone": {"type": "string"}}},
    ),
    ToolSpec(
        "transfer_funds",
        "Move money",
        {
            "type": "object",
            "properties": {
                "to_account": {"type": "string"},
                "amount_cents": {"type": "integer"},
                "memo": {"type": "string"},
            },
        },
    ),
)
SCENARIOS: list[dict[str, Any]] = [
    {
        "name": "flaky",
        "turns": [{"text": "recovered", "fail_attempts": [{"status": 500, "times": 2, "retry_after": 0.05}]}],
    },
    {
        "name": "throttled",
        "turns": [{"text": "ok", "fail_attempts": [{"status": 429, "times": 1, "retry_after": 0.02}]}],
    },
    {"name": "reject", "turns": [{"text": "never", "fail_attempts": [{"status": 400, "times": 9}]}]},
    {"name": "down", "turns": [{"text": "never", "fail_attempts": [{"status": 503, "times": 99}]}]},
    {"name": "slow", "turns": [{"text": "late", "delay_ms": 1000}]},
    {"name": "corrupt", "turns": [{"text": "never", "corrupt_response": True}]},
]
KINDS = [("openai", False), ("openai", True), ("anthropic", False), ("anthropic", True)]
SECRET = "sk-test-DO-NOT-LEAK-1234"


class Model:
    def __init__(self, server: ScriptedModelServer, url: str) -> None:
        self.server = server
        self.url = url

    def receipts(self, key: str) -> int:
        return len(self.server.stats()["calls"].get(key, []))


@pytest.fixture(scope="module")
async def model() -> AsyncIterator[Model]:
    server = ScriptedModelServer(scenarios=SCENARIOS)
    async with running_scripted_model(server=server) as url:
        yield Model(server, url)


@pytest.fixture(params=KINDS, ids=[f"{k}-{'stream' if s else 'plain'}" for k, s in KINDS])
async def provider(request: pytest.FixtureRequest, model: Model) -> AsyncIterator[ModelProvider]:
    kind, stream = request.param
    p = make_provider(kind, model.url, SECRET, timeout_s=5.0, stream=stream)
    yield p
    await p.aclose()


def _request(messages: list[Message], *, call_id: str | None = None) -> ChatRequest:
    return ChatRequest(
        model="scripted-test",
        messages=tuple(messages),
        tools=TOOLS,
        max_tokens=256,
        call_id=call_id or f"call-{uuid.uuid4()}",
    )


def _start(text: str) -> list[Message]:
    return [Message("system", "You are a careful assistant."), Message("user", text)]


class RecordingSleep:
    """Stands in for asyncio.sleep so backoff delays are observed rather than waited."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_tool_calls_come_back_with_names_and_arguments(provider: ModelProvider) -> None:
    result = await provider.complete(_request(_start("split the bills")))
    assert result.finish_reason == "tool_calls"
    assert [c.name for c in result.tool_calls] == ["calculator", "get_current_time"]
    assert orjson.loads(result.tool_calls[0].arguments_json) == {"expression": "4200 + 3800 + 4500"}
    assert orjson.loads(result.tool_calls[1].arguments_json) == {"timezone": "Asia/Tokyo"}
    prefix = "call_0_" if isinstance(provider, OpenAIChatProvider) else "toolu_0_"
    assert [c.id for c in result.tool_calls] == [prefix + "0", prefix + "1"]
    assert result.text.startswith("I'll add up the bills")
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.provider_request_id and result.model == "scripted-test"


async def _converse(
    provider: ModelProvider, messages: list[Message], *, first_fails: bool = True
) -> tuple[ChatResult, list[ChatResult]]:
    """Drives a whole conversation, answering every tool call (the first one as an error)."""
    results: list[ChatResult] = []
    for _ in range(10):
        result = await provider.complete(_request(messages))
        results.append(result)
        if not result.tool_calls:
            return result, results
        messages.append(Message("assistant", result.text, tool_calls=result.tool_calls))
        for call in result.tool_calls:
            is_error = first_fails and len(results) == 1 and call is result.tool_calls[0]
            messages.append(Message("tool", "boom" if is_error else "42", tool_call_id=call.id, is_error=is_error))
    raise AssertionError("conversation did not finish")


async def test_demo_conversation_reaches_final_text(provider: ModelProvider) -> None:
    final, results = await _converse(provider, _start("split the bills"))
    assert len(results) == 5
    assert final.finish_reason == "stop" and final.text.startswith("Done: the three bills total 12500 cents")
    names = [c.name for r in results for c in r.tool_calls]
    assert names == ["calculator", "get_current_time", "calculator", "transfer_funds", "get_current_time"]
    transfer = orjson.loads(results[2].tool_calls[0].arguments_json)
    assert transfer == {"to_account": "ACC-204-778", "amount_cents": 3125, "memo": "Dinner share (1 of 4)"}
    # Later turns re-send the earlier prefix, which the scripted model reports as cached.
    assert results[0].usage.cached_input_tokens == 0
    assert 0 < results[-1].usage.cached_input_tokens < results[-1].usage.input_tokens


async def test_usage_is_the_same_whichever_protocol(model: Model) -> None:
    usages = []
    for kind in ("openai", "anthropic"):
        p = make_provider(kind, model.url, None, timeout_s=5.0)
        # No error results: OpenAI's "ERROR: " prefix would legitimately add prompt tokens.
        _, results = await _converse(p, _start("split the bills"), first_fails=False)
        usages.append([r.usage for r in results])
        await p.aclose()
    assert usages[0] == usages[1]


async def test_malformed_arguments_come_back_raw(provider: ModelProvider) -> None:
    final, results = await _converse(provider, _start("[scenario:malformed] what is 6*7?"))
    assert results[0].tool_calls[0].arguments_json == '{"expression": "6*7"'
    assert orjson.loads(results[1].tool_calls[0].arguments_json) == {"expression": "6*7"}
    assert final.text == "The answer is 42."


async def test_retries_recover_and_stats_count_every_attempt(provider: ModelProvider, model: Model) -> None:
    request = _request(_start("[scenario:flaky] hi"))
    sleep = RecordingSleep()
    failures: list[tuple[int, int | None]] = []

    async def on_failed(attempt: int, err: ProviderError) -> None:
        failures.append((attempt, err.status))

    policy = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.02)
    result, attempts = await complete_with_retries(
        provider, request, policy, rng=random.Random(7), sleep=sleep, on_attempt_failed=on_failed
    )
    assert result.text == "recovered" and attempts == 3
    assert failures == [(1, 500), (2, 500)]
    assert model.receipts(request.call_id) == 3
    assert sleep.delays and all(d >= 0.05 for d in sleep.delays)  # Retry-After is a floor


async def test_rate_limit_retry_after_is_honoured(model: Model) -> None:
    p = OpenAIChatProvider(model.url, None, stream=True)
    try:
        request = _request(_start("[scenario:throttled]"))
        with pytest.raises(ProviderError) as info:
            await p.complete(request)
        assert info.value.status == 429 and info.value.retryable and info.value.retry_after_s == pytest.approx(0.02)
        assert (await p.complete(request)).text == "ok"
    finally:
        await p.aclose()


async def test_non_retryable_400_raises_immediately(provider: ModelProvider, model: Model) -> None:
    request = _request(_start("[scenario:reject]"))
    sleep = RecordingSleep()
    with pytest.raises(ProviderError) as info:
        await complete_with_retries(provider, request, RetryPolicy(), rng=random.Random(1), sleep=sleep)
    assert info.value.status == 400 and not info.value.retryable
    assert sleep.delays == [] and model.receipts(request.call_id) == 1
    assert SECRET not in str(info.value) and "authorization" not in str(info.value).lower()


async def test_exhausted_retries_reraise_the_last_error(model: Model) -> None:
    p = AnthropicMessagesProvider(model.url, SECRET)
    try:
        request = _request(_start("[scenario:down]"))
        sleep = RecordingSleep()
        with pytest.raises(ProviderError) as info:
            await complete_with_retries(p, request, RetryPolicy(max_attempts=3), rng=random.Random(2), sleep=sleep)
        assert info.value.status == 503 and info.value.retryable and info.value.error_type == "server_error"
        assert len(sleep.delays) == 2 and model.receipts(request.call_id) == 3
    finally:
        await p.aclose()


@pytest.mark.parametrize("kind,stream", KINDS)
async def test_slow_model_raises_retryable_timeout(model: Model, kind: Any, stream: bool) -> None:
    p = make_provider(kind, model.url, SECRET, timeout_s=0.15, stream=stream)
    try:
        start = time.perf_counter()
        with pytest.raises(ProviderError) as info:
            await p.complete(_request(_start("[scenario:slow]")))
        assert info.value.retryable and info.value.error_type == "timeout"
        assert time.perf_counter() - start < 0.9  # gave up well before the reply
    finally:
        await p.aclose()


async def test_unparseable_reply_is_a_terminal_bad_response(provider: ModelProvider) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.complete(_request(_start("[scenario:corrupt]")))
    assert info.value.error_type == "bad_response" and not info.value.retryable


async def test_refused_connection_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = OpenAIChatProvider(f"http://127.0.0.1:{port}/v1", SECRET)
    try:
        with pytest.raises(ProviderError) as info:
            await p.complete(_request(_start("hi")))
        assert info.value.retryable and info.value.error_type == "connection" and SECRET not in str(info.value)
    finally:
        await p.aclose()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_wire_headers_and_body(kind: str) -> None:
    server = ScriptedModelServer(keep_requests=4)
    client = HttpClient()
    async with running_scripted_model(server=server) as url:
        p: ModelProvider
        if kind == "openai":
            p = OpenAIChatProvider(url, SECRET, client=client)
        else:
            p = AnthropicMessagesProvider(url, SECRET, client=client)
        first = await p.complete(_request(_start("hi")))
        history = [*_start("hi"), Message("assistant", first.text, tool_calls=first.tool_calls)]
        history += [Message("tool", "bad", tool_call_id=first.tool_calls[0].id, is_error=True)]
        history += [Message("tool", "12:00", tool_call_id=first.tool_calls[1].id)]
        request = _request(history, call_id="fixed-key")
        await p.complete(request)
        await p.aclose()  # a caller-owned client stays open
        assert not client.closed
        await client.aclose()
    headers = server.received[-1].headers
    body = orjson.loads(server.received[-1].body)
    assert headers["content-type"] == "application/json" and int(headers["content-length"]) > 0
    assert headers["idempotency-key"] == "fixed-key"
    if kind == "openai":
        assert headers["authorization"] == f"Bearer {SECRET}"
        schema = TOOLS[0].input_schema
        assert body["tools"][0] == {
            "type": "function",
            "function": {"name": "calculator", "description": TOOLS[0].description, "parameters": schema},
        }
        assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_0_0", "content": "ERROR: bad"}
        assert body["messages"][2]["tool_calls"][1]["function"]["arguments"] == '{"timezone":"Asia/Tokyo"}'
    else:
        assert headers["x-api-key"] == SECRET and headers["anthropic-version"] == "2023-06-01"
        assert body["system"] == "You are a careful assistant." and body["tools"][0]["input_schema"]
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        results = body["messages"][2]["content"]
        assert [b["type"] for b in results] == ["tool_result", "tool_result"]
        assert results[0]["is_error"] is True and "is_error" not in results[1]
        assert body["messages"][1]["content"][2] == {
            "type": "tool_use",
            "id": "toolu_0_1",
            "name": "get_current_time",
            "input": {"timezone": "Asia/Tokyo"},
        }


async def test_invalid_history_arguments_are_wrapped_for_anthropic() -> None:
    server = ScriptedModelServer(keep_requests=1)
    async with running_scripted_model(server=server) as url:
        p = AnthropicMessagesProvider(url, None)
        first = await p.complete(_request(_start("[scenario:malformed]")))
        call = first.tool_calls[0]
        history = [*_start("[scenario:malformed]"), Message("assistant", first.text, tool_calls=(call,))]
        history.append(Message("tool", "invalid JSON arguments", tool_call_id=call.id, is_error=True))
        second = await p.complete(_request(history))
        await p.aclose()
    assert second.tool_calls[0].arguments_json == '{"expression":"6*7"}'
    tool_use = orjson.loads(server.received[-1].body)["messages"][1]["content"][1]
    assert tool_use["input"] == {"_raw": '{"expression": "6*7"'}


def test_backoff_is_jittered_bounded_and_floored() -> None:
    policy = RetryPolicy(max_attempts=8, base_delay_s=0.2, max_delay_s=1.0)
    rng = random.Random(42)
    for attempt in range(1, 8):
        cap = min(1.0, 0.2 * 2 ** (attempt - 1))
        delays = [policy.backoff_s(attempt, rng) for _ in range(200)]
        assert all(cap / 2 <= d <= cap for d in delays)  # floored at half the window
        assert max(delays) > cap * 0.8  # jitter spans the whole window, not just its bottom
    assert policy.backoff_s(1, rng, retry_after_s=3.0) == 3.0
    assert [policy.backoff_s(3, random.Random(5)) for _ in range(2)] == [policy.backoff_s(3, random.Random(5))] * 2
    defaults = RetryPolicy()
    spans = [sum(defaults.backoff_s(a, random.Random(s)) for a in range(1, defaults.max_attempts)) for s in range(50)]
    assert all(3.5 <= span <= 7.0 for span in spans)  # four attempts outlast a blip of a few seconds
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


async def test_retry_delays_recorded_through_a_real_provider(model: Model) -> None:
    p = OpenAIChatProvider(model.url, None)
    try:
        sleep = RecordingSleep()
        policy = RetryPolicy(max_attempts=6, base_delay_s=0.1, max_delay_s=0.5)
        with pytest.raises(ProviderError):
            await complete_with_retries(
                p, _request(_start("[scenario:down]")), policy, rng=random.Random(3), sleep=sleep
            )
        assert len(sleep.delays) == 5
        assert all(0 <= d <= min(0.5, 0.1 * 2**i) for i, d in enumerate(sleep.delays))
        rng = random.Random(3)
        assert sleep.delays == [policy.backoff_s(i, rng) for i in range(1, 6)]  # seeded: reproducible
    finally:
        await p.aclose()


def test_factory_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown provider kind"):
        make_provider("gemini", "http://x", None)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [False, True])
async def test_concurrent_calls_each_reach_the_server_once(model: Model, stream: bool) -> None:
    p = AnthropicMessagesProvider(model.url, None, stream=stream)
    try:
        requests = [_request(_start(f"[scenario:malformed] {i}")) for i in range(60)]
        results = await asyncio.gather(*(p.complete(r) for r in requests))
        assert all(r.tool_calls[0].name == "calculator" for r in results)
        assert [model.receipts(r.call_id) for r in requests] == [1] * 60
    finally:
        await p.aclose()
