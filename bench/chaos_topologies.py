"""The topology mix of bench/chaos.py (issue 19): a share of the chaos runs are subagent parents,
explicit-graph runs or code-mode runs instead of plain ReAct runs, under the same kills.

    .venv/bin/python bench/chaos.py --runs 100 --kills 20 --topologies subagents,graph,code

  subagents  a parent that starts two children in one step (next to a tool call of its own), pays,
             then starts a third; a paying child pays, waits, computes and looks up, the other
             one only looks up (each with the tools its parent handed it)
  graph      a workflow with a model node, a branch (the high side through an approval node), a
             payment, a parallel fan-out of a tool call, a lookup, a subagent node and a model node,
             their join and a closing payment; half the runs go down each side of the branch
  code       a run_code program that looks up, computes, waits and pays twice, then a plain
             payment and the answer

A child is a run of its own: every run of a tree is checked like a top-level run (lost, resent
model calls, duplicate payments, its trajectory against the same place in a crash-free reference
tree of its scenario), and a top-level run counts as completed only with its whole tree.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentstream.client.journal import JournalEntry, RunRequest
from agentstream.codemode.interface import RUN_CODE_TOOL as RUN_CODE
from agentstream.config import Settings
from agentstream.events import TERMINAL_TYPES, RunRequested, ToolCallCompleted, ToolCallRequested
from agentstream.registry.admin import read_catalog
from agentstream.registry.entry import TenantPolicy
from agentstream.stack import ProcessorProcesses
from agentstream.subagents import SPAWN_AGENT
from agentstream.workflows.book import register_workflow
from bench.chaos_phases import PhaseWatcher, phase_killer

TOPOLOGIES = ("subagents", "graph", "code")
# What each topology's runs may call (a parent's children get a subset of its tools).
SUB_TOOLS = ["spawn_agent", "transfer_funds", "calculator", "lookup", "sleep_ms"]
CODE_TOOLS = ["run_code", "transfer_funds", "calculator", "lookup", "sleep_ms"]
EXTRA_TOOLS = ("spawn_agent", "run_code", "sleep_ms", "request_approval")
# Payments run without a person, and so does the graph's approval node (the gate still decides
# and journals each call).
POLICIES: Mapping[str, TenantPolicy] = {"default": TenantPolicy(auto_approve=("transfer_funds", "request_approval"))}
WORKFLOW = "chaos-graph"
CHILD_STEPS = 4
Key = int | str  # a plain chaos scenario's index, or a topology scenario's name
Place = tuple[Key, str]  # (scenario, the run's place in its tree: "" for the top-level run)


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def _pay(account: str, cents: int, memo: str) -> dict[str, Any]:
    return _call("transfer_funds", to_account=account, amount_cents=cents, memo=memo)


def _spawn(scenario: str, what: str, tools: list[str]) -> dict[str, Any]:
    return _call("spawn_agent", task=f"[scenario:{scenario}] {what}", tools=tools, max_steps=CHILD_STEPS)


SCENARIOS: list[dict[str, Any]] = [
    {"name": "chaos_sub", "turns": [
        {"text": "Two helpers and a sum.", "tool_calls": [
            _spawn("chaos_child_pay", "Pay the supplier.", ["transfer_funds", "calculator", "lookup", "sleep_ms"]),
            _spawn("chaos_child_read", "Read the kafka note.", ["lookup"]),
            _call("calculator", expression="17 * 3")]},
        {"text": "My own payment and one more helper.", "tool_calls": [
            _pay("ACCT-SUB", 151, "parent share"),
            _spawn("chaos_child_pay", "Pay the second supplier.", ["transfer_funds", "calculator", "lookup", "sleep_ms"])]},
        {"text": "Three helpers reported; everything is paid."}]},
    {"name": "chaos_child_pay", "turns": [
        {"text": "Paying.", "tool_calls": [_pay("ACCT-CHILD", 222, "child payment")]},
        {"text": "Waiting, then checking.", "tool_calls": [
            _call("sleep_ms", ms=300), _call("calculator", expression="222 / 2"), _call("lookup", topic="avro")]},
        {"text": "Child: paid 222 cents and checked the note."}]},
    {"name": "chaos_child_read", "turns": [
        {"text": "Reading.", "tool_calls": [_call("lookup", topic="kafka")]},
        {"text": "Child: the kafka note is read."}]},
    {"name": "chaos_code", "turns": [
        {"text": "One program does it.", "tool_calls": [_call("run_code", code=(
            'note = lookup("kraft")\n'
            'total = calculator("1200 + 34")\n'
            "sleep_ms(200)\n"
            "for i in range(2):\n"
            '    print(transfer_funds(to_account="ACCT-CODE", amount_cents=int(float(total)) + i, memo=f"code {i}"))\n'
            'print(calculator(f"{total} * 2"))\n'
            "note.split('.')[0]\n"))]},
        {"text": "And the fee.", "tool_calls": [_pay("ACCT-FEE", 99, "fee")]},
        {"text": "Code run done: two payments and the fee."}]},
    {"name": "chaos_graph_high", "turns": [{"text": "4"}], "repeat_last": True},
    {"name": "chaos_graph_low", "turns": [{"text": "1"}], "repeat_last": True},
]  # fmt: skip

GRAPH: dict[str, Any] = {
    "name": WORKFLOW,
    "description": "Chaos: classify, branch (approval on the high side), pay, fan out to a tool, a lookup, a subagent and a model, join, pay.",
    "state": {"severity": {"type": "number", "default": 0}, "paid": {"type": "string"}, "cost": {"type": "string"},
              "owner": {"type": "string"}, "helper": {"type": "string"}, "notes": {"type": "string"},
              "receipt": {"type": "string"}},
    "start": "classify",
    "nodes": [
        {"id": "classify", "type": "model", "prompt": "Rate the severity from 0 to 5, answer with the number: {task}",
         "output": "severity"},
        {"id": "route", "type": "branch"},
        {"id": "review", "type": "approval", "reason": "pay a severity {severity} claim"},
        {"id": "pay_big", "type": "tool", "tool": "transfer_funds", "output": "paid",
         "arguments": {"to_account": "ACCT-GRAPH", "amount_cents": 500, "memo": "graph high"}},
        {"id": "pay_small", "type": "tool", "tool": "transfer_funds", "output": "paid",
         "arguments": {"to_account": "ACCT-GRAPH", "amount_cents": 100, "memo": "graph low"}},
        {"id": "fan", "type": "parallel", "join": "merge"},
        {"id": "price", "type": "tool", "tool": "calculator", "arguments": {"expression": "{severity} * 7"},
         "output": "cost"},
        {"id": "assign", "type": "tool", "tool": "lookup", "arguments": {"topic": "kafka"}, "output": "owner"},
        {"id": "helper", "type": "subagent", "task": "[scenario:chaos_child_pay] Pay the graph's supplier.",
         "tools": ["transfer_funds", "calculator", "lookup", "sleep_ms"], "max_steps": CHILD_STEPS, "output": "helper"},
        {"id": "note", "type": "model", "prompt": "One line of notes on: {task}", "output": "notes"},
        {"id": "merge", "type": "join"},
        {"id": "close", "type": "tool", "tool": "transfer_funds", "output": "receipt",
         "arguments": {"to_account": "ACCT-GRAPH", "amount_cents": 7, "memo": "graph close"}},
    ],
    "edges": [
        {"from": "classify", "to": "route"},
        {"from": "route", "to": "review", "when": "severity >= 3"},
        {"from": "route", "to": "pay_small"},
        {"from": "review", "to": "pay_big"},
        {"from": "pay_big", "to": "fan"},
        {"from": "pay_small", "to": "fan"},
        {"from": "fan", "to": "price"},
        {"from": "fan", "to": "assign"},
        {"from": "fan", "to": "helper"},
        {"from": "fan", "to": "note"},
        {"from": "price", "to": "merge"},
        {"from": "assign", "to": "merge"},
        {"from": "helper", "to": "merge"},
        {"from": "note", "to": "merge"},
        {"from": "merge", "to": "close"},
    ],
    "answer": "severity {severity}; helper: {helper}",
}  # fmt: skip

# Each topology's scenarios (a graph has one per side of its branch), as chaos.py keys them.
VARIANTS: dict[str, tuple[str, ...]] = {
    "subagents": ("chaos_sub",),
    "graph": ("chaos_graph_high", "chaos_graph_low"),
    "code": ("chaos_code",),
}


def add_topology_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topologies", default="",
                        help=f"comma-separated topologies mixed into the chaos runs: {','.join(TOPOLOGIES)}")  # fmt: skip
    parser.add_argument("--topology-share", type=float, default=0.4,
                        help="the share of the chaos runs that are topology runs (with --topologies)")  # fmt: skip
    parser.add_argument("--phase-kills", type=int, default=3,
                        help="with --topologies, SIGKILLs per topology phase on top of --kills (bench/chaos_phases.py)")  # fmt: skip


@dataclass(frozen=True)
class Mix:
    topologies: tuple[str, ...] = ()
    share: float = 0.0
    per_phase: int = 0

    @staticmethod
    def from_args(args: argparse.Namespace) -> Mix:
        names = tuple(t for t in args.topologies.split(",") if t)
        unknown = set(names) - set(TOPOLOGIES)
        if unknown:
            raise SystemExit(f"unknown --topologies {sorted(unknown)}: choose from {','.join(TOPOLOGIES)}")
        if names and not 0.0 < args.topology_share <= 1.0:
            raise SystemExit("--topology-share must be in (0, 1]")
        return Mix(names, args.topology_share if names else 0.0, args.phase_kills if names else 0)

    def scenarios(self) -> list[dict[str, Any]]:
        return SCENARIOS if self.topologies else []

    def wait_tools(self, tools: list[str]) -> tuple[str, ...]:
        return (*tools, *EXTRA_TOOLS) if self.topologies else tuple(tools)

    def policies(self, plain: Mapping[str, TenantPolicy]) -> Mapping[str, TenantPolicy]:
        return POLICIES if self.topologies else plain

    async def prepare(self, settings: Settings) -> None:
        """Registers the graph (runs pin it when they start)."""
        if "graph" in self.topologies:
            catalog = await read_catalog(settings)
            await register_workflow(settings, "default", GRAPH, catalog.workflows, "chaos")

    async def phase_kills(
        self, settings: Settings, procs: ProcessorProcesses | None, seed: int, stop: asyncio.Event, log: list[str]
    ) -> dict[str, int]:
        """The phase killer (bench/chaos_phases.py) until `stop`: the kills it made per phase."""
        if not self.topologies or not self.per_phase or procs is None:
            return {}
        watcher = PhaseWatcher(settings)
        try:
            return await phase_killer(watcher, procs, self.per_phase, seed, stop, log)
        finally:
            watcher.close()

    def report(self, trees: dict[str, int], phase_kills: dict[str, int], journal: Mapping[str, list[JournalEntry]],
               members: Mapping[str, Place], log: list[str]) -> dict[str, Any]:  # fmt: skip
        """The mix's part of the bench's JSON line ({} without topologies)."""
        if not self.topologies:
            return {}
        coverage = kill_coverage(journal, members, log)
        return {"mix": list(self.topologies), "share": self.share, **trees, "phase_kills": phase_kills,
                "kills_during": coverage}  # fmt: skip

    def variants(self) -> list[str]:
        return [v for t in self.topologies for v in VARIANTS[t]]

    def request(self, index: int, key: Key, plain: RunRequest, tag: str) -> tuple[Key, RunRequest]:
        """Chaos run `index`: a topology run (its scenario's name and request) for an evenly spread
        share of the runs, else the plain run of scenario `key`."""
        variants = self.variants()
        picked = int((index + 1) * self.share) - int(index * self.share)
        if not variants or not picked:
            return key, plain
        variant = variants[int(index * self.share) % len(variants)]
        return variant, variant_request(variant, f"{tag} run {index:05d}", plain.context)


def variant_request(variant: str, what: str, context: dict[str, Any] | None) -> RunRequest:
    task = f"[scenario:{variant}] {what}"
    if variant.startswith("chaos_graph"):
        return RunRequest(task=task, max_steps=30, context=context, workflow=WORKFLOW)
    tools = CODE_TOOLS if variant == "chaos_code" else SUB_TOOLS
    return RunRequest(task=task, tools=tools, max_steps=30, context=context)


def _trees(journal: Mapping[str, list[JournalEntry]], roots: Mapping[str, Any]) -> dict[str, tuple[Place, str]]:
    """Every run of the trees rooted at `roots` (run id -> scenario key): its scenario, its place in
    its tree (the chain of spawn call ids that led to it, each parent's run id left out, so a chaos
    tree's runs line up with the reference tree's) and its top-level run."""
    children: dict[str, set[tuple[str, str]]] = {}
    for run_id, entries in journal.items():
        requested = next((e.event for e in entries if isinstance(e.event, RunRequested)), None)
        if requested is not None and requested.parent_run_id:
            children.setdefault(requested.parent_run_id, set()).add((requested.parent_call_id, run_id))
    out: dict[str, tuple[Place, str]] = {}

    def walk(run_id: str, key: Any, place: str, root: str) -> None:
        out[run_id] = ((key, place), root)
        for call_id, child in sorted(children.get(run_id, ())):
            walk(child, key, f"{place}{call_id.removeprefix(run_id)}", root)

    for run_id, key in roots.items():
        walk(run_id, key, "", run_id)
    return out


PLAIN = Mix()  # no topology runs: the reference runs of the plain scenarios


def tree_members(journal: Mapping[str, list[JournalEntry]], roots: Mapping[str, Any]) -> dict[str, Place]:
    """Every run of the trees rooted at `roots`, with its scenario and place in its tree."""
    return {run_id: place for run_id, (place, _root) in _trees(journal, roots).items()}


def tree_outcomes(
    journal: Mapping[str, list[JournalEntry]],
    roots: Mapping[str, Any],
    reference: Mapping[str, Place],
    status: Mapping[str, str],
) -> dict[str, int]:
    """`completed`: top-level runs whose whole tree completed (every run of it, and every place
    its reference tree has); `lost_children`: places of the reference trees with no run, and
    children with no terminal event; `child_runs` and how many of them completed."""
    expected: dict[Any, set[str]] = {}
    for key, place in reference.values():
        expected.setdefault(key, set()).add(place)
    trees: dict[str, list[tuple[str, str]]] = {}
    for run_id, ((_key, place), root) in _trees(journal, roots).items():
        if place:
            trees.setdefault(root, []).append((run_id, place))
    children = [run_id for tree in trees.values() for run_id, _place in tree]
    ended = {r for r in children if any(e.event.type_name in TERMINAL_TYPES for e in journal.get(r, []))}
    completed = lost = 0
    for root, key in roots.items():
        tree = trees.get(root, [])
        missing = expected.get(key, {""}) - {place for _r, place in tree} - {""}
        lost += len(missing) + sum(1 for r, _place in tree if r not in ended)
        completed += not missing and all(status.get(r) == "completed" for r in (root, *(r for r, _p in tree)))
    return {
        "completed": completed,
        "lost_children": lost,
        "child_runs": len(children),
        "child_runs_completed": sum(1 for r in children if status.get(r) == "completed"),
    }


def kill_coverage(
    journal: Mapping[str, list[JournalEntry]], members: Mapping[str, Place], log: list[str]
) -> dict[str, int]:
    """How many of the killer's SIGKILLs (chaos.py's log: monotonic seconds first) landed while a
    topology was in each of its phases: a parent waiting on its children, a child running, a
    code-mode program between its first round and its last, a graph run under way."""
    to_wall_ms = (time.time() - time.monotonic()) * 1000.0
    kills = [
        float(line.split()[0]) * 1000.0 + to_wall_ms for line in log if " SIGKILL " in line and "broker" not in line
    ]
    spans: dict[str, list[tuple[int, int]]] = {"parent_waiting": [], "child_running": [], "code_mid_program": [],
                                                "graph_running": []}  # fmt: skip
    for run_id, (_key, place) in members.items():
        entries = journal.get(run_id, [])
        if not entries:
            continue
        for phase, tool in (("parent_waiting", SPAWN_AGENT), ("code_mid_program", RUN_CODE)):
            times = [e.timestamp_ms for e in entries if isinstance(e.event, (ToolCallRequested, ToolCallCompleted))
                     and e.event.tool == tool]  # fmt: skip
            if times:
                spans[phase].append((min(times), max(times)))
        whole = (entries[0].timestamp_ms, entries[-1].timestamp_ms)
        if place:
            spans["child_running"].append(whole)
        if any(isinstance(e.event, RunRequested) and e.event.workflow for e in entries):
            spans["graph_running"].append(whole)
    return {phase: sum(1 for k in kills if any(a <= k <= b for a, b in found)) for phase, found in spans.items()}


def reference_errors(journal: Mapping[str, list[JournalEntry]], reference: Mapping[str, Place]) -> dict[str, str]:
    """Reference runs of a topology that observed an error (a refused spawn, a program that
    raised, a tool the graph could not call): chaos runs matching them would prove nothing."""
    out: dict[str, str] = {}
    for run_id, (key, _place) in reference.items():
        if isinstance(key, str):
            errors = [
                e.event for e in journal.get(run_id, []) if isinstance(e.event, ToolCallCompleted) and e.event.is_error
            ]
            if errors:
                out[run_id] = f"{key}: {errors[0].tool} observed an error: {errors[0].content[:300]}"
    return out


async def submit_references(deployment: Any, mix: Mix, context: dict[str, Any] | None) -> dict[str, Key]:
    """One crash-free run of each topology scenario."""
    out: dict[str, Key] = {}
    for variant in mix.variants():
        out[await deployment.client.request_run(variant_request(variant, "reference", context))] = variant
    return out
