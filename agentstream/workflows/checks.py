"""The checks a workflow passes at registration, each failure a WorkflowError of its own kind:
unknown node types, edges (or start, join, on_denied) naming no node, nodes no path reaches,
cycles without a bound (a loop must take an edge with `max_iterations`), references to state
fields that are not declared, conditions that do not parse, and fan-outs whose branches do not
meet at their join."""

from __future__ import annotations

from agentstream.workflows import expressions
from agentstream.workflows.definition import (
    MAX_NODES,
    NAME,
    NODE_ID,
    NODE_TYPES,
    Node,
    Workflow,
    template_fields,
)
from agentstream.workflows.errors import WorkflowError
from agentstream.workflows.expressions import ExpressionError

# Node types a parallel branch may hold: each is one call whose completion moves the branch on.
BRANCH_STEPS = frozenset({"model", "tool", "subagent"})


def check_workflow(wf: Workflow) -> None:
    _check_names(wf)
    _check_targets(wf)
    _check_shape(wf)
    _check_references(wf)
    _check_reachable(wf)
    _check_cycles(wf)
    _check_parallels(wf)


def _check_names(wf: Workflow) -> None:
    if not NAME.fullmatch(wf.name):
        raise WorkflowError("invalid", f"invalid workflow name {wf.name!r}: 1-64 characters of A-Z a-z 0-9 _ . -")
    if not wf.nodes:
        raise WorkflowError("invalid", "a workflow needs at least one node")
    if len(wf.nodes) > MAX_NODES:
        raise WorkflowError("invalid", f"{len(wf.nodes)} nodes; a workflow may have at most {MAX_NODES}")
    seen: set[str] = set()
    for node in wf.nodes:
        if not NODE_ID.fullmatch(node.id):
            raise WorkflowError("invalid", f"invalid node id {node.id!r}: 1-40 characters of A-Z a-z 0-9 _ -")
        if node.id in seen:
            raise WorkflowError("invalid", "two nodes have this id", node.id)
        seen.add(node.id)
        if node.type not in NODE_TYPES:
            raise WorkflowError("unknown_node_type", f"unknown node type {node.type!r} (known: {', '.join(NODE_TYPES)})",
                                node.id)  # fmt: skip


def _check_targets(wf: Workflow) -> None:
    if not wf.has(wf.start):
        raise WorkflowError("missing_target", f"start names no node: {wf.start!r}")
    for edge in wf.edges:
        for end in (edge.source, edge.target):
            if not wf.has(end):
                raise WorkflowError("missing_target", f"edge {edge.source} -> {edge.target} names no node {end!r}")
    for node in wf.nodes:
        for name, target in (("on_denied", node.on_denied), ("join", node.join)):
            if target is not None and not wf.has(target):
                raise WorkflowError("missing_target", f"{name} names no node: {target!r}", node.id)


def _check_shape(wf: Workflow) -> None:
    """What each type needs: its call's fields, and the edges it may have."""
    for node in wf.nodes:
        out = wf.outgoing(node.id)
        if node.type == "branch":
            if not out or out[-1].when is not None:
                raise WorkflowError("missing_target", "a branch needs a default edge (one without `when`), last",
                                    node.id)  # fmt: skip
            if any(e.when is None for e in out[:-1]):
                raise WorkflowError("invalid", "only a branch's last edge may lack `when`", node.id)
            continue
        if any(e.when is not None for e in out):
            raise WorkflowError("invalid", "only a branch node's edges may have `when`", node.id)
        if node.type == "parallel":
            if len(out) < 2:
                raise WorkflowError("bad_parallel", "a parallel node needs at least two outgoing edges", node.id)
            if node.join is None or wf.node(node.join).type != "join":
                raise WorkflowError("bad_parallel", "a parallel node's `join` must name a join node", node.id)
            continue
        if len(out) > 1:
            raise WorkflowError("invalid", f"{len(out)} outgoing edges; only branch and parallel nodes have more "
                                "than one", node.id)  # fmt: skip
        if node.type == "model" and not node.prompt:
            raise WorkflowError("invalid", "a model node needs a prompt", node.id)
        if node.type == "tool" and not node.tool:
            raise WorkflowError("invalid", "a tool node needs a tool", node.id)
        if node.type == "subagent" and not node.task:
            raise WorkflowError("invalid", "a subagent node needs a task", node.id)
        if node.on_denied is not None and node.type != "approval":
            raise WorkflowError("invalid", "only an approval node has on_denied", node.id)


def _check_references(wf: Workflow) -> None:
    fields = wf.fields()
    for node in wf.nodes:
        used = set()
        for text in (node.prompt, node.task, node.reason):
            used |= template_fields(text)
        used |= _argument_fields(node.arguments)
        if node.output is not None:
            if node.type not in BRANCH_STEPS:
                raise WorkflowError("invalid", f"a {node.type} node writes no output", node.id)
            used.add(node.output)
        for edge in wf.outgoing(node.id):
            if edge.when is None:
                continue
            try:
                used |= expressions.names(expressions.parse(edge.when))
            except ExpressionError as exc:
                raise WorkflowError("bad_expression", f"condition {edge.when[:80]!r}: {exc}", node.id) from None
        unknown = sorted(used - set(fields))
        if unknown:
            raise WorkflowError("bad_reference", f"undeclared state field(s): {', '.join(unknown)} (declared: "
                                f"{', '.join(sorted(fields))})", node.id)  # fmt: skip
    unknown = sorted(template_fields(wf.answer) - set(fields))
    if unknown:
        raise WorkflowError("bad_reference", f"the answer names undeclared state field(s): {', '.join(unknown)}")


def _argument_fields(value: object) -> set[str]:
    if isinstance(value, str):
        return template_fields(value)
    if isinstance(value, dict):
        return set().union(*(_argument_fields(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_argument_fields(v) for v in value)) if value else set()
    return set()


def _successors(wf: Workflow, node: Node) -> list[str]:
    found = [e.target for e in wf.outgoing(node.id)]
    return [*found, node.on_denied] if node.on_denied is not None else found


def _check_reachable(wf: Workflow) -> None:
    seen, todo = {wf.start}, [wf.start]
    while todo:
        for target in _successors(wf, wf.node(todo.pop())):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    unreachable = [n.id for n in wf.nodes if n.id not in seen]
    if unreachable:
        raise WorkflowError("unreachable", f"no path from {wf.start!r} reaches node(s) {', '.join(unreachable)}")


def _check_cycles(wf: Workflow) -> None:
    """Without its bounded edges the graph must be acyclic: every loop passes a bound."""
    graph = {n.id: [e.target for e in wf.outgoing(n.id) if e.max_iterations is None] for n in wf.nodes}
    for spec in wf.nodes:
        if spec.on_denied is not None:
            graph[spec.id].append(spec.on_denied)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:  # iterative depth-first search: a long chain is no RecursionError
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            if index < len(graph[node]):
                stack.append((node, index + 1))
                nxt = graph[node][index]
                if state.get(nxt) == 1:
                    loop = " -> ".join([*path[path.index(nxt) :], nxt])
                    raise WorkflowError("unbounded_cycle", f"cycle without a bound: {loop} (give one of its edges "
                                        "max_iterations)")  # fmt: skip
                if nxt not in state:
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                path.pop()


def _check_parallels(wf: Workflow) -> None:
    """Each branch of a fan-out is a chain of call nodes that ends at the fan-out's join, and the
    join is entered only from those chains (so it knows how many arrivals to wait for)."""
    tails: dict[str, list[str]] = {}
    for node in wf.nodes:
        if node.type != "parallel":
            continue
        assert node.join is not None  # _check_shape
        for edge in wf.outgoing(node.id):
            current, steps = edge.target, 0
            while current != node.join:
                step = wf.node(current)
                out = wf.outgoing(current)
                if step.type not in BRANCH_STEPS or len(out) != 1 or out[0].max_iterations is not None:
                    raise WorkflowError("bad_parallel", f"branch {edge.target!r} must be a chain of model, tool "
                                        f"and subagent nodes ending at join {node.join!r}; {current!r} is not",
                                        node.id)  # fmt: skip
                steps += 1
                if steps > len(wf.nodes):
                    raise WorkflowError("bad_parallel", f"branch {edge.target!r} never reaches its join", node.id)
                if out[0].target == node.join:
                    tails.setdefault(node.join, []).append(current)
                current = out[0].target
            if edge.target == node.join:
                raise WorkflowError("bad_parallel", "a branch must hold at least one node", node.id)
    for node in wf.nodes:
        if node.type != "join":
            continue
        entering = sorted(e.source for e in wf.edges if e.target == node.id)
        if node.id not in tails or sorted(tails[node.id]) != entering:
            raise WorkflowError("bad_parallel", "a join is entered only by the branches of one parallel node",
                                node.id)  # fmt: skip
