"""An executor SIGKILLed while tool calls are in flight, on the real broker with every processor
its own OS process: the call of a tool declared idempotent is driven again (same idempotency key),
the call of one that is not comes back as an error observation and never runs a second time."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agentstream.client.journal import RunRequest
from agentstream.events import RunCompleted, ToolCallCompleted
from agentstream.registry.admin import register_tool
from agentstream.registry.entry import ToolEntry
from agentstream.stack import Deployment
from tests.harness import isolated_settings

SERVER = Path(__file__).parents[1] / "fixtures" / "effect_mcp_server.py"
CALLS = {"tool_calls": [{"name": "charge", "arguments": {"tag": "t1"}},
                        {"name": "charge_keyed", "arguments": {"tag": "t1"}}]}  # fmt: skip
SCENARIOS: dict[str, dict[str, Any]] = {"charge": {"turns": [CALLS, {"text": "charged, or told why not"}]}}
SCHEMA = {"type": "object", "properties": {"tag": {"type": "string"}}, "required": ["tag"]}


async def effect_recorder(log: Path) -> asyncio.Server:
    """Appends each effect line the tool sends to `log`; answers whether it was the line's first."""

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.read()).decode()
        first = line not in (log.read_text().splitlines(keepends=True) if log.exists() else [])
        with log.open("a", encoding="utf-8") as out:
            out.write(line)
        writer.write(b"1" if first else b"0")
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(record, log.with_suffix(".sock"))
    log.with_suffix(".sock").chmod(0o777)  # the sandboxed tool runs as another, unprivileged uid
    return server


async def wait_for_lines(log: Path, count: int, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= count:
            return lines
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{log} never reached {count} lines")


async def test_a_crash_mid_call_reruns_only_the_idempotent_tool(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("tool-crash")
    settings, scenarios = await isolated_settings(kafka_bootstrap, home, "tc", SCENARIOS)
    log = home / "effects.log"  # outside the platform's home, which the sandbox hides
    recorder = await effect_recorder(log)
    transport = {"kind": "stdio", "server": "effects", "command": sys.executable,
                 "args": [str(SERVER), str(log.with_suffix(".sock"))]}  # fmt: skip
    for name, idempotent in (("charge", False), ("charge_keyed", True)):
        # Reversible: allowed without a person, and (unlike read-only) a tier whose effect matters.
        await register_tool(settings, ToolEntry(name=name, description=name, input_schema=SCHEMA, tier="reversible",
                                                transport=transport, idempotent=idempotent, timeout_ms=180_000))  # fmt: skip

    async with Deployment(settings, [scenarios]) as d:
        assert d.procs is not None
        run_id = await d.client.request_run(
            RunRequest(task="[scenario:charge] charge it", tools=["charge", "charge_keyed"])
        )
        assert sorted(await wait_for_lines(log, 2, timeout_s=90)) == ["charge t1", "charge_keyed t1"]
        d.procs.kill("tool-executor-0")  # SIGKILL while both effects are in flight
        d.procs.restart("tool-executor-0")
        entries = [e async for e in d.client.follow(run_id, timeout_s=120)]
    recorder.close()

    assert isinstance(entries[-1].event, RunCompleted), entries[-1].event
    results = {e.event.tool: e.event for e in entries if isinstance(e.event, ToolCallCompleted)}
    assert results["charge"].is_error and "not retried (non-idempotent)" in results["charge"].content
    assert "may have run before a crash" in results["charge"].content
    assert not results["charge_keyed"].is_error and results["charge_keyed"].content == "charge_keyed done for t1"
    # The effect log is the ground truth: the idempotent tool ran twice (its key dedupes it), the
    # other exactly once.
    assert sorted(log.read_text().splitlines()) == ["charge t1", "charge_keyed t1", "charge_keyed t1"]
