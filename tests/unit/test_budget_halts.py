"""The orchestrator's side of cost control and loop detection, driven without Kafka: a refused
call halts the run with the governor's reason, a resume asks for the same call again, and
repeating tool calls or model outputs halt (or warn) with the evidence recorded."""

from __future__ import annotations

import orjson

from agentstream import ids
from agentstream.events import (
    BudgetExceeded,
    EvalVerdict,
    LlmCallRequested,
    LoopDetected,
    ResumeRequested,
    RunHalted,
    ToolCallRequested,
)
from agentstream.processors.orchestrator.loops import THRESHOLD
from tests.unit.test_orchestrator_core import RUN, Loop, completion


def refuse(request: LlmCallRequested | ToolCallRequested, limit: str = "budget_usd") -> BudgetExceeded:
    kind = "model" if isinstance(request, LlmCallRequested) else "tool"
    return BudgetExceeded(
        f"{request.call_id}/exceeded01", RUN, "t", request.step, request.call_id, kind, limit,
        f"{limit} would be exceeded", True, "{}", 1,
    )  # fmt: skip


def last(loop: Loop, kind: type) -> object:
    return [e for e in loop.journal if isinstance(e, kind)][-1]


def test_a_refused_model_call_halts_and_the_resume_asks_for_the_same_call() -> None:
    loop = Loop()
    first = last(loop, LlmCallRequested)
    assert isinstance(first, LlmCallRequested)
    out = loop.feed(refuse(first))
    (halt,) = out
    assert isinstance(halt, RunHalted) and halt.limit == "budget_usd" and halt.resumable and halt.steps == 0
    assert loop.state is not None and loop.state.status == "halted" and loop.state.llm_pending is None
    out = loop.feed(ResumeRequested(ids.resume_id(RUN, 1), RUN, "t", 1, 0, "raised", "test", add_usd=1.0))
    (again,) = out
    assert isinstance(again, LlmCallRequested)
    assert (again.call_id, again.step, again.messages_json) == (first.call_id, first.step, first.messages_json)


def test_a_refused_tool_call_halts_and_is_requested_again_after_the_resume() -> None:
    loop = Loop()
    out = loop.feed(completion(1, "", [("calculator", '{"expression": "1"}'), ("calculator", '{"expression": "2"}')]))
    first, second = [e for e in out if isinstance(e, ToolCallRequested)]
    assert loop.tool_result(first, "1") == []
    out = loop.feed(refuse(second, "tenant_usd_per_day"))
    assert [e.type_name for e in out] == ["RunHalted"]
    out = loop.feed(ResumeRequested(ids.resume_id(RUN, 1), RUN, "t", 1, 0, "raised", "test"))
    (again,) = out
    assert isinstance(again, ToolCallRequested) and again == second
    out = loop.tool_result(second, "2")
    assert [e.type_name for e in out] == ["LlmCallRequested"]


def test_a_stale_refusal_changes_nothing() -> None:
    loop = Loop()
    request = last(loop, LlmCallRequested)
    assert isinstance(request, LlmCallRequested)
    loop.feed(completion(1, "done", []))
    assert loop.feed(refuse(request)) == []
    assert loop.state is not None and loop.state.status == "completed"


def test_identical_tool_calls_halt_the_run_with_evidence() -> None:
    loop = Loop(max_steps=50)
    out: list[object] = []
    for step in range(1, THRESHOLD + 1):
        out = list(loop.feed(completion(step, f"try {step}", [("calculator", '{"expression": "1+1"}')])))
        if step < THRESHOLD:
            request = next(e for e in out if isinstance(e, ToolCallRequested))
            loop.tool_result(request, "2")
    kinds = [type(e).__name__ for e in out]
    # The step checks' finding on the step ("1+1" is in no task or observation here) is journaled
    # with the halt: an assessment, it changes nothing of it.
    assert kinds == ["LoopDetected", "EvalVerdict", "RunHalted"], kinds
    assert isinstance(out[1], EvalVerdict) and out[1].check_name == "grounding", out[1]
    out = [out[0], out[2]]
    detected = out[0]
    assert isinstance(detected, LoopDetected)
    assert detected.kind == "tool_call" and detected.action == "halt" and detected.count == THRESHOLD
    assert "calculator" in orjson.loads(detected.evidence_json)["repeated"]
    halt = out[1]
    assert isinstance(halt, RunHalted) and halt.limit == "loop" and "loop detected" in halt.reason
    assert not any(isinstance(e, ToolCallRequested) for e in out)  # the repeated call did not run


def test_warn_mode_records_the_loop_once_and_carries_on() -> None:
    loop = Loop(max_steps=50, on_loop="warn")
    warned = []
    for step in range(1, THRESHOLD + 3):
        out = loop.feed(completion(step, "same", [("calculator", '{"expression": "1+1"}')]))
        warned += [e for e in out if isinstance(e, LoopDetected)]
        assert not any(isinstance(e, RunHalted) for e in out)
        request = next(e for e in out if isinstance(e, ToolCallRequested))
        loop.tool_result(request, "2")
    assert len(warned) == 2  # the tool call and the identical model output, each reported once
    assert {w.kind for w in warned} == {"tool_call", "model_output"} and all(w.action == "warn" for w in warned)


def test_on_loop_comes_from_the_request() -> None:
    assert Loop(on_loop="warn").state.on_loop == "warn"  # type: ignore[union-attr]
    assert Loop().state.on_loop == "halt"  # type: ignore[union-attr]
