"""Where a graph run stands: a frozen value beside the run's state, and the pure moves over its
pinned definition. A node is entered, its call (if it has one) is asked for and answered, and its
edges lead on; branch, parallel and join nodes are decided at once, inside the fold, so they cost
no event. Every call's id names its node and visit (`<run>/g/<node>.<visit>`), and the run's end
names the path, so the journal says which nodes ran."""

from __future__ import annotations

from typing import Any

import orjson

from agentstream.processors.orchestrator.graph.state import GraphProgress
from agentstream.processors.orchestrator.state import replace
from agentstream.workflows import expressions
from agentstream.workflows.definition import TASK_FIELD, Node, StateField, Workflow
from agentstream.workflows.expressions import ExpressionError

# Nodes whose work is a call (the rest are decided inside the fold).
CALL_NODES = frozenset({"model", "tool", "subagent", "approval"})


def token_node(token: str) -> str:
    return token.rsplit(".", 1)[0]


def call_id(run_id: str, token: str) -> str:
    return f"{run_id}/g/{token}"


def token_of(run_id: str, call: str) -> str:
    prefix = f"{run_id}/g/"
    return call[len(prefix) :] if call.startswith(prefix) else ""


def start(wf: Workflow, task: str) -> GraphProgress:
    values: dict[str, Any] = {name: spec.default for name, spec in wf.state.items()}
    values[TASK_FIELD] = task
    return enter(wf, GraphProgress(values=values), [wf.start])


def enter(wf: Workflow, progress: GraphProgress, targets: list[str]) -> GraphProgress:
    """Enters nodes: call nodes become ready; branch, parallel and join nodes are decided now
    (a work list, not recursion: a chain of them is bounded by the cycle checks)."""
    ready, visits, taken, arrived, path = list(progress.ready), dict(progress.visits), dict(progress.taken), \
        dict(progress.arrived), list(progress.path)  # fmt: skip
    todo = list(reversed(targets))
    failure = ""
    while todo and not failure:
        node = wf.node(todo.pop())
        visits[node.id] = visits.get(node.id, 0) + 1
        if node.type in CALL_NODES:
            path.append(node.id)
            ready.append(f"{node.id}.{visits[node.id]}")
            continue
        if node.type == "parallel":
            path.append(node.id)
            assert node.join is not None  # checked at registration
            arrived[node.join] = 0
            todo.extend(reversed([e.target for e in wf.outgoing(node.id)]))
            continue
        if node.type == "join":
            entering = sum(1 for e in wf.edges if e.target == node.id)
            arrived[node.id] = arrived.get(node.id, 0) + 1
            if arrived[node.id] < entering:
                continue  # waits for the other branches
            arrived[node.id] = 0
            path.append(node.id)
        target, failure = _follow(wf, node, progress.values, taken)
        if node.type == "branch":
            path.append(f"{node.id}>{target}" if target else node.id)
        if target:
            todo.append(target)
    return replace(progress, ready=tuple(ready), visits=visits, taken=taken, arrived=arrived, path=tuple(path),
                   failure=failure or progress.failure)  # fmt: skip


def _follow(wf: Workflow, node: Node, values: dict[str, Any], taken: dict[str, int]) -> tuple[str, str]:
    """The edge a node leaves by: (target or "" at an end, failure or ""). A branch takes its first
    edge whose condition holds and whose bound is not spent; `taken` counts bounded edges."""
    for edge in wf.outgoing(node.id):
        if edge.when is not None:
            try:
                if not expressions.check(edge.when, values):
                    continue
            except ExpressionError as exc:
                return "", f"node {node.id!r}: condition {edge.when[:80]!r}: {exc}"
        if edge.max_iterations is not None:
            key = f"{edge.source}>{edge.target}"
            if taken.get(key, 0) >= edge.max_iterations:
                if node.type == "branch":
                    continue
                return "", f"node {node.id!r}: loop bound reached: {key} taken {edge.max_iterations} times"
            taken[key] = taken.get(key, 0) + 1
        return edge.target, ""
    if node.type == "branch":
        return "", f"node {node.id!r}: no edge left to take (every bounded edge spent)"
    return "", ""


def requested(progress: GraphProgress, token: str) -> GraphProgress:
    if token not in progress.ready:
        return progress
    return replace(progress, ready=tuple(t for t in progress.ready if t != token),
                   running=(*progress.running, token))  # fmt: skip


def unrequested(progress: GraphProgress, token: str) -> GraphProgress:
    """The governor refused the call: it is asked for again (same id) once the run resumes."""
    if token not in progress.running:
        return progress
    return replace(progress, running=tuple(t for t in progress.running if t != token),
                   ready=(*progress.ready, token))  # fmt: skip


def completed(wf: Workflow, progress: GraphProgress, token: str, content: str, is_error: bool) -> GraphProgress:
    """A node's call answered: its output written, its edge followed (or the run's failure)."""
    if token not in progress.running and token not in progress.ready:
        return progress  # a duplicate, or a late answer
    rest = replace(progress, running=tuple(t for t in progress.running if t != token),
                   ready=tuple(t for t in progress.ready if t != token))  # fmt: skip
    node = wf.node(token_node(token))
    if node.type == "approval" and is_error:
        if node.on_denied is not None:
            return enter(wf, rest, [node.on_denied])
        return replace(rest, failure=f"node {node.id!r}: approval not given: {content[:300]}")
    if is_error:
        return replace(rest, failure=f"node {node.id!r} ({node.type}) failed: {content[:300]}")
    if node.output is not None:
        value, problem = _typed(wf.fields()[node.output], content)
        if problem:
            return replace(rest, failure=f"node {node.id!r}: output {node.output!r} {problem}")
        rest = replace(rest, values={**rest.values, node.output: value})
    target, failure = _follow(wf, node, rest.values, taken := dict(rest.taken))
    rest = replace(rest, taken=taken)
    if failure:
        return replace(rest, failure=failure)
    return enter(wf, rest, [target]) if target else rest


def failed(progress: GraphProgress, token: str, reason: str) -> GraphProgress:
    if token not in progress.running:
        return progress
    return replace(progress, running=tuple(t for t in progress.running if t != token),
                   failure=f"node {token_node(token)!r}: {reason}")  # fmt: skip


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "number": (int, float), "integer": (int,), "boolean": (bool,), "list": (list,), "object": (dict,),
}  # fmt: skip


def _typed(spec: StateField, text: str) -> tuple[Any, str]:
    """A call's text as the field's declared type (JSON for all but strings)."""
    if spec.type == "string":
        return text, ""
    try:
        value = orjson.loads(text.strip())
    except orjson.JSONDecodeError:
        return None, f"is a {spec.type}, and {text[:80]!r} is not"
    ok = isinstance(value, _JSON_TYPES[spec.type]) and not (spec.type != "boolean" and isinstance(value, bool))
    return (value, "") if ok else (None, f"is a {spec.type}, and {text[:80]!r} is not")


def answer(wf: Workflow, progress: GraphProgress) -> str:
    from agentstream.workflows.definition import render

    if wf.answer:
        return render(wf.answer, progress.values)
    return orjson.dumps({k: v for k, v in progress.values.items() if k != TASK_FIELD}).decode()
