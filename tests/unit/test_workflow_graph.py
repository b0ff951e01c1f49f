"""The graph interpreter, pure: a graph run's state folded from its events and what decide asks
for next. Every node's call has an id naming the node, deciding twice yields the same events,
and the run's end names the path it took."""

from __future__ import annotations

from typing import Any

import orjson

from agentstream.events import (
    BudgetExceeded,
    BudgetReserved,
    LlmCallCompleted,
    LlmCallRequested,
    ResumeRequested,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunHalted,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.llm import ToolSpec
from agentstream.processors.orchestrator.decide import OrchestratorConfig, decide
from agentstream.processors.orchestrator.evolve import evolve
from agentstream.processors.orchestrator.state import RunState, replace
from agentstream.tools.replay import replay_events
from agentstream.workflows.definition import EXAMPLES, parse_workflow

EXAMPLE = EXAMPLES / "ticket_triage.json"
CATALOG = {n: ToolSpec(n, n, {"type": "object"}) for n in ("calculator", "lookup", "request_approval", "spawn_agent")}
CONFIG = OrchestratorConfig()


def _pinned(doc: Any) -> str:
    return parse_workflow(doc).model_copy(update={"version": "1"}).to_json()


def _start(definition: str, *, tools: tuple[str, ...] = ()) -> RunState:
    request = RunRequested(event_id="r/requested", run_id="r", tenant_id="t", task="ticket 7", model="m",
                           tools=list(tools), max_steps=10, idempotency_key="k", workflow="triage")  # fmt: skip
    state = evolve(request, None)
    assert state is not None
    [started] = decide(state, CATALOG, CONFIG, workflow_json=definition)
    JOURNAL[:] = [request, started]
    assert isinstance(started, RunStarted), started
    after = evolve(started, state)
    assert after is not None
    return after


BATCHES: list[list[str]] = []  # the calls of each decision, in order (this module's runs)
JOURNAL: list[RunEvent] = []  # the last run's events, as the journal would hold them


def _drive(
    state: RunState, answers: dict[str, tuple[str, bool]], default: str = "4"
) -> tuple[RunState, list[RunEvent]]:
    """Answers every call decide asks for (by node: (content, is_error)) until the run ends; the
    state goes through its stored form (JSON) between events, as in the processor's store."""
    seen: list[RunEvent] = []
    for _ in range(50):
        decided = decide(state, CATALOG, CONFIG)
        assert decided == decide(state, CATALOG, CONFIG)  # pure: the same state decides the same
        if not decided:
            return state, seen
        for event in decided:  # every request of a decision is on the record before any is answered
            seen.append(event)
            JOURNAL.append(event)
            state = _fold(event, state)
        BATCHES.append(_calls(decided))
        for event in decided:
            node = getattr(event, "call_id", "").rsplit("/", 1)[-1].rsplit(".", 1)[0]
            content, error = answers.get(node, (default, False))
            answer: RunEvent | None = None
            if isinstance(event, LlmCallRequested):
                answer = LlmCallCompleted(f"{event.call_id}/completed", "r", "t", event.step, event.call_id, "p", "m",
                                          content, "[]", "stop", 1, 1, 0, 1.0, 1)  # fmt: skip
            elif isinstance(event, ToolCallRequested):
                answer = ToolCallCompleted(f"{event.call_id}/completed", "r", "t", event.step, event.call_id,
                                           event.tool, event.call_id, content, error, 1.0)  # fmt: skip
            if answer is not None:
                JOURNAL.append(answer)
                state = _fold(answer, state)
        if state.terminal:
            return state, seen
    raise AssertionError("the run did not end")


def _fold(event: RunEvent, state: RunState) -> RunState:
    after = evolve(event, state)
    assert after is not None
    return RunState.load(orjson.loads(orjson.dumps(after)))


def _calls(events: list[RunEvent]) -> list[str]:
    return [e.call_id.split("/g/")[1] for e in events if isinstance(e, LlmCallRequested | ToolCallRequested)]


def test_a_severe_ticket_is_approved_then_fans_out_and_joins() -> None:
    state, events = _drive(_start(_pinned(orjson.loads(EXAMPLE.read_text()))), {})
    assert state.status == "completed"
    assert _calls(events) == ["classify.1", "review.1", "escalate.1", "price.1", "assign.1", "note.1",
                              "summarize.1", "close.1"]  # fmt: skip
    approval = next(e for e in events if isinstance(e, ToolCallRequested) and e.tool == "request_approval")
    assert "severity 4" in approval.arguments_json
    end = events[-1]
    assert isinstance(end, RunCompleted) and end.final_answer == "severity 4; summary: 4"
    assert end.reason == ("workflow path: classify route>review review escalate checks price assign note merge "
                          "summarize close")  # fmt: skip
    assert ["price.1", "assign.1", "note.1"] in BATCHES  # the fan-out's branches: asked for at once


def test_a_mild_ticket_takes_the_default_edge() -> None:
    state, events = _drive(_start(_pinned(orjson.loads(EXAMPLE.read_text()))), {"classify": ("1", False)})
    assert state.status == "completed"
    assert "review.1" not in _calls(events) and "quick.1" in _calls(events)
    assert "route>quick" in events[-1].reason  # type: ignore[attr-defined]


def test_a_denied_approval_fails_the_run_or_takes_on_denied() -> None:
    doc = orjson.loads(EXAMPLE.read_text())
    state, events = _drive(_start(_pinned(doc)), {"review": ("denied by ops", True)})
    assert state.status == "failed" and "approval not given" in events[-1].reason  # type: ignore[attr-defined]
    doc["nodes"][2]["on_denied"] = "quick"
    state, events = _drive(_start(_pinned(doc)), {"review": ("denied by ops", True)})
    assert state.status == "completed" and "escalate.1" not in _calls(events) and "quick.1" in _calls(events)


def test_a_loop_runs_to_its_bound_then_leaves_by_the_default() -> None:
    doc = {
        "name": "retry", "state": {"n": {"type": "number", "default": 0}}, "start": "try",
        "nodes": [{"id": "try", "type": "tool", "tool": "calculator", "arguments": {"expression": "1"}, "output": "n"},
                  {"id": "again", "type": "branch"}, {"id": "give_up", "type": "tool", "tool": "lookup"}],
        "edges": [{"from": "try", "to": "again"}, {"from": "again", "to": "try", "when": "n < 5", "max_iterations": 2},
                  {"from": "again", "to": "give_up"}],
    }  # fmt: skip
    state, events = _drive(_start(_pinned(doc)), {"try": ("1", False)})
    assert state.status == "completed"
    assert _calls(events) == ["try.1", "try.2", "try.3", "give_up.1"]


def test_a_node_output_of_the_wrong_type_fails_the_run_naming_it() -> None:
    state, events = _drive(_start(_pinned(orjson.loads(EXAMPLE.read_text()))), {"classify": ("very bad", False)})
    assert state.status == "failed"
    failed = events[-1]
    assert isinstance(failed, RunFailed) and "'classify'" in failed.reason and "number" in failed.reason


def test_unknown_workflow_or_missing_tools_fail_at_start() -> None:
    request = RunRequested(event_id="r/requested", run_id="r", tenant_id="t", task="x", model="m", tools=[],
                           max_steps=5, idempotency_key="k", workflow="ghost")  # fmt: skip
    state = evolve(request, None)
    assert state is not None
    [failed] = decide(state, CATALOG, CONFIG, workflow_json="")
    assert isinstance(failed, RunFailed) and failed.error_type == "unknown_workflow" and "ghost" in failed.reason
    pinned = _pinned(orjson.loads(EXAMPLE.read_text()))
    narrow = RunRequested(event_id="r/requested", run_id="r", tenant_id="t", task="x", model="m",
                          tools=["calculator"], max_steps=5, idempotency_key="k", workflow="triage")  # fmt: skip
    state = evolve(narrow, None)
    assert state is not None
    [failed] = decide(state, CATALOG, CONFIG, workflow_json=pinned)
    assert isinstance(failed, RunFailed) and "lookup" in failed.reason


def test_a_refused_budget_halts_and_the_resume_asks_for_the_same_call() -> None:
    state = _start(_pinned(orjson.loads(EXAMPLE.read_text())))
    [ask] = decide(state, CATALOG, CONFIG)
    assert isinstance(ask, LlmCallRequested)
    state = _fold(ask, state)
    refused = BudgetExceeded(
        f"{ask.call_id}/budget", "r", "t", 1, ask.call_id, "model", "run_usd", "over", True, "{}", 0
    )
    state = _fold(refused, state)
    [halt] = decide(state, CATALOG, CONFIG)
    assert isinstance(halt, RunHalted) and halt.limit == "run_usd"
    state = _fold(ResumeRequested("r/resume01", "r", "t", 1, 0, "more budget", "ops"), _fold(halt, state))
    [again] = decide(state, CATALOG, CONFIG)
    assert isinstance(again, LlmCallRequested) and again.event_id == ask.event_id


def test_model_nodes_count_against_the_step_cap() -> None:
    state = replace(_start(_pinned(orjson.loads(EXAMPLE.read_text()))), max_steps=1)
    state, events = _drive(state, {})
    assert isinstance(events[-1], RunHalted) and events[-1].limit == "step_cap"
    assert _calls(events) == ["classify.1", "review.1", "escalate.1", "price.1", "assign.1"]


def test_a_subagent_node_starts_a_child_run_on_a_reserved_budget_and_reads_its_answer() -> None:
    doc = {
        "name": "research", "state": {"notes": {"type": "string"}}, "start": "dig",
        "nodes": [{"id": "dig", "type": "subagent", "task": "find out about {task}", "tools": ["lookup"],
                   "max_steps": 3, "budget_usd": 0.5, "output": "notes"},
                  {"id": "file", "type": "tool", "tool": "calculator", "arguments": {"expression": "1"}}],
        "edges": [{"from": "dig", "to": "file"}],
        "answer": "{notes}",
    }  # fmt: skip
    state = _start(_pinned(doc))
    # First the spawn, on which the cost governor reserves the child's budget on this run's ledger.
    [spawn] = decide(state, CATALOG, CONFIG)
    assert isinstance(spawn, ToolCallRequested) and spawn.tool == "spawn_agent" and spawn.call_id == "r/g/dig.1"
    assert orjson.loads(spawn.arguments_json)["budget_usd"] == 0.5
    state = _fold(spawn, state)
    assert decide(state, CATALOG, CONFIG) == []  # no child before its budget is reserved
    reserved = BudgetReserved("r/g/dig.1/reserved", "r", "t", 0, "r/g/dig.1", "subagent", "spawn_agent", 0.25, 0,
                              0.25, 0.25, "p", 0)  # fmt: skip
    state = _fold(reserved, state)
    [child] = decide(state, CATALOG, CONFIG)
    assert decide(state, CATALOG, CONFIG) == [child]  # the same child, whenever decided again
    assert isinstance(child, RunRequested) and child.parent_run_id == "r" and child.parent_call_id == "r/g/dig.1"
    assert child.depth == 1 and child.tools == ["lookup"] and child.task == "find out about ticket 7"
    assert child.budget_usd == 0.25  # exactly what was reserved
    answer = ToolCallCompleted("r/g/dig.1/completed", "r", "t", 0, "r/g/dig.1", "spawn_agent", "r/g/dig.1",
                               "kafka is a log", False, 0.0)  # fmt: skip
    state = _fold(answer, state)
    [filing] = decide(state, CATALOG, CONFIG)
    assert isinstance(filing, ToolCallRequested) and filing.call_id == "r/g/file.1"
    state, events = _drive(state, {})
    assert isinstance(events[-1], RunCompleted) and events[-1].final_answer == "kafka is a log"


def test_a_subagent_node_the_run_cannot_afford_fails_the_run_naming_it() -> None:
    doc = {"name": "r", "start": "dig", "nodes": [{"id": "dig", "type": "subagent", "task": "x", "tools": ["lookup"]}]}
    state = _start(_pinned(doc))
    [spawn] = decide(state, CATALOG, CONFIG)
    state = _fold(spawn, state)
    refused = BudgetExceeded("r/g/dig.1/budget", "r", "t", 0, "r/g/dig.1", "subagent", "budget_usd", "over budget",
                             True, "{}", 0)  # fmt: skip
    [failed] = decide(_fold(refused, state), CATALOG, CONFIG)
    assert isinstance(failed, RunFailed) and "'dig'" in failed.reason and "cost governor refused" in failed.reason


def test_a_graph_run_replays_and_shadow_replays_without_divergence() -> None:
    state, _events = _drive(_start(_pinned(orjson.loads(EXAMPLE.read_text()))), {})
    assert state.status == "completed"
    result = replay_events(list(JOURNAL))
    assert result.deterministic and result.decisions_matched >= 9, result


def test_cancelling_a_graph_run_cancels_the_child_of_its_subagent_node() -> None:
    from agentstream import ids
    from agentstream.events import CancelRequested, RunCancelled
    from agentstream.processors.orchestrator.subagents import finish

    doc = {"name": "r", "start": "dig", "nodes": [{"id": "dig", "type": "subagent", "task": "x", "tools": ["lookup"]}]}
    state = _start(_pinned(doc))
    [spawn] = decide(state, CATALOG, CONFIG)
    state = _fold(spawn, state)
    reserved = BudgetReserved("r/g/dig.1/reserved", "r", "t", 0, "r/g/dig.1", "subagent", "spawn_agent", 0.25, 0,
                              0.25, 0.25, "p", 0)  # fmt: skip
    state = _fold(reserved, state)
    [child] = decide(state, CATALOG, CONFIG)
    assert isinstance(child, RunRequested)
    state = _fold(CancelRequested("r/cancel", "r", "t", "operator", "key:op"), state)
    decided = finish(state, decide(state, CATALOG, CONFIG))
    assert isinstance(decided[0], RunCancelled)
    cascade = [e for e in decided if isinstance(e, CancelRequested)]
    assert [(e.run_id, e.event_id) for e in cascade] == [(child.run_id, ids.cancel_requested_id(child.run_id))]
    assert child.run_id == ids.child_run_id("r/g/dig.1")
