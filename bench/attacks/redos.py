"""Attacks through tenant JSON Schemas and open event streams (issue 13, finding 5 and part of 9).
Each returns True when the attack SUCCEEDED.

* `backtracking_pattern`: a tenant registers a tool whose `pattern` backtracks catastrophically in
  Python `re` (`^(a|a)*$`) and has its model call it with "a"*40+"!". It succeeds if validating
  that call takes 100 ms or more (measured in a child process, which is killed after 10 s), if the
  call is not refused, or if another tenant's runs stop finishing meanwhile.
* `smuggled_schema`: the same schema (or one only a backtracking engine accepts) written straight
  to tools.catalog with the admin's credentials, past registration, as a compromised registration
  path would. It succeeds if other tenants' runs stall, also after the orchestrator and the gate are
  restarted with their state wiped (a poison pill is replayed from the journal).
* `refused_schema`: registration of a schema that must be refused (a pattern only a backtracking
  engine runs, too large, too deep, a remote `$ref`): it succeeds if registration accepts it.
* `version_flood` / `smuggled_version_flood`: more tool versions than a tool or a tenant may have,
  through the API or written straight to tools.catalog: it succeeds if the registry holds them.
* `stream_outlives_halt` / `stream_outlives_revocation`: an event stream that stays open on a
  halted run, or after its key is revoked, past the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.events import RunEvent, ToolCallRequested
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.kafka.table import put_record
from agentstream.registry.entry import ToolEntry
from agentstream.registry.reader import CatalogReader
from agentstream.stack import Deployment
from agentstream.tenancy.admin import issue_key, revoke_key
from agentstream.tenancy.keys import parse_key
from agentstream.topics import CATALOG, load_topics

EVIL_INPUT = "a" * 40 + "!"
BACKTRACKING = "^(a|a)*$"  # linear on RE2; exponential on a backtracking engine
BACKTRACKING_ONLY = "^(a|a)*(?!b)$"  # lookahead: RE2 refuses it, Python `re` backtracks on it
# The caps the platform enforces (agentstream.registry.catalog); spelled out so that this module
# also runs against a version of the platform without them.
MAX_VERSIONS_PER_TOOL = 50
MAX_VERSIONS_PER_TENANT = 500
FAST_S = 0.1

SCENARIOS: dict[str, dict[str, Any]] = {
    "redos-matcher": {"turns": [{"tool_calls": [{"name": "matcher", "arguments": {"s": EVIL_INPUT}}]}, {"text": "done"}]},
    "redos-smuggled": {"turns": [{"tool_calls": [{"name": "smuggled", "arguments": {"s": EVIL_INPUT}}]}, {"text": "done"}]},
    "redos-smuggled-re2": {"turns": [{"tool_calls": [{"name": "smuggled_re2", "arguments": {"s": EVIL_INPUT}}]}, {"text": "done"}]},
    "bystander": {"turns": [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "2 + 2"}}]}, {"text": "four"}]},
    "forever": {"turns": [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1 + 1"}}]}], "repeat_last": True},
    "slow": {"turns": [{"delay_ms": 60_000, "text": "late"}]},
}  # fmt: skip


@dataclass
class RedosTarget:
    settings: Settings  # the admin's: what a compromised registration path would hold
    deployment: Deployment
    url: str  # the gateway
    evil_key: str  # tenant `evil`, the attacker
    good_key: str  # tenant `good`, a bystander whose runs must keep finishing
    good: str = "good"
    bound_s: float = 60.0  # a bystander's run finishes within this while an attack runs
    stream_bound_s: float = 15.0  # a stream closes within this after its run halts or its key dies

    def client(self, key: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def schema(pattern: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}, "required": ["s"]}


def tool_body(name: str, input_schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "description": description, "input_schema": input_schema, "tier": "read_only",
            "command": [sys.executable, "-c", "pass"]}  # fmt: skip


async def register(t: RedosTarget, body: dict[str, Any]) -> httpx.Response:
    async with t.client(t.evil_key) as c:
        return await c.post("/v1/tools", json=body)


# -- the measurement of validation alone, in a child process (a hang there is killed) ---------------

_MEASURE = """
import sys, time, orjson
from agentstream.llm import ToolCall, ToolSpec
from agentstream.registry.entry import TenantPolicy, ToolEntry
from agentstream.processors.orchestrator.validation import validate_call
from agentstream.processors.policy_gate.rules import evaluate
schema, arguments = orjson.loads(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
error = validate_call(ToolCall("c1", "t", arguments), {"t": ToolSpec("t", "", schema)})
orchestrator = time.perf_counter() - start
entry = ToolEntry("t", "", schema, "read_only", {"kind": "builtin"}, owner="evil")
start = time.perf_counter()
verdict = evaluate("t", arguments, entry, None, TenantPolicy(), 0)
gate = time.perf_counter() - start
print(orjson.dumps({"refused": error is not None, "orchestrator_s": orchestrator,
                    "gate": verdict.decision, "gate_s": gate}).decode())
"""


async def validation_timing(
    input_schema: dict[str, Any], arguments: dict[str, Any], limit_s: float = 10.0
) -> dict[str, Any] | None:
    """How the orchestrator's and the gate's validation treat one call; None if it ran past `limit_s`."""
    return await _child_json(_MEASURE, [orjson.dumps(input_schema).decode(), orjson.dumps(arguments).decode()], limit_s)


async def _child_json(code: str, args: list[str], limit_s: float) -> dict[str, Any] | None:
    """Runs `code` in a child Python (killed past `limit_s`: a backtracking pattern cannot stall the
    bench) and returns the JSON object on its last line; None if it ran out of time."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return result


_CALL_HOSTILE_SERVER = """
import asyncio, sys, time, orjson
from agentstream.processors.tool_executor.mcp_host import McpServerConfig, McpToolHost
async def main():
    host = McpToolHost(McpServerConfig(name="hostile", command=sys.executable, args=[sys.argv[1]]))
    await host.start()
    start = time.perf_counter()
    result = await host.call("echo", {"text": sys.argv[2]}, idempotency_key="redos", timeout_s=30)
    print(orjson.dumps({"is_error": result.is_error, "content": result.content,
                        "took_s": time.perf_counter() - start}).decode(), flush=True)
    await host.aclose()
asyncio.run(main())
"""
HOSTILE_OUTPUT_SERVER = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "hostile_output_mcp_server.py"


async def hostile_output_schema(limit_s: float = 30.0) -> bool:
    """A tool server declares an `outputSchema` whose pattern backtracks on the result it returns;
    the MCP client validates every structured result inside the executor. Run in a child process
    (killed past `limit_s`): True if the call hangs there or its result is accepted."""
    result = await _child_json(_CALL_HOSTILE_SERVER, [str(HOSTILE_OUTPUT_SERVER), EVIL_INPUT], limit_s)
    if result is None:
        return True
    return not result["is_error"] or "does not match" not in result["content"] or result["took_s"] > 5.0


# -- against the running stack -----------------------------------------------------------------------


async def _start(c: httpx.AsyncClient, task: str, max_steps: int = 5) -> str:
    r = await c.post(
        "/v1/runs", json={"task": task, "max_steps": max_steps}, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    if r.status_code not in (200, 201):
        raise AssertionError(f"could not start a run: {r.status_code} {r.text}")
    return str(r.json()["id"])


async def until_known(c: httpx.AsyncClient, timeout_s: float = 15.0) -> None:
    """Until the gateway's tenant directory has read the client's (freshly issued) key."""
    deadline = time.monotonic() + timeout_s
    while (await c.get("/v1/tools")).status_code == 401:
        if time.monotonic() > deadline:
            raise AssertionError("the gateway never learned of the key")
        await asyncio.sleep(0.1)


async def _status_within(c: httpx.AsyncClient, run_id: str, statuses: tuple[str, ...], timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str((await c.get(f"/v1/runs/{run_id}")).json()["status"])
        if status in statuses:
            return status
        await asyncio.sleep(0.2)
    return None


async def _journal(t: RedosTarget, run_id: str) -> list[RunEvent]:
    return [entry.event for entry in await t.deployment.client.read_run(run_id)]


async def bystanders_stall(t: RedosTarget, evil_task: str | None, runs: int = 3) -> bool:
    """Starts the attacker's run (if any), then `runs` bystander runs of another tenant: True if a
    bystander does not complete within the bound, or if the attacker's call was let through."""
    async with t.client(t.evil_key) as evil, t.client(t.good_key) as good:
        evil_run = await _start(evil, evil_task) if evil_task else None
        bystanders = [await _start(good, "[scenario:bystander] add") for _ in range(runs)]
        done = await asyncio.gather(*(_status_within(good, r, ("completed",), t.bound_s) for r in bystanders))
        if any(status is None for status in done):
            return True
        if evil_run is not None:
            if await _status_within(evil, evil_run, ("completed", "failed"), t.bound_s) is None:
                return True
            # The argument cannot match the pattern: a requested call means validation was skipped.
            return any(isinstance(e, ToolCallRequested) for e in await _journal(t, evil_run))
    return False


async def backtracking_pattern(t: RedosTarget) -> bool:
    r = await register(t, tool_body("matcher", schema(BACKTRACKING)))
    if r.status_code == 422:
        return False  # refused at registration: nothing a call could run
    if r.status_code != 201:
        raise AssertionError(f"unexpected answer to the registration: {r.status_code} {r.text}")
    timing = await validation_timing(schema(BACKTRACKING), {"s": EVIL_INPUT})
    if timing is None or not timing["refused"] or timing["gate"] != "deny":
        return True
    if timing["orchestrator_s"] >= FAST_S or timing["gate_s"] >= FAST_S:
        return True
    return await bystanders_stall(t, "[scenario:redos-matcher] match")


async def smuggle_tool(
    settings: Settings, owner: str, name: str, input_schema: dict[str, Any], version: str = "1"
) -> None:
    """Writes a tool version straight to tools.catalog, as a registration path that skipped the checks would."""
    entry = ToolEntry(name, "smuggled past registration", input_schema, "read_only",
                      {"kind": "stdio", "server": name, "command": sys.executable, "args": ["-c", "pass"]},
                      owner=owner, version=version, registered_ms=int(time.time() * 1000))  # fmt: skip
    await put_record(settings, load_topics(settings.topic_prefix)[CATALOG].name, entry.to_event())


async def _until_in_catalog(settings: Settings, owner: str, name: str, timeout_s: float = 30.0) -> None:
    async with CatalogReader(settings) as reader:
        deadline = time.monotonic() + timeout_s
        while reader.catalog.latest(owner, name) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the smuggled tool {name} never reached the catalog")
            await asyncio.sleep(0.2)
            await reader.catch_up()
    await asyncio.sleep(2.0)  # the processors' own catalog readers poll at their pace


def _restart_wiped(t: RedosTarget, names: tuple[str, ...] = ("orchestrator", "policy-gate")) -> None:
    """Kills the processors and deletes their state: each replays its partitions from the journal's start."""
    procs = t.deployment.procs
    assert procs is not None
    for name in names:
        procs.kill(f"{name}-0")
        shutil.rmtree(t.settings.state_dir / f"{name}-0", ignore_errors=True)
        procs.start(name)


async def smuggled_schema(t: RedosTarget, pattern: str = BACKTRACKING_ONLY, *, restart: bool = True) -> bool:
    name, scenario = (
        ("smuggled", "redos-smuggled") if pattern == BACKTRACKING_ONLY else ("smuggled_re2", "redos-smuggled-re2")
    )
    await smuggle_tool(t.settings, "evil", name, schema(pattern))
    await _until_in_catalog(t.settings, "evil", name)
    if await bystanders_stall(t, f"[scenario:{scenario}] match"):
        return True
    if not restart:
        return False
    _restart_wiped(t)  # the poison is in the journal now: a replay must not hang on it either
    return await bystanders_stall(t, None)


async def refused_schema(t: RedosTarget, input_schema: dict[str, Any]) -> bool:
    r = await register(t, tool_body(f"refused_{uuid.uuid4().hex[:6]}", input_schema))
    return r.status_code != 422


def too_large() -> dict[str, Any]:
    properties = {f"field_{i:04d}": {"type": "string", "description": "x" * 200} for i in range(200)}
    return {"type": "object", "properties": properties}


def too_deep(levels: int = 40) -> dict[str, Any]:
    root: dict[str, Any] = {"type": "object"}
    node = root
    for _ in range(levels):
        child: dict[str, Any] = {"type": "object"}
        node["properties"] = {"x": child}
        node = child
    return root


async def version_flood(t: RedosTarget, versions: int = MAX_VERSIONS_PER_TOOL + 1, name: str = "") -> bool:
    """Registers `versions` distinct versions of one tool through the API: True if all are accepted."""
    name = name or f"flood_{uuid.uuid4().hex[:6]}"
    for i in range(versions):
        r = await register(t, tool_body(name, {"type": "object"}, description=f"version {i}"))
        if r.status_code == 422:
            return False
        if r.status_code != 201:
            raise AssertionError(f"unexpected answer to the registration: {r.status_code} {r.text}")
    return True


async def smuggled_version_flood(t: RedosTarget, owner: str = "flood", extra: int = 20) -> bool:
    """Writes more tool versions than a tenant may have straight to tools.catalog: True if a fresh
    projection of the registry (what every process holds) keeps more than the cap."""
    topic = load_topics(t.settings.topic_prefix)[CATALOG].name
    factory = RecordFactory(AvroCodec(), topic, 1)
    producer = AsyncProducer(producer_config(t.settings.bootstrap_servers, t.settings.kafka_extra))
    try:
        for i in range(MAX_VERSIONS_PER_TENANT + extra):
            entry = ToolEntry(f"t{i:04d}", "", {"type": "object"}, "read_only", {"kind": "builtin"}, owner=owner)
            record = factory.keyed(topic, entry.to_event())
            await producer.send(record.topic, record.value, key=record.key, headers=record.headers)
    finally:
        await producer.aclose()
    async with CatalogReader(t.settings) as reader:
        held = sum(len(v) for (o, _), v in reader.catalog.versions.items() if o == owner)
    return held > MAX_VERSIONS_PER_TENANT


# -- event streams ----------------------------------------------------------------------------------


async def _stream_closes(
    c: httpx.AsyncClient, run_id: str, timeout_s: float, opened: asyncio.Event, seen: bytearray | None = None
) -> bool:
    """Whether the run's event stream is closed by the server within `timeout_s` (what it sent goes in `seen`)."""

    async def read() -> None:
        async with c.stream("GET", f"/v1/runs/{run_id}/events") as s:
            opened.set()
            async for chunk in s.aiter_raw():
                if seen is not None:
                    seen.extend(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except TimeoutError:
        return False
    return True


async def stream_outlives_halt(t: RedosTarget) -> bool:
    async with t.client(t.good_key) as c:
        run_id = await _start(c, "[scenario:forever] spin", max_steps=2)
        seen = bytearray()
        closed = await _stream_closes(c, run_id, t.bound_s, asyncio.Event(), seen)
        status = await _status_within(c, run_id, ("halted",), 5.0)
        if status != "halted":
            raise AssertionError(f"the run was meant to halt at its step cap, not end {status}")
        # The client must see the end: the halt is among what the stream sent before it closed.
        # Not necessarily last: the governor settles the last call's cost from the same tool
        # result the orchestrator halts on, and in separate processes either may be journaled
        # first; a settlement that lands after the halt and before the close is sent as well.
        events = [line for line in bytes(seen).split(b"\n") if line.startswith(b"event: ")]
        return not closed or b"event: RunHalted" not in events


async def stream_outlives_revocation(t: RedosTarget) -> bool:
    key = await issue_key(t.settings, t.good, "revoked-mid-stream")
    async with t.client(key) as c:
        await until_known(c)
        run_id = await _start(c, "[scenario:slow] wait")
        opened = asyncio.Event()
        reading = asyncio.create_task(_stream_closes(c, run_id, t.bound_s, opened))
        await asyncio.wait_for(opened.wait(), 30)
        await asyncio.sleep(1.0)
        key_id = parse_key(key)
        assert key_id is not None
        await revoke_key(t.settings, key_id)
        revoked_at = time.monotonic()
        closed = await reading
        took = time.monotonic() - revoked_at
    async with t.client(t.good_key) as other:  # the revoked key could not cancel it
        with contextlib.suppress(httpx.HTTPError):
            await other.post(f"/v1/runs/{run_id}/cancel", json={"reason": "test over"})
    return not closed or took > t.stream_bound_s
