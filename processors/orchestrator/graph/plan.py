"""The graph run's share of decide: what its progress needs next. Every intent has an id derived
from its node and visit, so deciding twice yields the same events, as for a ReAct step; the
per-node cost is one call's events and nothing more (branch, parallel and join cost none)."""

from __future__ import annotations

from typing import Any

import orjson

from agentstream import ids
from agentstream.events import LlmCallRequested, RunCompleted, RunEvent, RunFailed, RunHalted, ToolCallRequested
from agentstream.llm import Message, messages_to_json
from agentstream.processors.orchestrator.graph import progress as graph
from agentstream.processors.orchestrator.state import RunState
from agentstream.routing import choose_tier
from agentstream.subagents import SPAWN_AGENT, SpawnArgs
from agentstream.workflows.definition import APPROVAL_TOOL, Node, Workflow, pinned, render, render_value
from agentstream.workflows.errors import WorkflowError

GRAPH_SYSTEM_PROMPT = (
    "You are one step of a workflow running on agentstream. Do exactly what the message asks and "
    "answer with the result alone."
)


def plan(state: RunState, max_tokens: int, tool_timeout_ms: int, platform_max_steps: int) -> list[RunEvent]:
    """`state` is a running graph run's with no cancel, halt or pending notice."""
    progress = state.graph
    assert progress is not None
    run, tenant = state.run_id, state.tenant_id
    if progress.failure:
        return [RunFailed(ids.terminal_id(run), run, tenant, state.step, "workflow", progress.failure[:2000])]
    wf = pinned(state.workflow_json)
    if progress.done:
        reason = "workflow path: " + " ".join(progress.path)
        return [RunCompleted(ids.terminal_id(run), run, tenant, state.step, graph.answer(wf, progress), reason[:2000])]
    out: list[RunEvent] = []
    step = state.step
    for token in progress.ready:
        node = wf.node(graph.token_node(token))
        if node.type == "model":
            if step >= min(state.max_steps, platform_max_steps):
                halt = state.halts + 1
                reason = f"step cap reached: {step} model calls (run cap {state.max_steps}); resume with more steps"
                return [*out, RunHalted(ids.halt_id(run, halt), run, tenant, step, halt, "step_cap", reason, True)]
            step += 1
            out.append(_model_call(state, wf, node, token, step, max_tokens))
        elif node.type == "subagent":
            out.append(_spawn(state, node, token, tool_timeout_ms))
        else:
            out.append(_tool_call(state, node, token, tool_timeout_ms))
    return [*out, *_children(state, wf)]


def _model_call(state: RunState, wf: Workflow, node: Node, token: str, step: int, max_tokens: int) -> RunEvent:
    call = graph.call_id(state.run_id, token)
    assert state.graph is not None
    messages = (Message("system", GRAPH_SYSTEM_PROMPT), Message("user", render(node.prompt, state.graph.values)))
    tier, tier_reason = choose_tier(step, messages, state.model)
    return LlmCallRequested(
        event_id=ids.requested_event_id(call), run_id=state.run_id, tenant_id=state.tenant_id, step=step,
        call_id=call, model=state.model, messages_json=messages_to_json(messages), tools_json="[]",
        max_tokens=max_tokens, tier=tier, tier_reason=tier_reason,
    )  # fmt: skip


def _tool_call(state: RunState, node: Node, token: str, timeout_ms: int) -> RunEvent:
    assert state.graph is not None
    values = state.graph.values
    arguments: dict[str, Any]
    if node.type == "approval":
        tool, arguments = APPROVAL_TOOL, {"reason": render(node.reason or f"workflow step {node.id}", values)}
    else:
        tool, arguments = node.tool, render_value(node.arguments, values)
    call = graph.call_id(state.run_id, token)
    return ToolCallRequested(
        event_id=ids.requested_event_id(call), run_id=state.run_id, tenant_id=state.tenant_id, step=state.step,
        call_id=call, tool_call_id=token, tool=tool, arguments_json=orjson.dumps(arguments).decode(),
        idempotency_key=call, timeout_ms=timeout_ms, tool_version=state.tool_versions.get(tool, ""),
    )  # fmt: skip


def _spawn(state: RunState, node: Node, token: str, timeout_ms: int) -> RunEvent:
    """A subagent node's first event: its spawn call, on which the cost governor reserves the
    child's budget on this run's ledger (so the run's caps hold for its children too), or why
    the platform will not start it (depth, children cap, tools this run did not pin)."""
    from agentstream.processors.orchestrator import subagents  # it imports the run's state, as we do

    assert state.graph is not None
    task = render(node.task, state.graph.values)
    problem = subagents.refusal(state, task, tuple(node.tools), subagents.platform_limits())
    if problem is not None:
        reason = f"node {node.id!r}: {problem}"
        return RunFailed(ids.terminal_id(state.run_id), state.run_id, state.tenant_id, state.step, "workflow", reason)
    args = SpawnArgs(task, tuple(node.tools), node.max_steps, node.budget_usd, node.budget_tokens)
    call = graph.call_id(state.run_id, token)
    return ToolCallRequested(
        event_id=ids.requested_event_id(call), run_id=state.run_id, tenant_id=state.tenant_id, step=state.step,
        call_id=call, tool_call_id=token, tool=SPAWN_AGENT, arguments_json=args.to_json(), idempotency_key=call,
        timeout_ms=0, tool_version=state.tool_versions.get(SPAWN_AGENT, ""),
    )  # fmt: skip


def _children(state: RunState, wf: Workflow) -> list[RunEvent]:
    """Each subagent node whose budget is reserved (or, with no governor, whose spawn is on the
    record) starts its child: a ReAct loop as a run of its own, with exactly that budget; its
    condensed result comes back as the node's ToolCallCompleted. The same event whenever decided
    again (the child's orchestrator ignores a request for a run it has)."""
    from agentstream.processors.orchestrator import subagents

    progress = state.graph
    assert progress is not None
    governed = subagents.platform_limits().governed
    out: list[RunEvent] = []
    for token in progress.running:
        node = wf.node(graph.token_node(token))
        if node.type != "subagent" or (governed and token not in progress.budgets):
            continue
        usd, tokens = node.budget_usd, node.budget_tokens
        if token in progress.budgets:
            reserved_usd, reserved_tokens = progress.budgets[token].split(" ")
            usd, tokens = float(reserved_usd), int(reserved_tokens)
        task = render(node.task, progress.values)
        child = subagents.child_request(state, graph.call_id(state.run_id, token), task, tuple(node.tools),
                                        node.max_steps, usd, tokens)  # fmt: skip
        if isinstance(child, str):  # refused after all (the checks ran at the spawn): the run's end
            reason = f"node {node.id!r}: {child}"
            return [RunFailed(ids.terminal_id(state.run_id), state.run_id, state.tenant_id, state.step, "workflow",
                              reason)]  # fmt: skip
        out.append(child)
    return out


def graph_tools(state: RunState, workflow_json: str) -> tuple[str, ...] | str:
    """The tools a graph run pins: those its nodes call (or the run's own list, which must hold
    them); a str is why the run cannot start."""
    if not workflow_json:
        version = f" version {state.workflow_version}" if state.workflow_version else ""
        return f"no workflow {state.workflow!r}{version} is registered for tenant {state.tenant_id} (GET /v1/workflows)"
    try:
        needed = pinned(workflow_json).tools()
    except WorkflowError as exc:
        return f"workflow {state.workflow!r} no longer validates: {exc}"
    if not state.tool_names:
        return needed
    if missing := sorted(set(needed) - set(state.tool_names)):
        return f"workflow {state.workflow!r} calls tools the run did not name: {', '.join(missing)}"
    return state.tool_names


def children_in_flight(state: RunState) -> list[str]:
    """The child runs of this graph run's subagent nodes still running: a parent's end cancels them
    (subagents.finish cancels a ReAct parent's from its planned spawn calls; this is the graph's)."""
    if state.graph is None or not state.workflow_json:
        return []
    wf = pinned(state.workflow_json)
    return [ids.child_run_id(graph.call_id(state.run_id, token)) for token in state.graph.running
            if wf.node(graph.token_node(token)).type == "subagent"]  # fmt: skip
