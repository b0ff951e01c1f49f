"""Explicit graphs through the real stack: a 12-node workflow (a branch, an approval node, a
parallel fan-out of three calls and their join) run 100 times, half down each side of its branch,
and ReAct runs in the same sitting to compare the platform's overhead.

    .venv/bin/python bench/topologies_graph.py [--runs 100] [--react-steps 6]

A node's overhead is measured as a ReAct step's is (bench/step_overhead.py): from the node's
request to the next request it leads to (or the run's end), less its own model latency or tool
duration as the journal records them; only nodes whose answer is what the next request waited for
count (a fan-out branch that was not the last to arrive waited on a sibling, not the platform).
A ReAct step is a model call and the tool call it asks for (two hops); a graph node is one. The
approval node's calls are approved by the tenant's policy (auto_approve), so no person's time is
in it; the gate still decides and journals it. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream.client.journal import RunRequest
from agentstream.client.scan import read_journal
from agentstream.events import (
    LlmCallCompleted,
    LlmCallRequested,
    RunCompleted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.registry.admin import read_catalog
from agentstream.registry.entry import TenantPolicy
from agentstream.stack import Deployment
from agentstream.workflows.book import register_workflow
from agentstream.workflows.definition import EXAMPLES
from bench.common import bench_settings, percentile, step_overheads
from bench.scenarios import overhead_scenario, write_scenarios
from bench.watch import TerminalWatcher

WORKFLOW = EXAMPLES / "ticket_triage.json"  # 12 nodes: the graph docs/topologies.md shows
VALID_PATHS = {
    "graph-high": "workflow path: classify route>review review escalate checks price assign note merge summarize close",
    "graph-low": "workflow path: classify route>quick quick checks price assign note merge summarize close",
}
SCENARIOS = [
    {"name": "graph-high", "turns": [{"text": "4"}], "repeat_last": True},  # severe: the approval side
    {"name": "graph-low", "turns": [{"text": "1"}], "repeat_last": True},
]
POLICY = TenantPolicy(auto_approve=("request_approval",))
REQUESTS = (LlmCallRequested, ToolCallRequested)


def node_overheads(entries: list[Any]) -> list[float]:
    """Per node of one graph run: (next request or the end) - (its request) - its own work."""
    requested: dict[str, int] = {}
    out: list[float] = []
    pending: list[tuple[int, float]] = []  # answered nodes not yet followed: (request time, own work)
    for entry in entries:
        event = entry.event
        if isinstance(event, REQUESTS):
            requested.setdefault(event.call_id, entry.timestamp_ms)
        if isinstance(event, (*REQUESTS, RunCompleted)) and pending:
            start, work = pending[-1]  # the last answer is what this request waited for
            out.append(entry.timestamp_ms - start - work)
            pending.clear()
        if isinstance(event, LlmCallCompleted) and event.call_id in requested:
            pending.append((requested[event.call_id], event.latency_ms))
        elif isinstance(event, ToolCallCompleted) and event.call_id in requested:
            pending.append((requested[event.call_id], event.duration_ms))
    return out


async def _batch(d: Deployment, watcher: TerminalWatcher, requests: list[RunRequest], timeout_s: float) -> set[str]:
    ids = {await d.client.request_run(r) for r in requests}
    missing = await watcher.wait(ids, timeout_s)
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(ids)} runs did not end within {timeout_s:g}s")
    return ids


async def measure_graph(
    runs: int = 100, react_steps: int = 6, warmup: int = 10, timeout_s: float = 600.0
) -> dict[str, Any]:
    async with bench_settings("graph") as (settings, _kafka):
        scen_dir = settings.home / "scenarios"
        write_scenarios(scen_dir, [*SCENARIOS, overhead_scenario(react_steps - 1)])
        watcher = TerminalWatcher(settings)
        wait = ("calculator", "lookup", "request_approval")
        async with Deployment(settings, [scen_dir], wait_tools=wait, policies={"default": POLICY}) as d:
            catalog = await read_catalog(settings)
            await register_workflow(settings, "default", orjson.loads(WORKFLOW.read_bytes()), catalog.workflows,
                                    "bench")  # fmt: skip

            def graph(i: int, tag: str) -> RunRequest:
                kind = "graph-high" if i % 2 == 0 else "graph-low"
                return RunRequest(task=f"[scenario:{kind}] ticket {tag}{i}", max_steps=10, workflow="ticket-triage")

            def react(i: int, tag: str) -> RunRequest:
                return RunRequest(task=f"[scenario:overhead] {tag}{i}", tools=["calculator"], max_steps=react_steps + 2)

            await _batch(d, watcher, [graph(i, "warm") for i in range(warmup)]
                         + [react(i, "warm") for i in range(warmup)], timeout_s)  # fmt: skip
            await asyncio.sleep(2.0)  # what the warm-up leaves behind settles first
            graph_ids = await _batch(d, watcher, [graph(i, "run") for i in range(runs)], timeout_s)
            await asyncio.sleep(2.0)
            react_ids = await _batch(d, watcher, [react(i, "run") for i in range(runs)], timeout_s)
        watcher.close()
        journal = await read_journal(settings)
    node_ms: list[float] = []
    valid = 0
    for run_id in graph_ids:
        entries = journal.get(run_id, [])
        node_ms += node_overheads(entries)
        end = next((e.event for e in entries if isinstance(e.event, RunCompleted)), None)
        first = next((e.event for e in entries if isinstance(e.event, LlmCallRequested)), None)
        kind = "graph-high" if first is not None and "[scenario:graph-high]" in first.messages_json else "graph-low"
        valid += end is not None and end.reason == VALID_PATHS[kind]
    step_ms = [o for run_id in react_ids for o, _model in step_overheads(journal.get(run_id, []))]
    result: dict[str, Any] = {"runs": len(graph_ids), "valid_paths": valid}
    for q in (50, 95):  # p50 first: the keys bench/topologies.py reports
        result[f"node_overhead_ms_p{q}"] = round(percentile(node_ms, q), 1)
        result[f"react_step_overhead_ms_p{q}"] = round(percentile(step_ms, q), 1)
    return {**result, "nodes_measured": len(node_ms), "react_steps_measured": len(step_ms)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--react-steps", type=int, default=6)
    args = parser.parse_args()
    print(json.dumps(await measure_graph(args.runs, args.react_steps)))


if __name__ == "__main__":
    asyncio.run(main())
