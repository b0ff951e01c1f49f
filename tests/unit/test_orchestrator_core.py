"""The orchestrator's pure core, driven without Kafka: evolve/decide over hand-written journals."""

from __future__ import annotations

import orjson

from agentstream import ids
from agentstream.events import (
    CancelRequested,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    ResumeRequested,
    RunEvent,
    RunHalted,
    RunRequested,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.llm import ToolSpec, messages_from_json
from agentstream.processors.orchestrator.decide import OrchestratorConfig, decide
from agentstream.processors.orchestrator.evolve import evolve
from agentstream.processors.orchestrator.state import RunState
from agentstream.tools.replay import replay_events

CALC = ToolSpec(
    "calculator",
    "arithmetic",
    {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
)
CATALOG = {"calculator": CALC}
RUN = "run_test"


def completion(step: int, text: str, calls: list[tuple[str, str]]) -> LlmCallCompleted:
    call_id = ids.llm_call_id(RUN, step)
    tool_calls = [{"id": f"c{step}_{i}", "name": n, "arguments_json": a} for i, (n, a) in enumerate(calls)]
    return LlmCallCompleted(
        ids.completed_event_id(call_id), RUN, "t", step, call_id, "scripted", "m", text,
        orjson.dumps(tool_calls).decode(), "tool_calls" if calls else "stop", 10, 5, 0, 1.0, 1,
    )  # fmt: skip


class Loop:
    """An in-memory twin of the Kafka loop: every decided event is appended and evolved at once."""

    def __init__(
        self,
        config: OrchestratorConfig | None = None,
        max_steps: int = 10,
        on_loop: str = "",
        on_repeated_denial: str = "flag",  # the tenant's policy, read when the run starts
    ) -> None:
        self.config = config or OrchestratorConfig()
        self.on_repeated_denial = on_repeated_denial
        self.journal: list[RunEvent] = []
        self.state: RunState | None = None
        self.feed(RunRequested(ids.run_requested_id(RUN), RUN, "t", "task", "m", [], max_steps, "k", on_loop=on_loop))

    def feed(self, event: RunEvent) -> list[RunEvent]:
        self.journal.append(event)
        self.state = evolve(event, self.state)
        assert self.state is not None
        decided = decide(self.state, CATALOG, self.config, None, self.on_repeated_denial)
        for d in decided:
            assert self.state is not None
            self.journal.append(d)
            self.state = evolve(d, self.state)
        follow = []
        if decided:
            assert self.state is not None
            follow = decide(self.state, CATALOG, self.config, None, self.on_repeated_denial)
            for d in follow:
                self.journal.append(d)
                self.state = evolve(d, self.state)
        return decided + follow

    def tool_result(self, request: ToolCallRequested, content: str, is_error: bool = False) -> list[RunEvent]:
        return self.feed(
            ToolCallCompleted(
                ids.completed_event_id(request.call_id),
                RUN,
                "t",
                request.step,
                request.call_id,
                request.tool,
                request.idempotency_key,
                content,
                is_error,
                1.0,
            )
        )


def test_react_loop_runs_tools_and_completes() -> None:
    loop = Loop()
    assert loop.state is not None and loop.state.status == "running"
    first = [e for e in loop.journal if isinstance(e, LlmCallRequested)]
    assert len(first) == 1 and first[0].call_id == ids.llm_call_id(RUN, 1)
    out = loop.feed(completion(1, "let me compute", [("calculator", '{"expression": "6*7"}')]))
    (request,) = [e for e in out if isinstance(e, ToolCallRequested)]
    assert request.idempotency_key == request.call_id == ids.tool_call_id(RUN, 1, 0)
    out = loop.tool_result(request, "42")
    (llm,) = [e for e in out if isinstance(e, LlmCallRequested)]
    history = messages_from_json(llm.messages_json)
    assert [m.role for m in history] == ["system", "user", "assistant", "tool"]
    assert history[-1].content == "42" and history[-1].tool_call_id == "c1_0"
    out = loop.feed(completion(2, "It is 42.", []))
    assert [e.type_name for e in out] == ["RunCompleted"]
    final = loop.state
    assert final is not None and final.terminal and final.status == "completed"


def test_tool_results_join_in_call_order_not_arrival_order() -> None:
    loop = Loop()
    out = loop.feed(completion(1, "", [("calculator", '{"expression": "1"}'), ("calculator", '{"expression": "2"}')]))
    first, second = [e for e in out if isinstance(e, ToolCallRequested)]
    assert loop.tool_result(second, "two") == []  # waits for every call of the step
    out = loop.tool_result(first, "one")
    (llm,) = [e for e in out if isinstance(e, LlmCallRequested)]
    assert [m.content for m in messages_from_json(llm.messages_json)[-2:]] == ["one", "two"]


def test_invalid_tool_call_becomes_an_error_observation() -> None:
    loop = Loop()
    out = loop.feed(completion(1, "", [("calculator", "{not json"), ("nope", "{}"), ("calculator", '{"x": 1}')]))
    assert not any(isinstance(e, ToolCallRequested) for e in out)
    (llm,) = [e for e in out if isinstance(e, LlmCallRequested)]
    observations = messages_from_json(llm.messages_json)[-3:]
    assert all(m.is_error for m in observations)
    assert "not valid JSON" in observations[0].content
    assert "unknown tool 'nope'" in observations[1].content
    assert "'expression' is a required property" in observations[2].content


def test_repeated_invalid_calls_end_the_run_with_a_reason() -> None:
    loop = Loop(OrchestratorConfig(max_invalid_streak=2))
    loop.feed(completion(1, "", [("calculator", "bad")]))
    out = loop.feed(completion(2, "", [("calculator", "bad")]))
    # The step check's verdict on the invalid call is journaled before the ending.
    assert [e.type_name for e in out] == ["EvalVerdict", "RunFailed"]
    assert loop.state is not None and "invalid tool calls 2 steps in a row" in loop.state.outcome_reason


def _two_tool_steps(loop: Loop) -> list[RunEvent]:
    out = loop.feed(completion(1, "", [("calculator", '{"expression": "1"}')]))
    out = loop.tool_result(next(e for e in out if isinstance(e, ToolCallRequested)), "1")
    out = loop.feed(completion(2, "", [("calculator", '{"expression": "2"}')]))
    return loop.tool_result(next(e for e in out if isinstance(e, ToolCallRequested)), "2")


def test_run_step_cap_halts_resumably_and_a_resume_of_that_halt_adds_steps() -> None:
    loop = Loop(max_steps=2)
    out = _two_tool_steps(loop)
    assert [e.type_name for e in out] == ["RunHalted"]
    halt = out[0]
    assert isinstance(halt, RunHalted) and halt.resumable and halt.halt == 1 and halt.limit == "step_cap"
    assert loop.state is not None and loop.state.status == "halted"
    assert loop.state.outcome_reason.startswith("step cap reached: 2")
    # A resume naming another halt is stale and changes nothing.
    assert loop.feed(ResumeRequested(ids.resume_id(RUN, 2), RUN, "t", 2, 5, "stale", "tester")) == []
    out = loop.feed(ResumeRequested(ids.resume_id(RUN, 1), RUN, "t", 1, 1, "more", "tester"))
    resumed = loop.state
    assert [e.type_name for e in out] == ["LlmCallRequested"]
    assert resumed is not None and resumed.status == "running" and resumed.max_steps == 3


def test_platform_step_cap_fails_the_run_for_good() -> None:
    loop = Loop(OrchestratorConfig(platform_max_steps=2), max_steps=10)
    out = _two_tool_steps(loop)
    assert [e.type_name for e in out] == ["RunFailed"]
    assert loop.state is not None and loop.state.outcome_reason.startswith("platform step cap reached: 2")


def test_cancel_of_a_halted_run_ends_it() -> None:
    loop = Loop(max_steps=2)
    _two_tool_steps(loop)
    out = loop.feed(CancelRequested(ids.cancel_requested_id(RUN), RUN, "t", "no budget", "tester"))
    assert [e.type_name for e in out] == ["RunCancelled"]


def test_final_model_failure_fails_the_run_and_retries_do_not() -> None:
    loop = Loop()
    call_id = ids.llm_call_id(RUN, 1)
    attempt = LlmCallFailed(
        ids.failed_event_id(call_id, 1), RUN, "t", 1, call_id, "p", "http", "500", 500, True, 1, False
    )
    assert loop.feed(attempt) == []
    final = LlmCallFailed(ids.failed_event_id(call_id, 2), RUN, "t", 1, call_id, "p", "http", "500", 500, True, 2, True)
    assert [e.type_name for e in loop.feed(final)] == ["RunFailed"]


def test_cancel_stops_new_work_and_late_results_are_ignored() -> None:
    loop = Loop()
    out = loop.feed(completion(1, "", [("calculator", '{"expression": "1"}')]))
    request = next(e for e in out if isinstance(e, ToolCallRequested))
    out = loop.feed(CancelRequested(ids.cancel_requested_id(RUN), RUN, "t", "user asked", "tester"))
    assert [e.type_name for e in out] == ["RunCancelled"]
    before = loop.state
    assert loop.tool_result(request, "late") == []
    assert before is not None and before.status == "cancelled"


def test_duplicates_change_nothing() -> None:
    loop = Loop()
    done = completion(1, "", [("calculator", '{"expression": "1"}')])
    loop.feed(done)
    state = loop.state
    assert loop.feed(done) == [] and loop.state == state
    assert evolve(loop.journal[0], state) is state  # a re-sent RunRequested


def test_unknown_requested_tool_fails_at_start() -> None:
    state = evolve(RunRequested(ids.run_requested_id(RUN), RUN, "t", "x", "m", ["rm_rf"], 5, "k"), None)
    assert state is not None
    (failed,) = decide(state, CATALOG, OrchestratorConfig())
    assert failed.type_name == "RunFailed" and "rm_rf" in failed.reason  # type: ignore[attr-defined]


# -- deterministic replay over recorded histories (one must pass, one must fail) --------------------


def _recorded_history() -> list[RunEvent]:
    loop = Loop()
    out = loop.feed(completion(1, "compute", [("calculator", '{"expression": "2+2"}')]))
    loop.tool_result(next(e for e in out if isinstance(e, ToolCallRequested)), "4")
    loop.feed(completion(2, "4", []))
    return loop.journal


def test_replay_of_a_recorded_history_is_identical() -> None:
    result = replay_events(_recorded_history())
    assert result.deterministic, result.divergences
    assert result.decisions_matched == 5  # started, 2 model calls, 1 tool call, completion


def test_replay_with_a_changed_orchestrator_is_detected_as_non_deterministic() -> None:
    result = replay_events(_recorded_history(), OrchestratorConfig(system_prompt="a different prompt"))
    assert not result.deterministic
    assert any("system_prompt" in d for d in result.divergences)


def test_replay_detects_a_tampered_model_output() -> None:
    history = _recorded_history()
    tampered = [
        completion(1, "compute", [("calculator", '{"expression": "3+3"}')]) if isinstance(e, LlmCallCompleted) and e.step == 1 else e
        for e in history
    ]  # fmt: skip
    result = replay_events(tampered)
    assert any("arguments_json" in d for d in result.divergences)


def test_a_conversation_past_the_journals_budget_ends_the_run_instead_of_a_request_it_cannot_hold() -> None:
    from agentstream.events import RunFailed
    from agentstream.journal_limits import model_output_limit

    loop = Loop()
    big = "w" * 600_000  # each answer fits a record; two of them in one request do not
    out = loop.feed(completion(1, big, [("calculator", '{"expression": "1"}')]))
    (request,) = [e for e in out if isinstance(e, ToolCallRequested)]
    (llm,) = [e for e in loop.tool_result(request, "1") if isinstance(e, LlmCallRequested)]
    assert len(llm.messages_json) < model_output_limit()
    out = loop.feed(completion(2, big, [("calculator", '{"expression": "2"}')]))
    (request,) = [e for e in out if isinstance(e, ToolCallRequested)]
    out = loop.tool_result(request, "2")
    assert not any(isinstance(e, LlmCallRequested) for e in out)
    (failed,) = [e for e in out if isinstance(e, RunFailed)]
    assert failed.error_type == "context_too_large"
    assert str(model_output_limit()) in failed.reason and "w" * 100 not in failed.reason
    assert loop.state is not None and loop.state.terminal
