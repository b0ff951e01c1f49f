"""Subagents through the real orchestrator and cost governor cores (tests/unit/subagent_world.py):
a child's request and its condensed result, refusals, the cancel cascade, a depth bomb, and the
parent's step and budget caps holding over 100 randomized run trees."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream import ids
from agentstream.costs import costs_from_journal
from agentstream.events import (
    BudgetExceeded,
    BudgetSettled,
    CancelRequested,
    LlmCallRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunHalted,
    RunRequested,
    ToolCallCompleted,
)
from agentstream.llm import tools_to_json
from agentstream.processors.orchestrator.state import PlannedCall, RunState, replace
from agentstream.processors.orchestrator.subagents import SubagentLimits, child_request, spawn_events
from agentstream.subagents import RESULT_CHARS, SPAWN_AGENT, SpawnArgs
from agentstream.tools.replay import replay_events
from tests.unit.subagent_world import TOOLS, Script, World, random_script, root_request

Calls = list[tuple[str, dict[str, object]]]


@pytest.fixture
def world_at(tmp_path: Path) -> Iterator[list[World]]:
    made: list[World] = []
    yield made
    for world in made:
        world.close()


def make(made: list[World], tmp_path: Path, script: Script, limits: SubagentLimits | None = None) -> World:
    world = World(tmp_path, script, limits)
    made.append(world)
    return world


def fan_out(children: int, scratch: int = 10, child_answer: str = "found {run}") -> Script:
    """The root starts `children` subagents at once, then answers with what they said; each child
    reads `scratch` characters (a sleep result) and answers."""

    def script(run: str, depth: int, step: int, messages: list[dict[str, object]]) -> tuple[str, Calls]:
        if depth == 0 and step == 1:
            spawn = {"task": "look it up", "tools": ["sleep"], "max_steps": 3}
            return "", [(SPAWN_AGENT, {**spawn, "task": f"part {i}"}) for i in range(children)]
        if depth == 1 and step == 1:
            return "", [("sleep", {"seconds": 0, "scratch": scratch})]
        if depth == 1:
            return child_answer.format(run=run), []
        return "done: " + " | ".join(str(m["content"]) for m in messages if m["role"] == "tool"), []

    return script


def parent_state(depth: int = 0, children: int = 0) -> RunState:
    return RunState(
        run_id="run_p", tenant_id="t", status="running", task="t", model="m", tool_names=("sleep",), max_steps=10,
        tools_json=tools_to_json([TOOLS["sleep"].spec, TOOLS[SPAWN_AGENT].spec]), depth=depth, children=children,
        labels={"team": "a"}, api_key_id="key1",
    )  # fmt: skip


def test_a_child_request_carries_the_tree_and_only_what_the_parent_hands_it() -> None:
    call = ids.tool_call_id("run_p", 1, 0)
    child = child_request(parent_state(depth=1), call, "sum it", ("sleep",), 4, 0.5, 100)
    assert isinstance(child, RunRequested)
    assert child.run_id == ids.child_run_id(call) and child.run_id.startswith("run_") and "/" not in child.run_id
    assert (child.parent_run_id, child.parent_call_id, child.depth) == ("run_p", call, 2)
    assert (child.task, child.tools, child.max_steps, child.budget_usd, child.budget_tokens) == (
        "sum it", ["sleep"], 4, 0.5, 100,
    )  # fmt: skip
    assert (child.tenant_id, child.labels, child.api_key_id) == ("t", {"team": "a"}, "key1")
    assert child_request(parent_state(depth=1), call, "sum it", ("sleep",), 4, 0.5, 100) == child  # deterministic


@pytest.mark.parametrize(
    ("state", "task", "tools", "why"),
    [
        (parent_state(depth=3), "x", (), "AGENTSTREAM_SUBAGENT_MAX_DEPTH=3"),
        (parent_state(children=16), "x", (), "AGENTSTREAM_SUBAGENT_MAX_CHILDREN=16"),
        (parent_state(), "x", ("shell",), "tools not available to this run: shell"),
        (parent_state(), "  ", (), "the task is empty"),
    ],
)
def test_child_request_refusals_say_why(state: RunState, task: str, tools: tuple[str, ...], why: str) -> None:
    refused = child_request(state, "run_p/s0001/tool00", task, tools, 3, 0.0, 0)
    assert isinstance(refused, str) and why in refused


def test_children_run_in_parallel_and_the_parent_reads_only_their_condensed_answers(
    tmp_path: Path, world_at: list[World]
) -> None:
    world = make(world_at, tmp_path, fan_out(3, scratch=100_000, child_answer="found {run} " + "y" * 9000))
    world.emit(root_request("run_root", max_steps=12))
    world.run()
    children = [e for e in world.journal if isinstance(e, RunRequested) and e.parent_run_id == "run_root"]
    assert len(children) == 3
    # All three were requested before any child ended: they run side by side.
    first_end = min(i for i, e in enumerate(world.journal) if isinstance(e, RunCompleted) and e.run_id != "run_root")
    assert all(world.journal.index(c) < first_end for c in children)
    end = world.end("run_root")
    assert isinstance(end, RunCompleted) and all(c.run_id in end.final_answer for c in children)
    # The parent's prompt holds the children's answers, cut to the bound, never what they read.
    last = [e for e in world.of("run_root") if isinstance(e, LlmCallRequested)][-1]
    assert "x" * 1000 not in last.messages_json and len(last.messages_json) < 3 * (RESULT_CHARS + 500) + 2000
    results = [e for e in world.of("run_root") if isinstance(e, ToolCallCompleted)]
    assert {r.call_id for r in results} == {c.parent_call_id for c in children}
    assert all(not r.is_error and "cut at" in r.content for r in results)
    # Steps: the children's caps came out of the root's 12; the root used 2 of its own.
    assert sum(c.max_steps for c in children) <= 12 - 2
    # Each child's spend was settled on the root's ledger too, but counts once in the tenant's costs.
    carves = [e for e in world.journal if isinstance(e, BudgetSettled) and e.kind == "subagent"]
    assert len(carves) == 3 and all(c.run_id == "run_root" and c.cost_usd > 0 for c in carves)
    costs = costs_from_journal((e, 0) for e in world.journal if isinstance(e, BudgetSettled))
    assert sum(c.usd for c in costs.values()) == pytest.approx(world.spent(world.tree("run_root"))[0])


def test_a_re_sent_child_request_starts_nothing(tmp_path: Path, world_at: list[World]) -> None:
    world = make(world_at, tmp_path, fan_out(1))
    world.emit(root_request("run_root", max_steps=8))
    world.run(until=lambda e: isinstance(e, RunRequested) and e.depth == 1)
    (child,) = [e for e in world.journal if isinstance(e, RunRequested) and e.depth == 1]
    world.run(until=lambda e: e.run_id == child.run_id and e.type_name == "RunStarted")
    # A parent re-deciding after a crash sends the same request: while the child runs ...
    store = world.store("orch", child.run_id)
    assert world.orchestrator.apply(store, child, live=True).emit == []
    world.run()
    assert isinstance(world.end(child.run_id), RunCompleted)
    # ... and after it ended: nothing starts again.
    assert world.orchestrator.apply(store, child, live=True).emit == []
    assert sum(1 for e in world.journal if isinstance(e, RunRequested) and e.run_id == child.run_id) == 1


def test_cancelling_the_parent_cancels_every_child_in_flight(tmp_path: Path, world_at: list[World]) -> None:
    world = make(world_at, tmp_path, fan_out(2))
    world.emit(root_request("run_root", max_steps=8))
    world.run(until=lambda e: isinstance(e, RunRequested) and e.depth == 1 and e.parent_call_id.endswith("01"))
    world.emit(CancelRequested(ids.cancel_requested_id("run_root"), "run_root", "t", "user asked", "u"))
    world.run()
    children = [e.run_id for e in world.journal if isinstance(e, RunRequested) and e.depth == 1]
    assert len(children) == 2
    cascaded = [e for e in world.journal if isinstance(e, CancelRequested) and e.run_id in children]
    assert {e.event_id for e in cascaded} == {ids.cancel_requested_id(c) for c in children}
    assert all(e.requested_by == "run:run_root" for e in cascaded)
    assert isinstance(world.end("run_root"), RunCancelled)
    assert all(isinstance(world.end(c), RunCancelled) for c in children)


def test_a_child_that_fails_or_halts_is_an_observation_for_the_parent(tmp_path: Path, world_at: list[World]) -> None:
    def script(run: str, depth: int, step: int, messages: list[dict[str, object]]) -> tuple[str, Calls]:
        if depth == 0 and step == 1:  # too small a budget for even one model call of the child
            return "", [(SPAWN_AGENT, {"task": "tiny", "budget_usd": 1e-7})]
        return "recovered: " + str(messages[-1]["content"]), []

    world = make(world_at, tmp_path, script)
    world.emit(root_request("run_root", max_steps=8))
    world.run()
    (child,) = [e for e in world.journal if isinstance(e, RunRequested) and e.depth == 1]
    ended = world.end(child.run_id)
    assert isinstance(ended, RunFailed) and ended.error_type == "budget_usd" and "halted at a limit" in ended.reason
    assert not any(isinstance(e, RunHalted) for e in world.of(child.run_id))  # ended, not left waiting
    (result,) = [e for e in world.of("run_root") if isinstance(e, ToolCallCompleted)]
    assert result.is_error and f"child run {child.run_id} failed" in result.content
    assert isinstance(world.end("run_root"), RunCompleted)


def test_a_child_the_parent_cannot_afford_is_refused_and_observed(tmp_path: Path, world_at: list[World]) -> None:
    def script(run: str, depth: int, step: int, messages: list[dict[str, object]]) -> tuple[str, Calls]:
        if step == 1:
            return "", [(SPAWN_AGENT, {"task": "expensive", "budget_usd": 5.0, "max_steps": 4})]
        return "without it: " + str(messages[-1]["content"]), []

    world = make(world_at, tmp_path, script)
    world.emit(root_request("run_root", max_steps=8, budget_usd=0.05))
    world.run()
    assert not [e for e in world.journal if isinstance(e, RunRequested) and e.depth == 1]
    assert any(isinstance(e, BudgetExceeded) and e.run_id == "run_root" for e in world.journal)
    end = world.end("run_root")
    assert isinstance(end, RunCompleted) and "cost governor refused its budget" in end.final_answer


def test_a_depth_bomb_stops_at_the_depth_cap_on_the_record(tmp_path: Path, world_at: list[World]) -> None:
    def bomb(run: str, depth: int, step: int, messages: list[dict[str, object]]) -> tuple[str, Calls]:
        if step == 1:
            return "", [(SPAWN_AGENT, {"task": "go deeper", "tools": [SPAWN_AGENT]}) for _ in range(2)]
        return "bottom", []

    world = make(world_at, tmp_path, bomb, SubagentLimits(max_depth=3))
    world.emit(root_request("run_root", max_steps=100))
    world.run()
    requests = [e for e in world.journal if isinstance(e, RunRequested)]
    assert max(r.depth for r in requests) == 3
    refusals = [e for e in world.journal if isinstance(e, ToolCallCompleted) and "MAX_DEPTH" in e.content]
    assert refusals and all(world.depth[r.run_id] == 3 for r in refusals)  # journaled, by the runs at the cap
    assert all(world.end(r.run_id) is not None for r in requests)  # every run of the tree ended
    assert isinstance(world.end("run_root"), RunCompleted)


def test_caps_hold_across_100_randomized_run_trees(tmp_path: Path, world_at: list[World]) -> None:
    world = make(world_at, tmp_path, random_script(19), SubagentLimits(max_depth=4, max_children=6))
    rng = random.Random(19)
    roots: dict[str, RunRequested] = {}
    for i in range(100):
        root = root_request(
            f"run_tree{i:03d}", max_steps=rng.randint(3, 40), budget_usd=rng.choice([0.0, 0.01, 0.05, 0.3]),
            budget_tokens=rng.choice([0, 5000, 50_000]),
        )  # fmt: skip
        roots[root.run_id] = root
        world.emit(root)
    world.run()
    spawned = 0
    for run_id, root in roots.items():
        tree = world.tree(run_id)
        spawned += len(tree) - 1
        assert all(world.end(r) is not None for r in tree), "a run of the tree never ended"
        assert world.model_calls(tree) <= root.max_steps, run_id
        usd, tokens = world.spent(tree)
        if root.budget_usd:
            assert usd <= root.budget_usd + 1e-12, (run_id, usd, root.budget_usd)
        if root.budget_tokens:
            assert tokens <= root.budget_tokens, (run_id, tokens, root.budget_tokens)
    assert spawned > 100  # the trees did branch ...
    refused = {e.limit for e in world.journal if isinstance(e, BudgetExceeded)}
    assert {"budget_usd", "budget_tokens"} <= refused  # ... and pressed on the caps


def test_every_run_of_a_tree_replays_deterministically(tmp_path: Path, world_at: list[World]) -> None:
    def script(run: str, depth: int, step: int, messages: list[dict[str, object]]) -> tuple[str, Calls]:
        if step == 1 and depth < 3:  # children that fail (too small a budget), answer, and spawn on to the cap
            return "", [(SPAWN_AGENT, {"task": "deeper", "tools": [SPAWN_AGENT, "sleep"]}),
                        (SPAWN_AGENT, {"task": "tiny", "budget_usd": 1e-7}), ("sleep", {"seconds": 0})]  # fmt: skip
        if step == 1:
            return "", [(SPAWN_AGENT, {"task": "too deep"})]
        return f"answer of {run}", []

    world = make(world_at, tmp_path, script)
    world.emit(root_request("run_root", max_steps=60, budget_usd=1.0))
    world.run()
    tree = world.tree("run_root")
    assert len(tree) == 7 and isinstance(world.end("run_root"), RunCompleted)
    for run in sorted(tree):
        result = replay_events(world.of(run))
        assert result.deterministic and result.decisions_matched > 2, (run, result.divergences)


def test_without_a_cost_governor_a_child_starts_as_soon_as_its_spawn_is_on_the_record() -> None:
    call = ids.tool_call_id("run_p", 1, 0)
    args = SpawnArgs("do it", ("sleep",), 3, 0.25, 0).to_json()
    planned = PlannedCall(call, "c0", SPAWN_AGENT, args, requested=True)
    state = replace(parent_state(), step=1, planned=(planned,), children=1)
    assert spawn_events(state, SubagentLimits(governed=True)) == []  # waits for its reservation
    (child,) = spawn_events(state, SubagentLimits(governed=False))
    assert isinstance(child, RunRequested) and (child.max_steps, child.budget_usd) == (3, 0.25)
    reserved = replace(planned, child_budget="0.1 50")
    (child,) = spawn_events(replace(state, planned=(reserved,)), SubagentLimits())
    assert isinstance(child, RunRequested) and (child.budget_usd, child.budget_tokens) == (0.1, 50)
