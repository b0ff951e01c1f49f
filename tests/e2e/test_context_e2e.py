"""Context management through the whole stack: a context-faithful scripted model (it answers only
from what its prompt holds, or what it reads back) fetches 20-200 KB pages from a real MCP server
process, and is asked at the end for facts that sit in the first pages. With management on, old
pages are cleared to a preview and a handle, the model reads back the ones it needs with
`read_result`, and the run answers right with far fewer input tokens than with management off;
replay reproduces every prompt, `runs show` shows the compactions. A real broker, every processor
its own process."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from agentstream.cli.commands import show_run
from agentstream.client.journal import RunRequest
from agentstream.codec import AvroCodec
from agentstream.doubles import pages_server
from agentstream.events import (
    ContextCompacted,
    LlmCallCompleted,
    LlmCallRequested,
    RunCompleted,
    RunRequested,
    ToolCallRequested,
)
from agentstream.processors.tool_executor.discovery import discover
from agentstream.registry.admin import register_tool
from agentstream.stack import AUTO_APPROVE_DEMO, Deployment
from agentstream.tools.replay import replay_events
from tests.harness import isolated_settings

CODEC = AvroCodec()
PAGES = [f"p{i}" for i in range(1, 7)]
ASKED = PAGES[:2]  # the answers sit in the first pages, long cleared by the end
FACTS = pages_server.expected_facts(ASKED)
# A 20 KB briefing first: the task itself is offloaded, and the model can follow it only if the
# invoker gave it the whole text (its preview in the journal ends long before the PAGES line).
BRIEFING = "".join(f"briefing line {i:04d}: read every page before you answer.\n" for i in range(400))
TASK = "\n".join(["[scenario:faithful] research the pages, then answer", BRIEFING, f"PAGES: {','.join(PAGES)}",
                  *(f"QUESTION: {key}" for key in FACTS)])  # fmt: skip
ON = {"mode": "on", "trigger_tokens": 30_000, "keep_turns": 1}


@pytest.fixture(scope="module")
async def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    scenarios: dict[str, dict[str, Any]] = {"faithful": {"turns": [], "faithful": True}}
    settings, scenario_dir = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("ctx"), "ctx", scenarios)
    transport = {"kind": "stdio", "server": "pages", "command": sys.executable, "args": [pages_server.__file__]}
    for draft in await discover(transport):
        await register_tool(settings, dataclasses.replace(draft, tier="read_only"))
    async with Deployment(settings, [scenario_dir], policies=AUTO_APPROVE_DEMO) as d:
        yield d


async def research(d: Deployment, context: dict[str, Any] | None) -> list[Any]:
    run_id = await d.client.request_run(RunRequest(task=TASK, tools=["fetch_page"], max_steps=30, context=context))
    return [e.event async for e in d.client.follow(run_id, timeout_s=180)]


def answer(facts: dict[str, str]) -> str:
    return "ANSWERS: " + "; ".join(f"{k} = {v}" for k, v in facts.items())


async def test_cleared_pages_are_read_back_and_the_run_answers_with_fewer_tokens(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    d = deployment
    on = await research(d, ON)
    assert isinstance(on[-1], RunCompleted), on[-1]
    assert on[-1].final_answer == answer(FACTS), on[-1].final_answer
    compactions = [e for e in on if isinstance(e, ContextCompacted)]
    assert compactions and all(c.tokens_after < c.tokens_before for c in compactions), compactions
    requested = next(e for e in on if isinstance(e, RunRequested))
    assert requested.task_blob and "PAGES:" not in requested.task and len(CODEC.encode(requested)) < 4096
    cleared = {h for c in compactions for h in orjson.loads(c.cleared_json)}
    reads = [e for e in on if isinstance(e, ToolCallRequested) and e.tool == "read_result"]
    assert reads and {orjson.loads(r.arguments_json)["handle"] for r in reads} <= cleared, reads
    for request in (e for e in on if isinstance(e, LlmCallRequested)):
        assert len(CODEC.encode(request)) < 32 * 1024, len(CODEC.encode(request))  # previews, not pages
    replay = replay_events([e.event for e in await d.client.read_run(on[-1].run_id)])
    assert replay.deterministic, replay.divergences

    off = await research(d, None)
    assert isinstance(off[-1], RunCompleted) and off[-1].final_answer == on[-1].final_answer, off[-1]
    tokens_on = sum(e.input_tokens for e in on if isinstance(e, LlmCallCompleted))
    tokens_off = sum(e.input_tokens for e in off if isinstance(e, LlmCallCompleted))
    assert tokens_on < tokens_off * 0.7, (tokens_on, tokens_off)
    peak_on = max(e.input_tokens for e in on if isinstance(e, LlmCallCompleted))
    peak_off = max(e.input_tokens for e in off if isinstance(e, LlmCallCompleted))
    assert peak_on < peak_off / 2, (peak_on, peak_off)

    capsys.readouterr()
    assert await show_run(d.settings, on[-1].run_id) == 0
    shown = capsys.readouterr().out
    assert "context compacted #1 (clear)" in shown, shown
    assert d.procs is not None and d.procs.crashed() == []
