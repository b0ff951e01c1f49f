"""The replica emulator's HTTP face over real uvicorn servers (in this event loop, and as a
`python -m` process); its KV cache and timing models: tests/unit/test_replica_emulator_model.py."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import orjson
import pytest

from agentstream.doubles.replica_emulator import (
    ReplicaProfile,
    running_emulator,
)
from agentstream.doubles.replica_emulator.metrics import parse_metrics
from agentstream.sse import parse_sse

# -- HTTP ---------------------------------------------------------------------------------------

# 0.5 ms x 0.1 = 50 us per prompt token once scaled: a 2,000-token first turn prefills in 100 ms.
HTTP_PROFILE = ReplicaProfile(
    kv_capacity_tokens=100_000, prefill_s_per_token=0.0005, decode_s_per_token=0.01, max_running=16, time_scale=0.1
)


def _conversation(system: str, first: str, turns: list[str] | None = None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}, {"role": "user", "content": first}]
    for text in turns or []:
        messages.append({"role": "assistant", "content": text})
        messages.append({"role": "user", "content": "and then?"})
    return messages


async def _stream(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, str, dict[str, Any]]:
    """(client-side TTFT, the reassembled text, the usage chunk)."""
    start = time.monotonic()
    ttft = 0.0
    text = ""
    usage: dict[str, Any] = {}
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for message in parse_sse(response.aiter_bytes()):
            if message.data == "[DONE]":
                continue
            chunk = orjson.loads(message.data)
            if chunk["choices"]:
                if not ttft:
                    ttft = time.monotonic() - start
                text += chunk["choices"][0]["delta"].get("content") or ""
            if chunk.get("usage"):
                usage = chunk["usage"]
    return ttft, text, usage


async def test_second_turn_hits_this_replica_but_not_a_fresh_one() -> None:
    async with (
        running_emulator(HTTP_PROFILE, "r0") as (url0, _),
        running_emulator(HTTP_PROFILE, "r1") as (url1, _),
        httpx.AsyncClient(base_url=url0) as r0,
        httpx.AsyncClient(base_url=url1) as r1,
    ):
        first = _conversation("You are an agent. " * 100, "x" * 6200)  # ~2,000 tokens
        ttft1, reply, usage1 = await _stream(r0, {"model": "m", "messages": first, "max_tokens": 20})
        assert usage1["prompt_tokens"] >= 2000 and usage1["prompt_tokens_details"]["cached_tokens"] == 0
        assert usage1["completion_tokens"] == 20 and len(reply) == 80  # four characters per emulated token

        second = {"model": "m", "messages": _conversation("You are an agent. " * 100, "x" * 6200, [reply])}
        ttft2, _, usage2 = await _stream(r0, {**second, "max_tokens": 20})
        assert usage2["prompt_tokens_details"]["cached_tokens"] == usage1["total_tokens"]
        assert ttft1 >= 0.1 and ttft2 >= 0  # the times themselves are compared server-side below

        cold = await r1.post("/v1/chat/completions", json={**second, "max_tokens": 5})
        assert cold.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert cold.json()["choices"][0]["finish_reason"] == "length"
        assert float(cold.headers["x-emulator-ttft-ms"]) >= 100  # the whole prompt prefilled again
        warm = await r0.post("/v1/chat/completions", json={**second, "max_tokens": 5})
        # As the emulator measured them: a loaded machine stretches both, not their ratio.
        assert float(warm.headers["x-emulator-ttft-ms"]) < float(cold.headers["x-emulator-ttft-ms"]) / 2


async def test_user_field_names_the_session() -> None:
    async with running_emulator(HTTP_PROFILE) as (url, emulator), httpx.AsyncClient(base_url=url) as client:
        for system in ("one", "two"):
            body = {"messages": _conversation(system, "y" * 400), "user": "run-7", "max_tokens": 4}
            response = await client.post("/v1/chat/completions", json=body)
        assert int(response.headers["x-emulator-cached-tokens"]) > 0
        assert emulator.engine.cache.sessions == ("run-7",)


async def test_lru_eviction_under_small_capacity_recomputes() -> None:
    profile = ReplicaProfile(
        kv_capacity_tokens=3000, prefill_s_per_token=0.0001, decode_s_per_token=0.0001, max_running=4
    )
    async with running_emulator(profile) as (url, _), httpx.AsyncClient(base_url=url) as client:

        async def turn(name: str) -> dict[str, Any]:
            body = {"messages": _conversation(name, "z" * 6000), "max_tokens": 16}  # ~1,500 tokens
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200
            return dict(response.json()["usage"])

        await turn("a")
        assert (await turn("a"))["prompt_tokens_details"]["cached_tokens"] > 0
        await turn("b")  # a and b cannot both stay: a, least recently used, goes
        again = await turn("a")
        assert again["prompt_tokens_details"]["cached_tokens"] == 0
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["counters"]["evictions"] >= 1
        assert stats["counters"]["recomputed_tokens"] == again["prompt_tokens"]
        assert stats["used_tokens"] <= stats["capacity_tokens"] == 3000


async def test_metrics_speak_vllm_names_and_match_stats() -> None:
    async with running_emulator(HTTP_PROFILE, model_name="emu") as (url, _), httpx.AsyncClient(base_url=url) as client:
        body = {"messages": _conversation("sys", "w" * 800), "max_tokens": 8}
        for _ in range(2):
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        stats = (await client.get("/_emulator/stats")).json()
        response = await client.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        samples = parse_metrics(response.text)
        label = '{model_name="emu"}'
        counters = stats["counters"]
        assert samples["vllm:num_requests_running" + label] == stats["running"] == 0
        assert samples["vllm:num_requests_waiting" + label] == stats["waiting"] == 0
        usage = stats["used_tokens"] / stats["capacity_tokens"]
        assert samples["vllm:kv_cache_usage_perc" + label] == pytest.approx(usage)
        assert samples["vllm:gpu_cache_usage_perc" + label] == pytest.approx(usage)
        assert samples["vllm:prefix_cache_hits_total" + label] == counters["cached_tokens"] > 0
        queries = counters["cached_tokens"] + counters["prefilled_tokens"]
        assert samples["vllm:prefix_cache_queries_total" + label] == queries
        info = [k for k in samples if k.startswith("vllm:cache_config_info{")]
        assert len(info) == 1 and 'block_size="16"' in info[0] and 'num_gpu_blocks="6250"' in info[0]

        assert (await client.post("/_emulator/reset")).json() == {"ok": True}
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["counters"]["requests"] == 0 and stats["used_tokens"] == 0


async def test_malformed_requests_get_openai_style_400s() -> None:
    small = ReplicaProfile(kv_capacity_tokens=1000, prefill_s_per_token=0, decode_s_per_token=0, max_running=1)
    async with running_emulator(small) as (url, _), httpx.AsyncClient(base_url=url) as client:
        bad_bodies: list[bytes] = [
            b"{not json",
            b"[1, 2]",
            orjson.dumps({"model": "m"}),
            orjson.dumps({"messages": []}),
            orjson.dumps({"messages": ["hi"]}),
            orjson.dumps({"messages": [{"role": "user", "content": 5}]}),
            orjson.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
            orjson.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "9"}),
            orjson.dumps({"messages": [{"role": "user", "content": "hi"}], "user": 3}),
            orjson.dumps({"messages": [{"role": "assistant", "tool_calls": [{"x": 1}]}]}),
            orjson.dumps({"messages": [{"role": "user", "content": "x" * 8000}]}),  # larger than the cache
        ]
        for raw in bad_bodies:
            response = await client.post("/v1/chat/completions", content=raw)
            assert response.status_code == 400, raw
            assert response.json()["error"]["type"] == "invalid_request_error"
        assert (await client.get("/health")).status_code == 200
        models = (await client.get("/v1/models")).json()
        assert models["data"][0]["id"] == "emulated-8b"


def test_module_cli_announces_its_url_and_serves() -> None:
    args = ["--port", "0", "--replica-id", "cli", "--time-scale", "0.01", "--kv-tokens", "4096", "--max-running", "2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentstream.doubles.replica_emulator", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("ready http://127.0.0.1:")
        url = line.split(" ", 1)[1]
        body = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 3}
        reply = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
        assert reply.status_code == 200 and reply.headers["x-emulator-replica"] == "cli"
        assert reply.json()["usage"]["completion_tokens"] == 3
        stats = httpx.get(url + "/_emulator/stats", timeout=10).json()
        assert stats["capacity_tokens"] == 4096 and stats["completed"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)
