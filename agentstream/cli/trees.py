"""Run trees on the command line: `agentstream runs tree ID`, the parent, children and graph nodes
that `runs show` prints, and `run --workflow NAME[@VERSION]`.

Through the run API (an API key set) a tree is the gateway's (`GET /v1/runs/{id}/tree`). The
operator's path reads the journal: a run's children are the ones its own records name (its
`spawn_agent` calls and their results; a workflow's subagent node is named once it has answered),
each child read by its id.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

import orjson

from agentstream.client.http import RunsClient
from agentstream.client.journal import JournalEntry, read_run_once
from agentstream.config import Settings
from agentstream.contract.requests import WORKFLOW_NAME_PATTERN, WORKFLOW_VERSION_PATTERN
from agentstream.contract.resources import Run, RunTree, RunTreeNode
from agentstream.contract.vocab import RunStatus
from agentstream.events import LlmCallCompleted, LlmCallRequested, RunRequested, ToolCallCompleted, ToolCallRequested
from agentstream.gateway.trees import RESULT_CHARS, TREE_MAX_DEPTH, TREE_MAX_RUNS
from agentstream.ids import child_run_id
from agentstream.subagents import SPAWN_AGENT
from agentstream.trajectory import summarize

SHOWN_CHARS = 100  # of a task or a result, on one line of the tree


def workflow_ref(value: str) -> tuple[str, str]:
    """`NAME[@VERSION]` as (name, version); version "" for the latest."""
    name, _, version = value.partition("@")
    bad_version = version and not re.fullmatch(WORKFLOW_VERSION_PATTERN, version)
    if not re.fullmatch(WORKFLOW_NAME_PATTERN, name) or bad_version:
        raise argparse.ArgumentTypeError(f"{value!r} is not NAME[@VERSION] (e.g. triage or triage@2)")
    return name, version


def add_tree_parser(runs_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tree = runs_sub.add_parser("tree", help="a run and the runs it started, nested")
    tree.add_argument("run_id")
    tree.add_argument("--json", action="store_true")


def _cut(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def tree_lines(node: RunTreeNode, indent: str = "") -> list[str]:
    graph = f" [workflow {node.workflow}]" if node.workflow else ""
    result = f" -> {_cut(node.result)}" if node.result else ""
    lines = [f"{indent}{node.id} ({node.status}, {node.steps} steps){graph}: {_cut(node.task)!r}{result}"]
    for child in node.children:
        lines.extend(tree_lines(child, indent + "  "))
    if node.children_count > len(node.children):
        lines.append(f"{indent}  … {node.children_count - len(node.children)} more child run(s) not shown")
    return lines


def print_tree(tree: RunTree, *, as_json: bool) -> int:
    if as_json:
        print(orjson.dumps(tree.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())
        return 0
    print("\n".join(tree_lines(tree.root)))
    if tree.truncated:
        print(f"(cut at {tree.max_depth} levels or {tree.max_runs} runs)")
    return 0


async def tree_via_api(client: RunsClient, run_id: str, *, as_json: bool) -> int:
    return print_tree(await client.tree(run_id), as_json=as_json)


async def print_relations_via_api(client: RunsClient, run: Run, entries: Sequence[JournalEntry]) -> None:
    """For `runs show`: the parent, the children with their condensed results, the graph's nodes."""
    if run.parent_run_id:
        print(f"  parent: {run.parent_run_id} (depth {run.depth})")
    if run.workflow:
        print(f"  workflow: {run.workflow}{'@' + run.workflow_version if run.workflow_version else ''}")
    if run.children_count:
        tree = await client.tree(run.id)
        print(f"  children ({run.children_count}):")
        for child in tree.root.children:
            print("\n".join(tree_lines(child.model_copy(update={"children": [], "children_count": 0}), "    ")))
    _print_nodes(run.id, entries)


# -- the operator's path: the journal ------------------------------------------------------------------


def children_named(entries: Sequence[JournalEntry]) -> list[str]:
    """The child runs a run's own records name, in the order it asked for them."""
    found: dict[str, str] = {}
    for entry in entries:
        event = entry.event
        if isinstance(event, ToolCallRequested | ToolCallCompleted) and event.tool == SPAWN_AGENT:
            found.setdefault(child_run_id(event.call_id), event.call_id)
    return sorted(found, key=lambda child: found[child])


def _node(entries: list[JournalEntry]) -> RunTreeNode:
    summary = summarize(entries)
    first = entries[0].event
    request = first if isinstance(first, RunRequested) else None
    status = RunStatus(summary.status) if summary.status in RunStatus.__members__.values() else RunStatus.QUEUED
    result = summary.final_answer if status == RunStatus.COMPLETED else summary.reason
    return RunTreeNode(
        id=summary.run_id, status=status, task=summary.task, depth=request.depth if request else 0,
        parent_run_id=(request.parent_run_id or None) if request else None,
        workflow=(request.workflow or None) if request else None, steps=summary.steps,
        result=result[:RESULT_CHARS] or None, children=[], children_count=len(children_named(entries)),
    )  # fmt: skip


async def tree_from_journal(settings: Settings, run_id: str, *, as_json: bool) -> int:
    entries = await read_run_once(settings, run_id)
    if not entries:
        print(f"no run {run_id} in the journal", file=sys.stderr)
        return 1
    root = _node(entries)
    # Breadth first, as the gateway cuts a tree: the upper levels stay whole.
    shown: dict[str, list[RunTreeNode]] = {}
    level, runs, truncated = [(root, entries)], 1, False
    for depth in range(TREE_MAX_DEPTH + 1):
        following: list[tuple[RunTreeNode, list[JournalEntry]]] = []
        for node, node_entries in level:
            shown[node.id] = []
            for child_id in children_named(node_entries):
                if depth == TREE_MAX_DEPTH or runs >= TREE_MAX_RUNS:
                    truncated = True
                    break
                child_entries = await read_run_once(settings, child_id)
                if child_entries and child_entries[0].event.tenant_id == entries[0].event.tenant_id:
                    child = _node(child_entries)
                    shown[node.id].append(child)
                    following.append((child, child_entries))
                    runs += 1
        level = following

    def nested(node: RunTreeNode) -> RunTreeNode:
        return node.model_copy(update={"children": [nested(c) for c in shown.get(node.id, [])]})

    tree = RunTree(root=nested(root), runs=runs, truncated=truncated, max_depth=TREE_MAX_DEPTH, max_runs=TREE_MAX_RUNS)
    return print_tree(tree, as_json=as_json)


def print_relations_from_journal(entries: Sequence[JournalEntry]) -> None:
    first = entries[0].event if entries else None
    if isinstance(first, RunRequested) and first.parent_run_id:
        print(f"  parent: {first.parent_run_id} (depth {first.depth})")
    if isinstance(first, RunRequested) and first.workflow:
        print(f"  workflow: {first.workflow}{'@' + first.workflow_version if first.workflow_version else ''}")
    children = children_named(entries)
    if children:
        print(f"  children ({len(children)}; each: agentstream runs show ID):")
        for child in children:
            print(f"    {child}")
    if first is not None:
        _print_nodes(first.run_id, entries)


def _print_nodes(run_id: str, entries: Sequence[JournalEntry]) -> None:
    """A graph run's nodes as its journal shows them: each call's id names its node and visit
    (`<run>/g/<node>.<visit>`), the run's end names the path."""
    prefix = f"{run_id}/g/"
    nodes: dict[str, str] = {}
    for entry in entries:
        event = entry.event
        if not isinstance(event, LlmCallRequested | LlmCallCompleted | ToolCallRequested | ToolCallCompleted):
            continue
        if not event.call_id.startswith(prefix):
            continue
        token = event.call_id[len(prefix) :]
        if isinstance(event, LlmCallRequested | ToolCallRequested):
            kind = "model" if isinstance(event, LlmCallRequested) else event.tool
            nodes.setdefault(token, f"{kind}: asked")
        else:
            done = "error" if isinstance(event, ToolCallCompleted) and event.is_error else "done"
            nodes[token] = nodes.get(token, "subagent").split(":")[0] + f": {done}"
    if nodes:
        print("  graph nodes (node.visit):")
        for token, state in nodes.items():
            print(f"    {token:<24} {state}")
