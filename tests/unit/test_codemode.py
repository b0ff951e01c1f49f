"""Code mode's pure parts: the interface generated from JSON Schemas, and the orchestrator's rounds
(deterministic re-execution) driven over an in-memory journal, without Kafka or a sandbox."""

from __future__ import annotations

import orjson

from agentstream import ids
from agentstream.codemode.interface import MAX_CALLS, RUN_CODE_TOOL, function_table, functions, prompt, python_interface
from agentstream.events import (
    BudgetExceeded,
    LlmCallCompleted,
    LlmCallRequested,
    RunEvent,
    RunHalted,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.llm import ToolSpec
from agentstream.processors.orchestrator.codemode import nested_id, round_id
from agentstream.processors.orchestrator.decide import OrchestratorConfig, decide
from agentstream.processors.orchestrator.evolve import evolve
from agentstream.processors.orchestrator.state import RunState
from agentstream.processors.tool_executor.code_tool import descriptor

CALC = ToolSpec(
    "calculator",
    "Evaluate an arithmetic expression.",
    {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 100}}, "required": ["expression"]},
)
SEARCH = ToolSpec(
    "web-search",
    "Search the web.",
    {
        "type": "object",
        "properties": {
            "limit": {"type": "integer", "minimum": 1, "default": 5},
            "from": {"type": ["string", "null"], "description": "Earliest date."},
            "query": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["query"],
    },
)
CATALOG = {"calculator": CALC, "web-search": SEARCH, RUN_CODE_TOOL: descriptor().spec}
RUN = "run_code_test"
PROGRAM = "a = calculator('1+1')\nb = calculator(a + '*3')\nprint(b)"


def test_interface_is_generated_from_the_schemas() -> None:
    funcs = functions(CATALOG.values())
    assert [f.py for f in funcs] == ["calculator", "web_search"]  # run_code is not callable from a program
    text = python_interface(funcs)
    # Required first; optional default to None; a keyword name gets an underscore; types follow the schema.
    assert "def web_search(query: str, limit: int | None = None, from_: str | None = None, " in text
    assert "tags: list[str] | None = None) -> str:" in text
    assert "Search the web." in text and "(minimum 1; default 5)" in text and "(JSON name 'from')" in text
    assert "def calculator(expression: str) -> str:" in text and "class ToolError(Exception):" in text
    compile(text, "<interface>", "exec")  # the model reads valid Python
    assert function_table(funcs)[1] == [
        "web_search", "web-search", [["query", "query", True], ["limit", "limit", False], ["from_", "from", False],
                                     ["tags", "tags", False]],
    ]  # fmt: skip
    section = prompt(CATALOG.values())
    assert f"{MAX_CALLS} tool calls" in section and "raises ToolError" in section and "```python" in section


def completion(step: int, calls: list[tuple[str, dict[str, object]]], text: str = "") -> LlmCallCompleted:
    call_id = ids.llm_call_id(RUN, step)
    tool_calls = [{"id": f"m{step}_{i}", "name": n, "arguments_json": orjson.dumps(a).decode()}
                  for i, (n, a) in enumerate(calls)]  # fmt: skip
    return LlmCallCompleted(
        ids.completed_event_id(call_id), RUN, "t", step, call_id, "scripted", "m", text,
        orjson.dumps(tool_calls).decode(), "tool_calls" if calls else "stop", 10, 5, 0, 1.0, 1,
    )  # fmt: skip


class Journal:
    """Every decided event is journaled and folded at once, as the orchestrator's loop does."""

    def __init__(self, tools: list[str]) -> None:
        self.events: list[RunEvent] = []
        self.state: RunState | None = None
        self.feed(RunRequested(ids.run_requested_id(RUN), RUN, "t", "task", "m", tools, 10, "k"))

    def feed(self, event: RunEvent) -> list[RunEvent]:
        decided: list[RunEvent] = []
        pending = [event]
        while pending:
            current = pending.pop(0)
            self.events.append(current)
            self.state = evolve(current, self.state)
            assert self.state is not None
            fresh = [e for e in decide(self.state, CATALOG, OrchestratorConfig()) if e.event_id not in self.ids]
            decided += fresh
            pending += fresh
        return decided

    @property
    def ids(self) -> set[str]:
        return {e.event_id for e in self.events}

    def complete(self, request: RunEvent, content: str, is_error: bool = False) -> list[RunEvent]:
        assert isinstance(request, ToolCallRequested)
        return self.feed(ToolCallCompleted(ids.completed_event_id(request.call_id), RUN, "t", request.step,
                                           request.call_id, request.tool, request.idempotency_key, content,
                                           is_error, 1.0))  # fmt: skip

    def answer(self, request: RunEvent, answer: dict[str, object]) -> list[RunEvent]:
        return self.complete(request, orjson.dumps(answer).decode(), answer["status"] == "error")


def started(tools: list[str]) -> tuple[Journal, RunEvent]:
    journal = Journal(tools)
    first = journal.events[1]
    assert isinstance(first, RunStarted)
    assert "def calculator(expression: str) -> str:" in first.system_prompt  # the interface, from the pins
    decided = journal.feed(completion(1, [(RUN_CODE_TOOL, {"code": PROGRAM})], "I'll compute it in code."))
    assert len(decided) == 1
    return journal, decided[0]


def test_a_program_runs_in_rounds_and_ends_as_one_observation() -> None:
    journal, round0 = started(["calculator", RUN_CODE_TOOL])
    model_call = ids.tool_call_id(RUN, 1, 0)
    assert isinstance(round0, ToolCallRequested) and round0.call_id == round_id(model_call, 0)
    assert orjson.loads(round0.arguments_json)["calls"] == []
    [nested] = journal.answer(round0, {"status": "call", "index": 0, "tool": "calculator",
                                       "arguments": {"expression": "1+1"}})  # fmt: skip
    # An ordinary tool call, with an id and idempotency key of its own, derived from the model's call.
    assert isinstance(nested, ToolCallRequested) and nested.tool == "calculator"
    assert nested.call_id == nested.idempotency_key == nested_id(model_call, 0)
    [round1] = journal.complete(nested, "2")
    assert isinstance(round1, ToolCallRequested) and round1.call_id == round_id(model_call, 1)
    recorded = orjson.loads(round1.arguments_json)["calls"]
    assert recorded == [{"tool": "calculator", "arguments": {"expression": "1+1"}, "result": "2", "is_error": False}]
    [nested1] = journal.answer(round1, {"status": "call", "index": 1, "tool": "calculator",
                                        "arguments": {"expression": "2*3"}})  # fmt: skip
    # A denied call comes back as an error result; the program sees ToolError (the next round's replay).
    [round2] = journal.complete(nested1, "DENIED by policy (tenant_deny): no", is_error=True)
    assert isinstance(round2, ToolCallRequested)
    assert orjson.loads(round2.arguments_json)["calls"][1]["is_error"] is True
    ended, next_model = journal.answer(round2, {"status": "error", "error": "ToolError: DENIED (line 2)",
                                                "output": "partial\n"})  # fmt: skip
    assert isinstance(ended, ToolCallCompleted) and ended.call_id == model_call and ended.is_error
    assert ended.content == "partial\nERROR: ToolError: DENIED (line 2)"
    assert isinstance(next_model, LlmCallRequested)
    state = journal.state
    assert state is not None and state.code == () and state.planned == ()
    tool_messages = [m for m in state.messages if m.role == "tool"]
    assert len(tool_messages) == 1 and tool_messages[0].content == ended.content  # ONE observation


def test_replay_of_the_journal_rebuilds_the_same_state_and_decides_nothing_new() -> None:
    journal, round0 = started(["calculator", RUN_CODE_TOOL])
    [nested] = journal.answer(round0, {"status": "call", "index": 0, "tool": "calculator",
                                       "arguments": {"expression": "1+1"}})  # fmt: skip
    journal.complete(nested, "2")
    # A crash now: the orchestrator's state is rebuilt from the journal (and through its stored
    # form); it decides the same round again (same ids: a duplicate), never the tool call again.
    rebuilt: RunState | None = None
    for event in journal.events:
        rebuilt = evolve(event, rebuilt)
    assert rebuilt is not None
    rebuilt = RunState.load(orjson.loads(orjson.dumps(rebuilt)))
    assert rebuilt == journal.state
    again = decide(rebuilt, CATALOG, OrchestratorConfig())
    assert [e.event_id for e in again] == []  # round 1 is in flight
    assert sum(1 for e in journal.events if isinstance(e, ToolCallRequested) and e.tool == "calculator") == 1


def test_bad_rounds_end_the_program_with_an_error_observation() -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"status": "call", "index": 0, "tool": RUN_CODE_TOOL, "arguments": {}}, "not a function this program"),
        ({"status": "call", "index": 3, "tool": "calculator", "arguments": {}}, "unexpected call #3"),
        ({"status": "error", "error": "refused: line 1: import of 'os' is not allowed"}, "import of 'os'"),
        ({"status": "done", "output": ""}, "(the program printed nothing)"),
    ]
    for answer, expected in cases:
        journal, round0 = started(["calculator", RUN_CODE_TOOL])
        ended = journal.answer(round0, answer)[0]
        assert isinstance(ended, ToolCallCompleted) and expected in ended.content
    journal, round0 = started(["calculator", RUN_CODE_TOOL])
    ended = journal.complete(round0, "DENIED by policy (tenant_deny): run_code is on this tenant's deny list", True)[0]
    assert isinstance(ended, ToolCallCompleted) and ended.is_error and "deny list" in ended.content


def test_the_model_cannot_supply_recorded_results() -> None:
    journal = Journal(["calculator", RUN_CODE_TOOL])
    fake = [{"tool": "calculator", "arguments": {"expression": "1"}, "result": "9", "is_error": False}]
    decided = journal.feed(completion(1, [(RUN_CODE_TOOL, {"code": "print(1)", "calls": fake})]))
    assert not [e for e in decided if isinstance(e, ToolCallRequested)]  # an invalid call, never run
    state = journal.state
    assert state is not None and "takes only code" in state.messages[-1].content


def test_a_budget_refusal_asks_for_the_same_call_again_on_resume() -> None:
    journal, round0 = started(["calculator", RUN_CODE_TOOL])
    [nested] = journal.answer(round0, {"status": "call", "index": 0, "tool": "calculator",
                                       "arguments": {"expression": "1+1"}})  # fmt: skip
    assert isinstance(nested, ToolCallRequested)
    refused = BudgetExceeded(f"{nested.call_id}/budget", RUN, "t", 1, nested.call_id, "tool", "budget_usd", "over",
                             True, "{}", 2)  # fmt: skip
    [halted] = journal.feed(refused)
    assert isinstance(halted, RunHalted)
    state = journal.state
    assert state is not None and not state.code[0].calls[0].requested


def test_run_code_is_only_pinned_when_named() -> None:
    journal = Journal([])
    first = journal.events[1]
    assert isinstance(first, RunStarted) and RUN_CODE_TOOL not in first.tools_json
    assert "Code mode" not in first.system_prompt
