"""The chaos bench's topology mix (`bench/chaos_topologies.py`): which runs are topology runs, how
a run tree lines up with its reference tree, and when a tree counts as completed or lost. Pure:
journal entries built in memory, no processes."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

import pytest

from agentstream import ids
from agentstream.client.journal import JournalEntry, RunRequest
from agentstream.doubles.scripted_model.scenarios import parse_scenario
from agentstream.events import (
    LlmCallRequested,
    RunCompleted,
    RunEvent,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.workflows.definition import parse_workflow
from bench.chaos_phases import PHASES, PhaseBook
from bench.chaos_topologies import (
    GRAPH,
    SCENARIOS,
    SUB_TOOLS,
    Mix,
    add_topology_arguments,
    tree_members,
    tree_outcomes,
)


def _mix(*argv: str) -> Mix:
    parser = argparse.ArgumentParser()
    add_topology_arguments(parser)
    return Mix.from_args(parser.parse_args(list(argv)))


def test_a_share_of_the_runs_is_spread_over_the_topologies_and_the_rest_stay_plain() -> None:
    mix = _mix("--topologies", "subagents,graph,code", "--topology-share", "0.4")
    keys = [mix.request(i, i % 10, RunRequest(task="plain"), "chaos")[0] for i in range(100)]
    topology = [k for k in keys if isinstance(k, str)]
    assert len(topology) == 40
    assert {k: topology.count(k) for k in set(topology)} == {
        "chaos_sub": 10, "chaos_graph_high": 10, "chaos_graph_low": 10, "chaos_code": 10}  # fmt: skip
    assert [k for k in keys[:10] if isinstance(k, int)] == [0, 1, 3, 5, 6, 8]  # plain runs keep their scenario
    _, graph = mix.request(4, 4, RunRequest(task="plain"), "chaos")
    assert graph.workflow == "chaos-graph" and graph.task.startswith("[scenario:chaos_graph_high]")
    assert [_mix().request(i, i, RunRequest(task="p"), "chaos")[0] for i in range(5)] == [0, 1, 2, 3, 4]


def test_unknown_topologies_are_refused() -> None:
    with pytest.raises(SystemExit, match="unknown --topologies"):
        _mix("--topologies", "subagents,mesh")


def test_the_bundled_graph_and_scenarios_are_valid_and_children_get_a_subset_of_the_parents_tools() -> None:
    assert set(parse_workflow(GRAPH).tools()) == {"calculator", "lookup", "request_approval", "sleep_ms",
                                                  "spawn_agent", "transfer_funds"}  # fmt: skip
    for scenario in SCENARIOS:
        parsed = parse_scenario(scenario, scenario["name"])
        for turn in parsed.turns:
            for call in turn.tool_calls:
                if call.name == "spawn_agent":
                    assert set(call.arguments["tools"]) <= set(SUB_TOOLS)


def _entry(event: RunEvent) -> JournalEntry:
    return JournalEntry(event, 0, 0)


def _tree(root: str, end_children: bool = True, children: int = 2) -> dict[str, list[JournalEntry]]:
    """A parent and its children, each child (and its own child) started by a spawn call."""
    journal = {root: [_entry(RunCompleted(f"{root}/terminal", root, "t", 2, "done", ""))]}
    for index in range(children):
        call = ids.tool_call_id(root, 1, index)
        child = ids.child_run_id(call)
        requested = RunRequested(f"{child}/requested", child, "t", "task", "scripted", [], 3, "k",
                                 parent_run_id=root, parent_call_id=call, depth=1)  # fmt: skip
        ended = [_entry(RunCompleted(f"{child}/terminal", child, "t", 1, "ok", ""))] if end_children else []
        journal[child] = [_entry(requested), *ended]
    return journal


def test_a_chaos_tree_lines_up_with_its_reference_tree_and_counts_whole_trees() -> None:
    journal = _tree("run_ref") | _tree("run_good") | _tree("run_short", children=1) | _tree("run_open", False)
    reference = tree_members(journal, {"run_ref": "chaos_sub"})
    assert sorted(reference.values()) == [("chaos_sub", ""), ("chaos_sub", "/s0001/tool00"),
                                          ("chaos_sub", "/s0001/tool01")]  # fmt: skip
    roots = {"run_good": "chaos_sub", "run_short": "chaos_sub", "run_open": "chaos_sub", "run_plain": 3}
    members = tree_members(journal, roots)
    # Each child sits where the reference's child of the same call does, whatever the run ids.
    assert sorted(p for r, (_k, p) in members.items() if r in _tree("run_good")) == sorted(reference_places(reference))
    status = {r: "completed" for r in members} | {r: "running" for r in _tree("run_open") if r != "run_open"}
    outcome = tree_outcomes(journal, roots, reference, status)
    # run_short lacks a child (lost), run_open's children never ended (lost): neither completed.
    assert outcome == {"completed": 2, "lost_children": 3, "child_runs": 5, "child_runs_completed": 3}


def reference_places(reference: Mapping[str, tuple[object, str]]) -> list[str]:
    return [place for _key, place in reference.values()]


def test_the_phase_book_sees_each_topology_phase_begin_and_end() -> None:
    book = PhaseBook()

    def phases() -> set[str]:
        return {p for p in PHASES if book.active(p)}

    def tool(kind: type[ToolCallRequested] | type[ToolCallCompleted], run: str, step: int, name: str) -> RunEvent:
        call = ids.tool_call_id(run, step, 0)
        if kind is ToolCallRequested:
            return ToolCallRequested(f"{call}/r", run, "t", step, call, "c0", name, "{}", call, 1000)
        return ToolCallCompleted(f"{call}/c", run, "t", step, call, name, call, "ok", False, 1.0)

    book.apply(RunStarted("p/started", "p", "t", "scripted", "[]", 9, ""))
    book.apply(tool(ToolCallRequested, "p", 1, "spawn_agent"))
    assert phases() == {"parent_waiting"}
    book.apply(RunRequested("c/requested", "c", "t", "task", "scripted", [], 3, "k", parent_run_id="p"))
    book.apply(RunStarted("c/started", "c", "t", "scripted", "[]", 3, ""))
    assert phases() == {"parent_waiting", "child_running"}
    book.apply(RunCompleted("c/terminal", "c", "t", 1, "ok", ""))
    book.apply(tool(ToolCallCompleted, "p", 1, "spawn_agent"))
    assert phases() == set()
    book.apply(RunStarted("g/started", "g", "t", "scripted", "[]", 9, "", workflow_json="{}"))
    book.apply(RunStarted("x/started", "x", "t", "scripted", "[]", 9, ""))
    book.apply(LlmCallRequested("x/s1/llm/r", "x", "t", 1, "x/s1/llm", "scripted", "[]", "[]", 100))
    book.apply(tool(ToolCallRequested, "x", 1, "run_code"))
    assert phases() == {"graph_running", "code_mid_program"}
    book.apply(LlmCallRequested("x/s2/llm/r", "x", "t", 2, "x/s2/llm", "scripted", "[]", "[]", 100))
    assert phases() == {"graph_running"}
