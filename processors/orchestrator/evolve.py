"""evolve(state, event) -> state: the only way a run's state changes. Pure and total: an event
that does not fit the state (a duplicate, a late result after cancel) leaves it unchanged."""

from __future__ import annotations

from collections.abc import Callable
from functools import singledispatch

import orjson

from agentstream import ids
from agentstream.codemode.interface import RUN_CODE_TOOL
from agentstream.events import (
    ApprovalDecided,
    BudgetExceeded,
    BudgetReserved,
    CancelRequested,
    ContextCompacted,
    EvalVerdict,
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    LoopDetected,
    PolicyDecided,
    ResumeRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunFlagged,
    RunHalted,
    RunRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.llm import Message, ToolCall, tools_from_json
from agentstream.processors.orchestrator import codemode, subagents
from agentstream.processors.orchestrator.compacting import compaction_requested, context_compacted
from agentstream.processors.orchestrator.evaluating import judge_answer, judge_output, judge_results, verdict_journaled
from agentstream.processors.orchestrator.graph import fold as graph_fold
from agentstream.processors.orchestrator.loops import commit, denial_action, denied, observe, signatures
from agentstream.processors.orchestrator.state import PlannedCall, RunState, assistant_message, replace
from agentstream.processors.orchestrator.validation import validate_call
from agentstream.subagents import SPAWN_AGENT


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
        on_loop="warn" if event.on_loop == "warn" else "halt",
        context_json=event.context_json,
        task_blob=event.task_blob,
        parent_run_id=event.parent_run_id,
        parent_call_id=event.parent_call_id,
        depth=event.depth,
        api_key_id=event.api_key_id,
        workflow=event.workflow,
        workflow_version=event.workflow_version,
    )


@evolve.register
def _(event: RunStarted, state: RunState | None) -> RunState | None:
    if state is None or state.status != "requested":
        return state
    state = replace(
        state,
        status="running",
        tools_json=event.tools_json,
        tool_versions=dict(event.tool_versions),
        max_steps=event.max_steps,
        messages=(Message("system", event.system_prompt), Message("user", state.task, blob=state.task_blob or None)),
        on_repeated_denial=denial_action(event.on_repeated_denial),
        context_json=event.context_json,
        orchestrator_version=event.orchestrator_version,
        eval_json=event.eval_json,
    )
    return graph_fold.started(event, state) if event.workflow_json else state


@evolve.register
def _(event: CancelRequested, state: RunState | None) -> RunState | None:
    if state is None or state.terminal or state.cancel_reason is not None:
        return state
    return replace(state, cancel_reason=event.reason or "cancel requested")


@evolve.register
def _(event: LlmCallRequested, state: RunState | None) -> RunState | None:
    if state is not None and state.graph is not None:
        return graph_fold.fold(event, state)
    if event.purpose == "compaction":
        return compaction_requested(event, state)
    if state is None or state.status != "running" or event.step != state.step + 1:
        return state
    return replace(state, step=event.step, llm_pending=event.call_id, compact_failed=False)


@evolve.register
def _(event: LlmCallFailed, state: RunState | None) -> RunState | None:
    if state is not None and state.graph is not None:
        return graph_fold.fold(event, state)
    if state is not None and event.final and state.compact_pending == event.call_id:
        return replace(state, compact_pending=None, compact_failed=True)
    if state is None or state.llm_pending != event.call_id or not event.final:
        return state
    reason = f"model call failed after {event.attempt} attempt(s): {event.error_type}: {event.message}"
    return replace(state, llm_pending=None, llm_failure=reason)


@evolve.register
def _(event: LlmCallCompleted, state: RunState | None) -> RunState | None:
    if state is not None and state.graph is not None:
        return graph_fold.fold(event, state)
    if state is not None and state.compact_pending == event.call_id:
        return replace(state, compact_pending=None, compact_summary=event.text)
    if state is None or state.llm_pending != event.call_id:
        return state
    calls = tuple(ToolCall.from_dict(c) for c in orjson.loads(event.tool_calls_json))
    state = replace(state, llm_pending=None, messages=(*state.messages, assistant_message(event.text, calls)))
    if not calls:
        return replace(judge_answer(state, event.text), final_answer=event.text, invalid_streak=0)
    tools = {t.name: t for t in tools_from_json(state.tools_json)}
    planned = []
    output, *shown = signatures(event.text, calls)  # the output's, then the calls' own in the model's order
    for index, call in enumerate(calls):
        error = validate_call(call, tools) or codemode.refusal(call)
        planned.append(
            PlannedCall(
                call_id=ids.tool_call_id(state.run_id, state.step, index),
                tool_call_id=call.id,
                tool=call.name,
                arguments_json=call.arguments_json,
                result=error,
                is_error=error is not None,
                signature=shown[index][1],
                evidence=shown[index][2],
                invalid=error is not None,
            )
        )
    state = judge_output(state, event.text, planned, tools)
    state = _watch_for_loops(state, event.text, calls)  # only outputs that ask for tools can loop
    state = replace(state, output_signature=output[1])
    all_invalid = all(p.is_error for p in planned)
    state = replace(state, planned=tuple(planned), invalid_streak=state.invalid_streak + 1 if all_invalid else 0)
    return _observe_if_complete(state)


@evolve.register
def _(event: ToolCallRequested, state: RunState | None) -> RunState | None:
    if state is not None and state.graph is not None:
        return graph_fold.fold(event, state)
    if state is None:
        return state
    if event.tool == SPAWN_AGENT:
        return subagents.spawn_requested(event, state)  # its steps leave the parent's cap
    if (state.code or event.tool == RUN_CODE_TOOL) and (coded := codemode.requested(state, event)) is not None:
        return coded  # a code-mode round or one of its program's calls
    planned = tuple(replace(p, requested=True) if p.call_id == event.call_id else p for p in state.planned)
    return replace(state, planned=planned)


@evolve.register
def _(event: ToolCallCompleted, state: RunState | None) -> RunState | None:
    if state is not None and state.graph is not None:
        return graph_fold.fold(event, state)
    if state is None or state.terminal:
        return state  # a late result after the run ended is on the record, and ignored
    if state.code:
        state, consumed = codemode.completed(state, event)
        if consumed:
            return state
    planned = tuple(
        replace(p, result=event.content, is_error=event.is_error, result_blob=event.result_blob)
        if p.call_id == event.call_id and p.result is None
        else p
        for p in state.planned
    )
    return _observe_if_complete(replace(state, planned=planned))


@evolve.register
def _(event: PolicyDecided, state: RunState | None) -> RunState | None:
    """The gate held a call (a deny, or a person must decide): from here it counts as run only if
    an approval comes. An allowed call needs no mark (`ToolCallAuthorized` alone is journaled)."""
    if state is None or event.decision == "allow":
        return state
    return _mark(state, event.call_id, lambda p: replace(p, gated=True))


@evolve.register
def _(event: ApprovalDecided, state: RunState | None) -> RunState | None:
    # The first decision wins, as in the gate; a timeout is a denial.
    found = next((p for p in state.planned if p.call_id == event.call_id), None) if state is not None else None
    if state is None or found is None or not found.gated or found.approval:
        return state
    decision = "approved" if event.approved else "denied"
    return _mark(state, event.call_id, lambda p: replace(p, approval=decision))


def _mark(state: RunState, call_id: str, change: Callable[[PlannedCall], PlannedCall]) -> RunState:
    if not any(p.call_id == call_id and p.result is None for p in state.planned):
        return state
    return replace(state, planned=tuple(change(p) if p.call_id == call_id else p for p in state.planned))


def _watch_for_loops(state: RunState, text: str, calls: tuple[ToolCall, ...]) -> RunState:
    # The window is not extended yet: what this output asks for joins it once it has run.
    _window, loops = observe(state.recent, text, calls)
    # A warning is given once per repeated thing; a halt is given whenever it repeats again.
    fresh = [loop for loop in loops if state.on_loop == "halt" or loop.signature not in state.loops_reported]
    if not fresh:
        return state
    loop = fresh[0]
    state = replace(
        state, loop_kind=loop.kind, loop_signature=loop.signature, loop_count=loop.count, loop_evidence=loop.evidence,
        loop_action="",
    )  # fmt: skip
    if state.on_loop == "halt" and not state.halt_limit:
        what = "tool call" if loop.kind == "tool_call" else "model output"
        reason = f"loop detected: the same {what} {loop.count} times within the last steps: {loop.evidence[:120]}"
        state = replace(state, halt_limit="loop", halt_reason=reason)
    return state


@evolve.register(LoopDetected)
@evolve.register(RunFlagged)
def _(event: LoopDetected | RunFlagged, state: RunState | None) -> RunState | None:
    if state is None or event.signature != state.loop_signature:
        return state
    reported = (*state.loops_reported, event.signature)[-32:]
    return replace(
        state, loop_kind="", loop_signature="", loop_count=0, loop_evidence="", loop_action="", loops_reported=reported
    )


@evolve.register
def _(event: BudgetExceeded, state: RunState | None) -> RunState | None:
    """The cost governor refused a call: it never ran. The run halts with the governor's reason
    and, once resumed, asks for the same call again (same id, so nothing is done twice)."""
    if state is not None and state.graph is not None:
        return graph_fold.fold(event, state)
    if state is None or state.terminal:
        return state
    if (refused := subagents.spawn_refused(event, state)) is not None:
        return _observe_if_complete(refused)  # a child the run cannot afford is an observation
    if event.kind == "model" and state.compact_pending == event.call_id:
        state = replace(state, compact_pending=None)  # asked again, same id, once resumed
    elif event.kind == "model":
        if state.llm_pending != event.call_id:
            return state
        state = replace(state, llm_pending=None, step=state.step - 1)
    else:
        if not any(p.call_id == event.call_id and p.result is None for p in state.planned):
            coded = codemode.refused_by_budget(state, event.call_id) if state.code else None
            if coded is None:
                return state
            state = coded
        else:
            planned = tuple(replace(p, requested=False) if p.call_id == event.call_id else p for p in state.planned)
            state = replace(state, planned=planned)
    if state.status != "running" or state.halt_limit:
        return state
    return replace(state, halt_limit=event.limit, halt_reason=event.reason)


def _observe_if_complete(state: RunState) -> RunState:
    """Once every call of the step has a result, the observations join the conversation in the
    order the model asked for them (not the order they finished), so replay is deterministic."""
    if not state.planned or any(p.result is None for p in state.planned):
        return state
    # An offloaded result joins as its preview plus its handle; the model invoker's adapter puts
    # the full text back for the provider, so the journaled prompt stays small.
    observations = tuple(
        Message("tool", p.result or "", tool_call_id=p.tool_call_id, is_error=p.is_error, blob=p.result_blob or None)
        for p in state.planned
    )
    judged = judge_results(state)  # the step checks' view of the results, applied with the rest
    settled = _settle_loops(state)
    return replace(settled, planned=(), messages=(*state.messages, *observations), **judged)


def _settle_loops(state: RunState) -> RunState:
    """A step's calls are settled: those that ran join the loop window (with the model output that
    asked for them); denied ones join the denial window, where repeating is the policy's business."""
    ran = [p.signature for p in state.planned if p.ran and p.signature]
    if ran and state.output_signature:
        ran.insert(0, state.output_signature)
    window, repeated = state.denied_recent, None
    for p in state.planned:
        if p.denied and p.signature:
            window, loop = denied(window, "d:" + p.signature.removeprefix("t:"), p.evidence)
            repeated = repeated or loop
    state = replace(state, recent=commit(state.recent, ran), output_signature="", denied_recent=window)
    action = state.on_repeated_denial
    if repeated is None or state.loop_signature:
        return state  # nothing repeated, or a notice is still to be journaled (the next repeat reports)
    if action != "halt" and repeated.signature in state.loops_reported:
        return state  # warned or flagged once per repeated call
    state = replace(
        state, loop_kind=repeated.kind, loop_signature=repeated.signature, loop_count=repeated.count,
        loop_evidence=repeated.evidence, loop_action=action,
    )  # fmt: skip
    if action == "halt" and not state.halt_limit:
        reason = f"the same denied call {repeated.count} times within the last steps: {repeated.evidence[:120]}"
        state = replace(state, halt_limit="repeated_denial", halt_reason=reason)
    return state


evolve.register(ContextCompacted, context_compacted)
evolve.register(EvalVerdict, verdict_journaled)
evolve.register(BudgetReserved, graph_fold.unless_graph(subagents.budget_reserved))


@evolve.register
def _(event: RunHalted, state: RunState | None) -> RunState | None:
    if state is None or state.status != "running" or event.halt != state.halts + 1:
        return state
    return replace(state, status="halted", halts=event.halt, outcome_reason=event.reason, halt_limit="", halt_reason="")


@evolve.register
def _(event: ResumeRequested, state: RunState | None) -> RunState | None:
    # Only the resume of the current halt counts: a late or repeated one changes nothing.
    if state is None or state.status != "halted" or event.halt != state.halts:
        return state
    # A fresh window: what repeated before the halt does not count against the resumed run.
    return replace(
        state, status="running", max_steps=state.max_steps + max(0, event.add_steps), outcome_reason="", recent=(),
        denied_recent=(),
    )  # fmt: skip


@evolve.register
def _(event: RunCompleted, state: RunState | None) -> RunState | None:
    return None if state is None else replace(state, status="completed", outcome_reason=event.reason)


@evolve.register
def _(event: RunFailed, state: RunState | None) -> RunState | None:
    return None if state is None else replace(state, status="failed", outcome_reason=event.reason)


@evolve.register
def _(event: RunCancelled, state: RunState | None) -> RunState | None:
    return None if state is None else replace(state, status="cancelled", outcome_reason=event.reason)
