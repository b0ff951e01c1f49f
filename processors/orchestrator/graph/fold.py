"""The graph run's share of evolve: the events of its nodes' calls move its progress. The run's
other events (start, cancel, halts, the gate's decisions) fold as for any run."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from agentstream.events import (
    BudgetExceeded,
    BudgetReserved,
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.processors.orchestrator.graph import progress as graph
from agentstream.processors.orchestrator.graph.state import GraphProgress
from agentstream.processors.orchestrator.state import RunState, replace
from agentstream.workflows.definition import pinned
from agentstream.workflows.errors import WorkflowError

E = TypeVar("E", bound=Event)


def unless_graph(
    handler: Callable[[E, RunState | None], RunState | None],
) -> Callable[[E, RunState | None], RunState | None]:
    """`handler` for every run but a graph run, whose events `fold` takes (for evolve's registrations)."""

    def folded(event: E, state: RunState | None) -> RunState | None:
        return fold(event, state) if state is not None and state.graph is not None else handler(event, state)

    return folded


def _subagent(state: RunState, token: str) -> bool:
    """Whether `token` is a subagent node's spawn in flight (its budget is being reserved)."""
    assert state.graph is not None
    return token in state.graph.running and pinned(state.workflow_json).node(graph.token_node(token)).type == "subagent"


def started(event: RunStarted, state: RunState) -> RunState:
    """A graph run pinned its definition: it enters its start node."""
    try:
        wf = pinned(event.workflow_json)
    except WorkflowError as exc:  # checked when pinned; a definition that no longer parses fails the run
        return replace(state, workflow_json=event.workflow_json, graph=GraphProgress(failure=str(exc)))
    return replace(state, workflow_json=event.workflow_json, graph=graph.start(wf, state.task))


def fold(event: Event, state: RunState) -> RunState:
    """`state` is a running graph run's (its `graph` is set)."""
    progress = state.graph
    assert progress is not None
    match event:
        case LlmCallRequested() | ToolCallRequested():
            after = graph.requested(progress, graph.token_of(state.run_id, event.call_id))
            if isinstance(event, LlmCallRequested) and after is not progress:
                return replace(state, graph=after, step=max(state.step, event.step))
        case LlmCallCompleted():
            token = graph.token_of(state.run_id, event.call_id)
            after = graph.completed(pinned(state.workflow_json), progress, token, event.text, False)
        case ToolCallCompleted() if not state.terminal:
            token = graph.token_of(state.run_id, event.call_id)
            after = graph.completed(pinned(state.workflow_json), progress, token, event.content, event.is_error)
        case LlmCallFailed() if event.final:
            reason = f"model call failed after {event.attempt} attempt(s): {event.error_type}: {event.message}"
            after = graph.failed(progress, graph.token_of(state.run_id, event.call_id), reason)
        case BudgetExceeded() if _subagent(state, token := graph.token_of(state.run_id, event.call_id)):
            # The run cannot afford the child: the node's failure, not a halt (no resume would help
            # a budget its caps were set to), as a ReAct parent's refused spawn is an observation.
            reason = f"subagent not started: the cost governor refused its budget: {event.reason}"
            after = graph.completed(pinned(state.workflow_json), progress, token, reason, True)
        case BudgetReserved() if _subagent(state, token := graph.token_of(state.run_id, event.call_id)):
            if token in progress.budgets:
                return state
            budget = f"{event.reserved_usd!r} {event.reserved_tokens}"
            after = replace(progress, budgets={**progress.budgets, token: budget})
        case BudgetExceeded():
            after = graph.unrequested(progress, graph.token_of(state.run_id, event.call_id))
            if after is not progress and state.status == "running" and not state.halt_limit:
                return replace(state, graph=after, halt_limit=event.limit, halt_reason=event.reason)
        case _:
            return state
    return state if after is progress else replace(state, graph=after)
