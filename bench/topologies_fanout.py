"""Subagent fan-out through the real stack (issue 19): a parent run starts 8 subagents in one
step, each of which makes one 2 s tool call (`sleep_ms`) and answers.

    .venv/bin/python bench/topologies_fanout.py

  child_wall_s    one such child run alone, request to end (journal timestamps)
  parent_wall_s   the parent with its 8 children, request to end: children run in parallel, so
                  this stays near one child's time (at most 1.5x), not 8 of them
  parent_input_tokens_small_scratch / _large_scratch
                  the parent's own prompt tokens (its model calls' input tokens) when each child's
                  tool result is 1 KB and 100 KB: a parent reads only its children's condensed
                  answers, so the two differ by well under 5%

The bundled scenarios `fanout_small`/`fanout_large` (parents) and `fanout_child_small`/
`fanout_child_large` play the model. The last line printed is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream import ids
from agentstream.client.journal import JournalEntry, RunRequest
from agentstream.events import TERMINAL_TYPES, LlmCallCompleted, RunCompleted, ToolCallCompleted
from agentstream.stack import Deployment
from bench.common import bench_settings

CHILDREN = 8
TIMEOUT_S = 180.0


async def _run(d: Deployment, scenario: str, tools: list[str], max_steps: int) -> list[JournalEntry]:
    run_id = await d.client.request_run(
        RunRequest(task=f"[scenario:{scenario}] Gather the parts.", tools=tools, max_steps=max_steps)
    )
    entries = [e async for e in d.client.follow(run_id, timeout_s=TIMEOUT_S)]
    if not entries or not isinstance(entries[-1].event, RunCompleted):
        last = entries[-1].event if entries else None
        raise RuntimeError(f"{scenario}: run {run_id} did not complete: {last!r}")
    return entries


async def _check_scratch(d: Deployment, parent: list[JournalEntry], chars: int) -> None:
    """The comparison means something only if the children did read that much: one child's look."""
    spawn = next(e.event for e in parent if isinstance(e.event, ToolCallCompleted) and e.event.tool == "spawn_agent")
    child = [e.event async for e in d.client.follow(ids.child_run_id(spawn.call_id), timeout_s=TIMEOUT_S)]
    read = next(e for e in child if isinstance(e, ToolCallCompleted))
    if len(read.content) < chars and not read.result_blob:  # an offloaded result: the blob holds it whole
        raise RuntimeError(f"a child read {len(read.content)} characters, not {chars}")


def _wall_s(entries: list[JournalEntry]) -> float:
    end = next(e for e in entries if e.event.type_name in TERMINAL_TYPES)
    return (end.timestamp_ms - entries[0].timestamp_ms) / 1000.0


def _input_tokens(entries: list[JournalEntry]) -> int:
    return sum(e.event.input_tokens for e in entries if isinstance(e.event, LlmCallCompleted))


async def measure_fanout() -> dict[str, float]:
    async with bench_settings("fanout") as (settings, _):
        scenarios = settings.home / "scenarios"
        scenarios.mkdir(parents=True, exist_ok=True)  # the bundled scenarios are all it plays
        async with Deployment(settings, [scenarios], wait_tools=("sleep_ms", "spawn_agent")) as d:
            await _run(d, "fanout_child_small", ["sleep_ms"], 3)  # warm: first calls of every process
            child = await _run(d, "fanout_child_small", ["sleep_ms"], 3)
            parent_steps = CHILDREN * 3 + 2  # each child's 3 steps come out of the parent's
            small = await _run(d, "fanout_small", ["spawn_agent", "sleep_ms"], parent_steps)
            large = await _run(d, "fanout_large", ["spawn_agent", "sleep_ms"], parent_steps)
            await _check_scratch(d, large, 100_000)
    return {
        "parent_wall_s": round(_wall_s(small), 3),
        "child_wall_s": round(_wall_s(child), 3),
        "parent_input_tokens_small_scratch": float(_input_tokens(small)),
        "parent_input_tokens_large_scratch": float(_input_tokens(large)),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(measure_fanout())))
