"""CPU per model call on both ends: the invoker's HTTP client and the scripted model server.

    .venv/bin/python bench/model_call_cpu.py [--client provider|invoker|httpx|aiohttp] [--stream]
        [--concurrency 1,200] [--calls 3000] [--tree DIR] [--loop asyncio|uvloop]

The scripted model server runs as its own process, as under `agentstream dev` (its CPU is read
from /proc); the client runs in this process (its CPU is this process's). Each call is one
instant OpenAI-protocol model call of the `step_overhead` bench's shape: a conversation four
tool steps in, answered by a tool call. `--client provider` is the invoker's own adapter
(`OpenAIChatProvider`); `invoker` the whole `ModelInvoker.perform` path (routing, breaker, bulkhead,
adapter, events) short of Kafka; `httpx` and `aiohttp` post the same bytes with a tuned shared client of
that library (candidates compared when choosing the adapter's client; aiohttp is not a dependency).
`--tree DIR` runs the adapter and the server from another checkout (e.g. an exported older
commit), so before and after can be measured in alternation in one sitting.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS_BEFORE = 4  # completed tool steps in the conversation each call sends

Call = Callable[[int], Awaitable[None]]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def start_server(tree: Path, scenarios: Path, loop: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "agentstream.doubles.scripted_model", "--port", "0", "--scenarios", str(scenarios)]
    if loop != "default":  # older trees have no --loop
        cmd += ["--loop", loop]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, cwd=tree)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("SCRIPTED_MODEL_READY "):
        proc.kill()
        raise SystemExit(f"scripted model server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def chat_request(index: int) -> Any:
    from agentstream.llm import ChatRequest, Message, ToolCall, ToolSpec

    messages = [Message("system", "You are a benchmark agent."), Message("user", f"[scenario:overhead] run {index}")]
    for step in range(STEPS_BEFORE):
        call = ToolCall(f"call_{step}_0", "calculator", json.dumps({"expression": f"{step} + 1"}))
        messages += [Message("assistant", "", tool_calls=(call,)), Message("tool", str(step + 1), tool_call_id=call.id)]
    calc = ToolSpec("calculator", "Evaluate an arithmetic expression", {"type": "object"})
    return ChatRequest(
        model="scripted", messages=tuple(messages), tools=(calc,), max_tokens=256, call_id=f"bench-{uuid.uuid4().hex}"
    )


async def provider_client(url: str, stream: bool) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from dataclasses import replace

    from agentstream.processors.model_invoker.providers import OpenAIChatProvider

    provider = OpenAIChatProvider(url, "sk-bench", timeout_s=30.0, stream=stream)
    base = chat_request(0)

    async def call(i: int) -> None:
        result = await provider.complete(replace(base, call_id=f"bench-{uuid.uuid4().hex}"))
        assert result.tool_calls, result

    return call, provider.aclose


async def invoker_client(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """The invoker's whole call path short of Kafka: event in, routing, adapter, events out."""
    from agentstream.config import ModelSettings
    from agentstream.events import LlmCallCompleted, LlmCallRequested
    from agentstream.llm import messages_to_json, tools_to_json
    from agentstream.processors.model_invoker.invoke import ModelInvoker
    from agentstream.processors.model_invoker.providers import RetryPolicy
    from agentstream.processors.model_invoker.router import ModelRouter
    from agentstream.processors.model_invoker.routes import RouteTable

    router = ModelRouter(RouteTable.from_env(ModelSettings(base_url=url), env={}), RetryPolicy())
    invoker = ModelInvoker(router)
    shape = chat_request(0)
    messages, tools = messages_to_json(shape.messages), tools_to_json(shape.tools)

    async def call(i: int) -> None:
        call_id = f"run_{i}/s0005/{uuid.uuid4().hex}"
        request = LlmCallRequested(
            event_id=f"{call_id}/requested", run_id=f"run_{i}", tenant_id="bench", step=5, call_id=call_id,
            model="scripted", messages_json=messages, tools_json=tools, max_tokens=256,
        )  # fmt: skip
        events = await invoker.perform(request)
        assert isinstance(events[-1], LlmCallCompleted), events

    return call, router.aclose


async def library_client(kind: str, url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    """The same request bytes and parsing as the adapter, over a tuned client of another library."""
    import orjson

    from agentstream.processors.model_invoker.providers import OpenAIChatProvider

    shape = OpenAIChatProvider(url, "sk-bench")
    base = chat_request(0)
    content = orjson.dumps({**shape._body(base), "stream": False})
    endpoint = url.rstrip("/") + "/v1/chat/completions"
    fixed = {"content-type": "application/json", "authorization": "Bearer sk-bench"}

    def check(raw: bytes) -> None:
        assert shape._parse(orjson.loads(raw), base, None).tool_calls

    if kind == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        hx = httpx.AsyncClient(timeout=30.0, limits=limits, headers=fixed)
        target = httpx.URL(endpoint)

        async def hx_call(i: int) -> None:
            r = await hx.post(target, content=content, headers={"idempotency-key": uuid.uuid4().hex})
            check(r.content)

        return hx_call, hx.aclose
    # Not a dependency of the project (only a candidate measured here): imported by name, untyped.
    try:
        aiohttp: Any = importlib.import_module("aiohttp")
        yarl: Any = importlib.import_module("yarl")
    except ImportError:
        raise SystemExit("--client aiohttp: aiohttp is not installed (it is not a dependency of the project)") from None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), headers=fixed, timeout=aiohttp.ClientTimeout(total=30)
    )
    yarl_url = yarl.URL(endpoint)

    async def aio_call(i: int) -> None:
        async with session.post(yarl_url, data=content, headers={"idempotency-key": uuid.uuid4().hex}) as r:
            check(await r.read())

    return aio_call, session.close


async def run_level(call: Call, concurrency: int, calls: int, server_pid: int) -> dict[str, Any]:
    async def worker(start: int, count: int) -> None:
        for i in range(count):
            await call(start + i)

    async def batch(total: int) -> None:
        per, extra = divmod(total, concurrency)
        await asyncio.gather(*(worker(w * per, per + (w < extra)) for w in range(concurrency)))

    await batch(max(concurrency * 2, 200))  # warm-up: connections open, code paths hot
    c0, s0, t0 = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
    await batch(calls)
    c1, s1, t1 = time.process_time(), cpu_seconds(server_pid), time.perf_counter()
    return {
        "concurrency": concurrency,
        "calls": calls,
        "client_cpu_us_per_call": round((c1 - c0) / calls * 1e6, 1),
        "server_cpu_us_per_call": round((s1 - s0) / calls * 1e6, 1),
        "calls_per_s": round(calls / (t1 - t0), 1),
    }


async def run(args: argparse.Namespace, url: str, server_pid: int) -> list[dict[str, Any]]:
    if args.client == "provider":
        call, close = await provider_client(url, args.stream)
    elif args.client == "invoker":
        call, close = await invoker_client(url)
    else:
        call, close = await library_client(args.client, url)
    try:
        return [await run_level(call, c, args.calls, server_pid) for c in args.concurrency]
    finally:
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", choices=["provider", "invoker", "httpx", "aiohttp"], default="provider")
    parser.add_argument("--stream", action="store_true", help="provider only: SSE streaming responses")
    parser.add_argument("--concurrency", default="1,200", help="comma-separated calls in flight")
    parser.add_argument("--calls", type=int, default=3000, help="measured calls per concurrency level")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose adapter and server are measured")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="the client's event loop")
    parser.add_argument("--server-loop", choices=["default", "asyncio", "uvloop"], default="default")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.stream and args.client != "provider":
        parser.error("--stream applies to --client provider only")
    tree = args.tree.resolve()
    sys.path.insert(0, str(tree))

    with tempfile.TemporaryDirectory(prefix="model-call-cpu-") as tmp:
        steps = [{"text": "", "tool_calls": [{"name": "calculator", "arguments": {"expression": "1 + 1"}}]}] * 9
        scenario = {"name": "overhead", "turns": [*steps, {"text": "done"}]}
        (Path(tmp) / "overhead.json").write_text(json.dumps(scenario))
        proc, url = start_server(tree, Path(tmp), args.server_loop)
        try:
            factory = None
            if args.loop == "uvloop":
                import uvloop

                factory = uvloop.new_event_loop
            with asyncio.Runner(loop_factory=factory) as runner:
                levels = runner.run(run(args, url, proc.pid))
        finally:
            proc.terminate()
            proc.wait(10)
    out = {
        "client": args.client,
        "stream": args.stream,
        "tree": str(tree),
        "loop": args.loop,
        "server_loop": args.server_loop,
        "levels": levels,
    }
    for level in levels:
        print(
            f"c={level['concurrency']:>4}  client {level['client_cpu_us_per_call']:>7.1f} us/call"
            f"  server {level['server_cpu_us_per_call']:>7.1f} us/call  {level['calls_per_s']:>8.1f} calls/s",
            file=sys.stderr,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
