"""Long-term memory through the whole stack (issue 17): a run of tenant acme researches with tool
steps and writes what it learned to `/memories`; a later acme run reads the file back with
`memory_view` and answers at once, in fewer steps; a globex run with the very same script finds
nothing, and nothing acme wrote reaches globex's journal. Bad paths are error observations the run
goes on from, and `agentstream memory export` holds the file for acme only. A real broker, every
processor its own process, scripted model turns (the memory content is asserted where the real
tool returned it: run 2's memory_view completion)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from agentstream.cli.memory import memory_command
from agentstream.client.journal import RunRequest
from agentstream.codec import AvroCodec
from agentstream.events import LlmCallCompleted, LlmCallRequested, RunCompleted, ToolCallCompleted, ToolCallRequested
from agentstream.stack import Deployment
from tests.harness import isolated_settings

CODEC = AvroCodec()
PATH = "/memories/kafka-sizing.md"
FACT_LINE = "FACT orders_topic_partitions = 41"
NOTE = f"{FACT_LINE}\nwhy: 12 consumers x 3 partitions each + 5 spare (calculator), KRaft controllers: 3\n"


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


SCENARIOS: dict[str, dict[str, Any]] = {
    "learn": {"turns": [
        {"text": "Reading up first.", "tool_calls": [call("lookup", topic="kafka"), call("lookup", topic="kraft")]},
        {"text": "Sizing it.", "tool_calls": [call("calculator", expression="12 * 3 + 5")]},
        # A careless first try: both refused by the tool, and the run goes on.
        {"tool_calls": [call("memory", command="create", path="/memories/../escape.md", file_text=NOTE),
                        call("memory_view", command="view", path="/etc/passwd")]},
        {"text": "Noting it for next time.", "tool_calls": [call("memory", command="create", path=PATH, file_text=NOTE)]},
        {"text": "The orders topic needs 41 partitions (noted in memory)."},
    ]},
    # Run 2's answer is scripted: what it learnt is asserted in its memory_view's completion.
    "recall": {"turns": [
        {"text": "Checking memory first.", "tool_calls": [call("memory_view", command="view", path=PATH)]},
        {"text": "Answered from what memory holds."},
    ]},
}  # fmt: skip


@pytest.fixture(scope="module")
async def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    settings, scenario_dir = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("mem"), "mem", SCENARIOS)
    wait = ("calculator", "lookup", "memory", "memory_view")
    async with Deployment(settings, [scenario_dir], wait_tools=wait) as d:
        yield d


async def run(d: Deployment, tenant: str, scenario: str, tools: list[str]) -> list[Any]:
    request = RunRequest(task=f"[scenario:{scenario}] how many partitions does the orders topic need?",
                         tools=tools, max_steps=10, tenant_id=tenant)  # fmt: skip
    run_id = await d.client.request_run(request)
    return [e.event async for e in d.client.follow(run_id, timeout_s=60)]


def completions(events: list[Any], tool: str) -> list[ToolCallCompleted]:
    return [e for e in events if isinstance(e, ToolCallCompleted) and e.tool == tool]


async def export(d: Deployment, tenant: str, capsys: pytest.CaptureFixture[str]) -> Any:
    capsys.readouterr()
    assert await memory_command(d.settings, argparse.Namespace(memory_command="export", tenant=tenant, out=None)) == 0
    return orjson.loads(capsys.readouterr().out)


async def test_a_tenant_recalls_what_an_earlier_run_learned_and_another_tenant_sees_none_of_it(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    d = deployment
    learn = await run(d, "acme", "learn", ["lookup", "calculator", "memory", "memory_view"])
    assert isinstance(learn[-1], RunCompleted), learn[-1]
    assert [c.content for c in completions(learn, "calculator")] == ["41"]
    bad_write, written = completions(learn, "memory")
    (bad_view,) = completions(learn, "memory_view")
    assert bad_write.is_error and "'..'" in bad_write.content and bad_write.content.startswith("memory:"), bad_write
    assert bad_view.is_error and "'/etc/passwd' is outside /memories" in bad_view.content, bad_view
    assert not written.is_error and written.content == f"File created successfully at: {PATH}", written

    recall, other = await asyncio.gather(run(d, "acme", "recall", ["memory_view"]),
                                         run(d, "globex", "recall", ["memory_view"]))  # fmt: skip
    assert isinstance(recall[-1], RunCompleted) and isinstance(other[-1], RunCompleted), (recall[-1], other[-1])
    steps = {name: sum(isinstance(e, LlmCallCompleted) for e in events) for name, events in
             (("learn", learn), ("recall", recall))}  # fmt: skip
    assert steps["recall"] < steps["learn"] and recall[-1].steps < learn[-1].steps, (steps, recall[-1], learn[-1])
    # Run 2 did no research: its only tool call read memory, and memory held what run 1 wrote.
    assert {e.tool for e in recall if isinstance(e, ToolCallRequested)} == {"memory_view"}
    (seen,) = completions(recall, "memory_view")
    assert not seen.is_error and f"with line numbers:\n     1\t{FACT_LINE}\n" in seen.content, seen.content
    answering = [e for e in recall if isinstance(e, LlmCallRequested)][-1]  # the model was given it
    assert FACT_LINE in "".join(m.get("content") or "" for m in orjson.loads(answering.messages_json))
    (missing,) = completions(other, "memory_view")
    assert missing.is_error and missing.content.startswith(f"memory_view: {PATH} does not exist"), missing
    # Not in any event of globex's run, prompts and the model's answers included.
    journal = b"".join(CODEC.encode(e) for e in other)
    assert b"orders_topic_partitions" not in journal and b"12 consumers" not in journal
    assert b"orders_topic_partitions" in b"".join(CODEC.encode(e) for e in recall)  # the scan would see it

    assert await export(d, "acme", capsys) == {PATH: NOTE}
    assert await export(d, "globex", capsys) == {}
    assert d.procs is not None and d.procs.crashed() == []
