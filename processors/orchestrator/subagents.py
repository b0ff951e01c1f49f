"""Subagents in the orchestrator: a run starts child runs through the `spawn_agent` tool.

The life of one spawn call (call id C of parent run P), every step a journaled event:
  1. the model plans C; decide checks it (depth, children cap, tools a subset of P's, steps left)
     and either refuses it at once (a `ToolCallCompleted` error on P: the model reads why) or emits
     C's `ToolCallRequested` with its arguments made exact: its step cap, carved out of P's steps
     (P's `max_steps` drops by as much when the request is folded, so P's cap holds for the tree);
  2. the cost governor reserves the child's budget on P's ledger (`BudgetReserved`) or refuses it
     (`BudgetExceeded`, folded as C's error observation, never a halt of P);
  3. decide emits the child's `RunRequested` (run id `ids.child_run_id(C)`, depth + 1, the
     reserved budget as its caps, only the task as its context). Re-decided after a crash it is
     the same event; the child's orchestrator ignores a request for a run it has (or had);
  4. the child's end (completed, failed, cancelled; a halt at a limit ends a child as failed, as
     nobody would resume it) is emitted with C's `ToolCallCompleted` on P, in the same write: its
     final answer, condensed, or why it did not finish. P folds it like any tool result.
P ending while children are in flight (a cancel) cancels them, each by its deterministic id.
No executor is involved: a child may run for as long as its own caps allow.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from agentstream import ids
from agentstream.events import (
    BudgetExceeded,
    BudgetReserved,
    CancelRequested,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunHalted,
    RunRequested,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.llm import tools_from_json
from agentstream.processors.orchestrator.graph.plan import children_in_flight
from agentstream.processors.orchestrator.state import PlannedCall, RunState, replace
from agentstream.settings import CostSettings, OrchestratorSettings, once
from agentstream.subagents import SPAWN_AGENT, SpawnArgs, condense


@dataclass(frozen=True, slots=True)
class SubagentLimits:
    max_depth: int = 3  # a run at this depth starts no child
    max_children: int = 16  # children one run may start in all
    # With no cost governor (AGENTSTREAM_COST_GOVERNOR=0) nothing reserves a child's budget: the
    # child starts as soon as its request is folded, with the budget it asked for.
    governed: bool = True


@functools.cache
def platform_limits() -> SubagentLimits:
    chosen = once(OrchestratorSettings)
    return SubagentLimits(chosen.subagent_max_depth, chosen.subagent_max_children, once(CostSettings).governor)


def child_request(
    parent: RunState,
    parent_call_id: str,
    task: str,
    tools: tuple[str, ...],
    max_steps: int,
    budget_usd: float,
    budget_tokens: int,
    *,
    limits: SubagentLimits | None = None,
) -> RunRequested | str:
    """The child run `parent` starts for its call `parent_call_id`, or why it may not (a refusal the
    parent observes). Pure; the same arguments give the same event."""
    problem = refusal(parent, task, tools, limits or platform_limits())
    if problem is None and max_steps < 1:
        problem = "subagent refused: it needs at least 1 step"
    return problem if problem is not None else _child(parent, parent_call_id, task, tools, max_steps,
                                                      budget_usd, budget_tokens)  # fmt: skip


def refusal(parent: RunState, task: str, tools: tuple[str, ...], limits: SubagentLimits) -> str | None:
    if parent.depth >= limits.max_depth:
        return (f"subagent refused: this run is at depth {parent.depth}, the platform's cap "
                f"(AGENTSTREAM_SUBAGENT_MAX_DEPTH={limits.max_depth}); do this part yourself")  # fmt: skip
    if parent.children >= limits.max_children:
        return (f"subagent refused: this run has started {parent.children} subagents, the cap "
                f"(AGENTSTREAM_SUBAGENT_MAX_CHILDREN={limits.max_children})")  # fmt: skip
    if not task.strip():
        return "subagent refused: the task is empty"
    pinned = {t.name for t in tools_from_json(parent.tools_json)}
    if unknown := sorted(set(tools) - pinned):
        return f"subagent refused: tools not available to this run: {', '.join(unknown)}"
    return None


def _child(
    parent: RunState, call_id: str, task: str, tools: tuple[str, ...], max_steps: int, usd: float, tokens: int
) -> RunRequested:
    run = ids.child_run_id(call_id)
    return RunRequested(
        event_id=ids.run_requested_id(run), run_id=run, tenant_id=parent.tenant_id, task=task, model=parent.model,
        tools=list(tools), max_steps=max_steps, idempotency_key=call_id, labels=dict(parent.labels),
        budget_usd=usd, budget_tokens=tokens, on_loop=parent.on_loop, api_key_id=parent.api_key_id,
        context_json=parent.context_json, parent_run_id=parent.run_id, parent_call_id=call_id,
        depth=parent.depth + 1,
    )  # fmt: skip


# -- decide ---------------------------------------------------------------------------------------


def spawn_events(state: RunState, limits: SubagentLimits | None = None) -> list[RunEvent]:
    """What the step's spawn calls need: their request (or refusal) and, once a child's budget is
    reserved, the child's RunRequested. Every other planned call is decide's business."""
    if not any(p.tool == SPAWN_AGENT for p in state.planned):
        return []
    limits = limits or platform_limits()
    fresh = [p for p in state.planned if p.tool == SPAWN_AGENT and p.needs_request]
    free = steps_free(state)
    started = state.children
    out: list[RunEvent] = []
    for p in state.planned:
        if p.tool != SPAWN_AGENT:
            continue
        if p.needs_request:
            # Each fresh spawn's share is decided in the model's order from what the earlier ones
            # left, so folding some of them first and deciding again gives the others the same.
            share = len(fresh) - fresh.index(p)
            event, carved = _spawn(replace(state, children=started), p, free, share, limits)
            free, started = free - carved, started + (1 if carved else 0)
            out.append(event)
        elif p.result is None and (p.child_budget or not limits.governed):
            args = SpawnArgs.parse(p.arguments_json)
            usd, tokens = _budget(p.child_budget) if p.child_budget else (args.budget_usd, args.budget_tokens)
            out.append(_child(state, p.call_id, args.task, args.tools, args.max_steps, usd, tokens))
    return out


def steps_free(state: RunState) -> int:
    # One step stays with the parent: it must read the children's results and answer.
    return state.max_steps - state.step - 1


def _spawn(state: RunState, p: PlannedCall, free: int, share: int, limits: SubagentLimits) -> tuple[RunEvent, int]:
    args = SpawnArgs.parse(p.arguments_json)
    problem = refusal(state, args.task, args.tools, limits)
    steps = min(args.max_steps, free) if args.max_steps else free // share
    if problem is None and steps < 1:
        problem = (f"subagent refused: no steps left to give it ({state.step} of this run's {state.max_steps} "
                   "used or handed to other subagents, one kept to answer)")  # fmt: skip
    if problem is not None:
        return _observation(state.run_id, state.tenant_id, state.step, p.call_id, problem, is_error=True), 0
    exact = replace(args, max_steps=steps)
    requested = ToolCallRequested(
        event_id=ids.requested_event_id(p.call_id), run_id=state.run_id, tenant_id=state.tenant_id,
        step=state.step, call_id=p.call_id, tool_call_id=p.tool_call_id, tool=SPAWN_AGENT,
        arguments_json=exact.to_json(), idempotency_key=p.call_id, timeout_ms=0,
        tool_version=state.tool_versions.get(SPAWN_AGENT, ""),
    )  # fmt: skip
    return requested, steps


def _observation(run: str, tenant: str, step: int, call_id: str, content: str, *, is_error: bool) -> ToolCallCompleted:
    return ToolCallCompleted(
        event_id=ids.completed_event_id(call_id), run_id=run, tenant_id=tenant, step=step, call_id=call_id,
        tool=SPAWN_AGENT, idempotency_key=call_id, content=content, is_error=is_error, duration_ms=0.0,
    )  # fmt: skip


def _budget(reserved: str) -> tuple[float, int]:
    usd, tokens = reserved.split(" ")
    return float(usd), int(tokens)


def finish(state: RunState, decided: list[RunEvent]) -> list[RunEvent]:
    """A child's halt becomes its end; a child's end is also its parent's observation; a parent's
    end cancels the children still in flight. In the same write as the end itself."""
    if not state.parent_run_id and not state.children and state.graph is None:
        return decided
    out: list[RunEvent] = []
    for event in decided:
        if isinstance(event, RunHalted) and state.parent_run_id:
            reason = f"halted at a limit ({event.limit}): {event.reason}; a subagent is not resumed"
            event = RunFailed(ids.terminal_id(state.run_id), state.run_id, state.tenant_id, event.steps,
                              event.limit, reason)  # fmt: skip
        out.append(event)
        if isinstance(event, RunCompleted | RunFailed | RunCancelled):
            out.extend(_cascade(state, event))
            if state.parent_run_id:
                out.append(_to_parent(state, event))
    return out


def _cascade(state: RunState, end: RunEvent) -> list[RunEvent]:
    planned = [ids.child_run_id(p.call_id) for p in state.planned
               if p.tool == SPAWN_AGENT and p.requested and p.result is None]  # fmt: skip
    return [
        CancelRequested(
            event_id=ids.cancel_requested_id(child),
            run_id=child,
            tenant_id=state.tenant_id,
            reason=f"parent run {state.run_id} ended ({end.type_name})",
            requested_by=f"run:{state.run_id}",
        )
        for child in dict.fromkeys([*planned, *children_in_flight(state)])
    ]


def _to_parent(state: RunState, end: RunCompleted | RunFailed | RunCancelled) -> ToolCallCompleted:
    run = state.run_id
    if isinstance(end, RunCompleted):
        content, is_error = condense(end.final_answer), False
    elif isinstance(end, RunFailed):
        content, is_error = condense(f"child run {run} failed: {end.error_type}: {end.reason}"), True
    else:
        content, is_error = condense(f"child run {run} cancelled: {end.reason}"), True
    return _observation(state.parent_run_id, state.tenant_id, _step_of(state.parent_call_id),
                        state.parent_call_id, content, is_error=is_error)  # fmt: skip


def _step_of(call_id: str) -> int:
    # "<run>/s0003/tool01" (ids.tool_call_id); a graph node's call may be shaped otherwise.
    parts = call_id.split("/")
    return int(parts[1][1:]) if len(parts) > 2 and parts[1][1:].isdigit() else 0


# -- evolve ---------------------------------------------------------------------------------------


def spawn_requested(event: ToolCallRequested, state: RunState) -> RunState:
    """The spawn is on the record: its steps leave the parent's cap and it counts as a child."""
    found = next((p for p in state.planned if p.call_id == event.call_id), None)
    if found is None or found.requested or found.result is not None:
        return state
    carved = SpawnArgs.parse(event.arguments_json).max_steps
    planned = tuple(
        replace(p, requested=True, arguments_json=event.arguments_json) if p is found else p for p in state.planned
    )
    return replace(state, planned=planned, max_steps=state.max_steps - carved, children=state.children + 1)


def budget_reserved(event: BudgetReserved, state: RunState | None) -> RunState | None:
    if state is None or state.terminal:
        return state
    if not any(p.call_id == event.call_id and p.tool == SPAWN_AGENT and not p.child_budget for p in state.planned):
        return state
    budget = f"{event.reserved_usd!r} {event.reserved_tokens}"
    planned = tuple(replace(p, child_budget=budget) if p.call_id == event.call_id else p for p in state.planned)
    return replace(state, planned=planned)


def spawn_refused(event: BudgetExceeded, state: RunState) -> RunState | None:
    """The parent cannot afford the child: an observation, and the steps carved for it come back.
    None when `event` is not about a waiting spawn call (the ordinary halt applies)."""
    found = next((p for p in state.planned if p.call_id == event.call_id), None)
    if found is None or found.tool != SPAWN_AGENT or found.result is not None or found.child_budget:
        return None
    content = f"subagent not started: the cost governor refused its budget: {event.reason}"
    planned = tuple(replace(p, result=content, is_error=True) if p is found else p for p in state.planned)
    refund = SpawnArgs.parse(found.arguments_json).max_steps if found.requested else 0
    return replace(state, planned=planned, max_steps=state.max_steps + refund)


def keeps_in_flight(event: RunEvent) -> bool:
    """A child's request stays marked as emitted when read back, so its parent, deciding again on
    each of its children's results, does not send it again (a restart may, harmlessly)."""
    return isinstance(event, RunRequested) and bool(event.parent_run_id)
