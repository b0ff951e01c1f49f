"""evolve(state, event) -> state: the only way a run's state changes. Pure and total: an event
that does not fit the state (a duplicate, a late result after cancel) leaves it unchanged."""

from __future__ import annotations

from dataclasses import replace
from functools import singledispatch

import orjson

from agentstream import ids
from agentstream.events import (
    CancelRequested,
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    ResumeRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunHalted,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.llm import Message, ToolCall, tools_from_json
from processors.orchestrator.state import PlannedCall, RunState, assistant_message
from processors.orchestrator.validation import validate_call


@singledispatch
def evolve(event: Event, state: RunState | None) -> RunState | None:
    return state


@evolve.register
def _(event: RunRequested, state: RunState | None) -> RunState | None:
    if state is not None:
        return state  # a re-sent request for an existing run changes nothing
    return RunState(
        run_id=event.run_id,
        tenant_id=event.tenant_id,
        status="requested",
        task=event.task,
        model=event.model,
        tool_names=tuple(event.tools),
        max_steps=event.max_steps,
        labels=dict(event.labels),
    )


@evolve.register
def _(event: RunStarted, state: RunState | None) -> RunState | None:
    if state is None or state.status != "requested":
        return state
    return replace(
        state,
        status="running",
        tools_json=event.tools_json,
        tool_versions=dict(event.tool_versions),
        max_steps=event.max_steps,
        messages=(Message("system", event.system_prompt), Message("user", state.task)),
    )


@evolve.register
def _(event: CancelRequested, state: RunState | None) -> RunState | None:
    if state is None or state.terminal or state.cancel_reason is not None:
        return state
    return replace(state, cancel_reason=event.reason or "cancel requested")


@evolve.register
def _(event: LlmCallRequested, state: RunState | None) -> RunState | None:
    if state is None or state.status != "running" or event.step != state.step + 1:
        return state
    return replace(state, step=event.step, llm_pending=event.call_id)


@evolve.register
def _(event: LlmCallFailed, state: RunState | None) -> RunState | None:
    if state is None or state.llm_pending != event.call_id or not event.final:
        return state
    reason = f"model call failed after {event.attempt} attempt(s): {event.error_type}: {event.message}"
    return replace(state, llm_pending=None, llm_failure=reason)


@evolve.register
def _(event: LlmCallCompleted, state: RunState | None) -> RunState | None:
    if state is None or state.llm_pending != event.call_id:
        return state
    calls = tuple(ToolCall.from_dict(c) for c in orjson.loads(event.tool_calls_json))
    state = replace(state, llm_pending=None, messages=(*state.messages, assistant_message(event.text, calls)))
    if not calls:
        return replace(state, final_answer=event.text, invalid_streak=0)
    tools = {t.name: t for t in tools_from_json(state.tools_json)}
    planned = []
    for index, call in enumerate(calls):
        error = validate_call(call, tools)
        planned.append(
            PlannedCall(
                call_id=ids.tool_call_id(state.run_id, state.step, index),
                tool_call_id=call.id,
                tool=call.name,
                arguments_json=call.arguments_json,
                result=error,
                is_error=error is not None,
            )
        )
    all_invalid = all(p.is_error for p in planned)
    state = replace(state, planned=tuple(planned), invalid_streak=state.invalid_streak + 1 if all_invalid else 0)
    return _observe_if_complete(state)


@evolve.register
def _(event: ToolCallRequested, state: RunState | None) -> RunState | None:
    if state is None:
        return state
    planned = tuple(replace(p, requested=True) if p.call_id == event.call_id else p for p in state.planned)
    return replace(state, planned=planned)


@evolve.register
def _(event: ToolCallCompleted, state: RunState | None) -> RunState | None:
    if state is None or state.terminal:
        return state  # a late result after the run ended is on the record, and ignored
    planned = tuple(
        replace(p, result=event.content, is_error=event.is_error)
        if p.call_id == event.call_id and p.result is None
        else p
        for p in state.planned
    )
    return _observe_if_complete(replace(state, planned=planned))


def _observe_if_complete(state: RunState) -> RunState:
    """Once every call of the step has a result, the observations join the conversation in the
    order the model asked for them (not the order they finished), so replay is deterministic."""
    if not state.planned or any(p.result is None for p in state.planned):
        return state
    observations = tuple(
        Message("tool", p.result or "", tool_call_id=p.tool_call_id, is_error=p.is_error) for p in state.planned
    )
    return replace(state, planned=(), messages=(*state.messages, *observations))


@evolve.register
def _(event: RunHalted, state: RunState | None) -> RunState | None:
    if state is None or state.status != "running" or event.halt != state.halts + 1:
        return state
    return replace(state, status="halted", halts=event.halt, outcome_reason=event.reason)


@evolve.register
def _(event: ResumeRequested, state: RunState | None) -> RunState | None:
    # Only the resume of the current halt counts: a late or repeated one changes nothing.
    if state is None or state.status != "halted" or event.halt != state.halts:
        return state
    return replace(state, status="running", max_steps=state.max_steps + max(0, event.add_steps), outcome_reason="")


@evolve.register
def _(event: RunCompleted, state: RunState | None) -> RunState | None:
    return None if state is None else replace(state, status="completed", outcome_reason=event.reason)


@evolve.register
def _(event: RunFailed, state: RunState | None) -> RunState | None:
    return None if state is None else replace(state, status="failed", outcome_reason=event.reason)


@evolve.register
def _(event: RunCancelled, state: RunState | None) -> RunState | None:
    return None if state is None else replace(state, status="cancelled", outcome_reason=event.reason)
