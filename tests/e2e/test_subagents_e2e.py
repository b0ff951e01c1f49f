"""Subagents through the whole stack (issue 19): a parent run starts three subagents in one step
(the bundled `subagents_parent` scenario), each a run of its own that reads a note with its own
tool and answers; the parent gets their condensed answers as its spawn_agent results, never what
they read, and its budget carries their spend. A real broker, every processor its own process."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from agentstream import ids
from agentstream.client.journal import RunBudget, RunRequest
from agentstream.events import (
    TERMINAL_TYPES,
    BudgetReserved,
    BudgetSettled,
    LlmCallRequested,
    RunCompleted,
    RunStarted,
    ToolCallCompleted,
)
from agentstream.stack import Deployment
from tests.harness import isolated_settings


@pytest.fixture(scope="module")
async def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    settings, scenario_dir = await isolated_settings(kafka_bootstrap, tmp_path_factory.mktemp("sub"), "sub")
    async with Deployment(settings, [scenario_dir], wait_tools=("lookup", "spawn_agent")) as d:
        yield d


async def events_of(d: Deployment, run_id: str) -> list[Any]:
    return [e.event async for e in d.client.follow(run_id, timeout_s=90)]


async def test_a_parent_starts_three_subagents_at_once_and_reads_their_condensed_answers(
    deployment: Deployment,
) -> None:
    d = deployment
    request = RunRequest(task="[scenario:subagents_parent] Summarize the notes on kafka, kraft and avro.",
                         tools=["spawn_agent", "lookup"], max_steps=12, budget=RunBudget(usd=1.0))  # fmt: skip
    parent = await d.client.request_run(request)
    events = await events_of(d, parent)
    assert isinstance(events[-1], RunCompleted), events[-1]
    results = [e for e in events if isinstance(e, ToolCallCompleted) and e.tool == "spawn_agent"]
    assert len(results) == 3 and not any(r.is_error for r in results), results
    assert all(r.content == "Subagent summary: the note was read and condensed to this line." for r in results)
    for result in results:
        child = ids.child_run_id(result.call_id)
        child_events = await events_of(d, child)
        (started,) = [e for e in child_events if isinstance(e, RunStarted)]
        assert [t["name"] for t in _tools(started)] == ["lookup"]  # only what the parent handed it
        (read,) = [e for e in child_events if isinstance(e, ToolCallCompleted)]
        assert "distributed, partitioned" in read.content and isinstance(child_events[-1], RunCompleted)
        first = next(e for e in child_events if isinstance(e, LlmCallRequested))
        assert "Summarize the notes" not in first.messages_json  # its context: only its own task
    # The parent's last prompt holds the three answers, and nothing the children read.
    last = [e for e in events if isinstance(e, LlmCallRequested)][-1]
    assert (
        last.messages_json.count("condensed to this line") == 3 and "distributed, partitioned" not in last.messages_json
    )
    # Each child's budget was reserved on the parent's ledger and settled at the child's spend.
    carved = [e for e in events if isinstance(e, BudgetReserved) and e.kind == "subagent"]
    assert len(carved) == 3 and all(0 < c.reserved_usd <= 1.0 for c in carved)
    settled: list[BudgetSettled] = []

    def three_settled(event: Any) -> bool:  # they may land just after the parent's end
        if isinstance(event, BudgetSettled) and event.kind == "subagent":
            settled.append(event)
        return len(settled) == 3

    _ = [e async for e in d.client.follow(parent, timeout_s=60, until=three_settled)]
    assert {s.call_id for s in settled} == {r.call_id for r in results} and all(s.cost_usd > 0 for s in settled)
    assert d.procs is not None and d.procs.crashed() == []


def _tools(started: RunStarted) -> list[dict[str, Any]]:
    loaded = orjson.loads(started.tools_json)
    assert isinstance(loaded, list)
    return loaded


async def test_an_orchestrator_killed_while_children_run_loses_nothing_and_starts_no_child_twice(
    deployment: Deployment,
) -> None:
    d = deployment
    assert d.procs is not None
    parent = await d.client.request_run(RunRequest(task="[scenario:subagents_slow_parent] go",
                                                   tools=["spawn_agent", "sleep_ms"], max_steps=12))  # fmt: skip
    children: list[str] = []
    async for entry in d.client.follow(parent, timeout_s=60, until=lambda e: isinstance(e, BudgetReserved)
                                       and e.kind == "subagent" and e.call_id.endswith("tool02")):  # fmt: skip
        if isinstance(entry.event, BudgetReserved) and entry.event.kind == "subagent":
            children.append(ids.child_run_id(entry.event.call_id))
    # The children are being started or are waiting on their 2 s tool calls: kill the orchestrator.
    d.procs.kill("orchestrator-0", signal.SIGKILL)
    d.procs.restart("orchestrator-0")
    events = await events_of(d, parent)
    assert isinstance(events[-1], RunCompleted), events[-1]
    results = [e for e in events if isinstance(e, ToolCallCompleted) and e.tool == "spawn_agent"]
    assert len(results) == 3 and all(r.content == "Part done: the data arrived." for r in results), results
    for child in children:
        journal = [e.event for e in await d.client.read_run(child)]
        assert sum(isinstance(e, RunStarted) for e in journal) == 1  # one run, however often re-requested
        assert sum(isinstance(e, ToolCallCompleted) for e in journal) == 1
        assert [e.type_name for e in journal if e.type_name in TERMINAL_TYPES] == ["RunCompleted"]
