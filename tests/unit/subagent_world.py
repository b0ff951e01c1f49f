"""Run trees driven through the real orchestrator and cost governor cores, without Kafka: every
emitted event goes through one in-memory journal, read back in order by both cores, each over its
own partition stores (2 partitions, as the shell routes them). The model and the tool executor are
stand-ins: a script answers each model call once its budget is reserved (as the invoker does), and
`sleep` calls complete at once."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from pathlib import Path

import orjson

from agentstream import ids
from agentstream.budgets.controls import CostControls
from agentstream.events import (
    TERMINAL_TYPES,
    BudgetReserved,
    BudgetSettled,
    LlmCallCompleted,
    LlmCallRequested,
    RunEvent,
    RunRequested,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.kafka.partitioner import partition_for
from agentstream.kafka.state import PartitionStore
from agentstream.llm import messages_from_json
from agentstream.pricing.table import parse_price_book
from agentstream.processors.cost_governor.core import CostGovernorCore
from agentstream.processors.orchestrator.core import OrchestratorCore
from agentstream.processors.orchestrator.decide import OrchestratorConfig
from agentstream.processors.orchestrator.subagents import SubagentLimits
from agentstream.registry.entry import ToolEntry
from agentstream.subagents import SPAWN_AGENT, descriptor

PRICES = parse_price_book(
    {"versions": [{"version": "v1", "models": {"m": {"input": 1.0, "cached_input": 0.1, "output": 4.0}}}]}
)
SLEEP = ToolEntry("sleep", "wait", {"type": "object", "properties": {"seconds": {"type": "number"}}}, "read_only",
                  {"kind": "builtin"})  # fmt: skip
SPAWN = ToolEntry(SPAWN_AGENT, descriptor().spec.description, descriptor().spec.input_schema, "read_only",
                  {"kind": "builtin"})  # fmt: skip
TOOLS = {"sleep": SLEEP, SPAWN_AGENT: SPAWN}
PARTITIONS = 2

# (run state as the model sees it: depth, step, the prompt's messages) -> (text, [(tool, arguments)])
Script = Callable[[str, int, int, list[dict[str, object]]], tuple[str, list[tuple[str, dict[str, object]]]]]


class World:
    def __init__(self, root: Path, script: Script, limits: SubagentLimits | None = None) -> None:
        config = OrchestratorConfig(subagents=limits or SubagentLimits())
        self.orchestrator = OrchestratorCore(lambda _tenant: TOOLS, config)
        self.governor = CostGovernorCore(PRICES, CostControls(), lambda: 1_800_000_000_000)
        self.stores = {
            name: [PartitionStore(root / f"{name}-p{i}") for i in range(PARTITIONS)] for name in ("orch", "gov")
        }
        self.script = script
        self.journal: list[RunEvent] = []
        self.depth: dict[str, int] = {}
        self._queue: deque[RunEvent] = deque()
        self._done: set[str] = set()

    def close(self) -> None:
        for stores in self.stores.values():
            for store in stores:
                store.close()

    def store(self, name: str, run_id: str) -> PartitionStore:
        return self.stores[name][partition_for(run_id, PARTITIONS)]

    def emit(self, event: RunEvent) -> None:
        self._queue.append(event)

    def run(self, until: Callable[[RunEvent], bool] | None = None, limit: int = 200_000) -> None:
        """Reads the journal to its end (or past the first event `until` holds for), as both cores
        and the stand-in workers would."""
        done = self._done
        while self._queue:
            limit -= 1
            assert limit > 0, "the run tree did not settle"
            event = self._queue.popleft()
            self.journal.append(event)
            if isinstance(event, RunRequested):
                self.depth.setdefault(event.run_id, event.depth)
            for core, name in ((self.orchestrator, "orch"), (self.governor, "gov")):
                if core.accepts(event.type_name):
                    self._queue.extend(core.apply(self.store(name, event.run_id), event, live=True).emit)
            self._work(event, done)
            if until is not None and until(event):
                return

    def _work(self, event: RunEvent, done: set[str]) -> None:
        # A call runs once its budget is reserved (and, for a tool, requested): as the workers do.
        if not isinstance(event, BudgetReserved) or event.call_id in done or event.kind == "subagent":
            return
        done.add(event.call_id)
        request = next(
            e for e in reversed(self.journal) if isinstance(e, LlmCallRequested | ToolCallRequested)
            and e.call_id == event.call_id
        )  # fmt: skip
        if isinstance(request, ToolCallRequested):
            self.emit(ToolCallCompleted(ids.completed_event_id(request.call_id), request.run_id, request.tenant_id,
                                        request.step, request.call_id, request.tool, request.call_id,
                                        "x" * int(orjson.loads(request.arguments_json).get("scratch", 10)), False,
                                        1.0))  # fmt: skip
            return
        messages = [m.to_dict() for m in messages_from_json(request.messages_json)]
        text, calls = self.script(request.run_id, self.depth.get(request.run_id, 0), request.step, messages)
        tool_calls = [
            {"id": f"c{i}", "name": name, "arguments_json": orjson.dumps(args).decode()}
            for i, (name, args) in enumerate(calls)
        ]
        prompt = len(request.messages_json) // 8  # well within the governor's bound of one token a byte
        self.emit(LlmCallCompleted(
            ids.completed_event_id(request.call_id), request.run_id, request.tenant_id, request.step,
            request.call_id, "p", "m", text, orjson.dumps(tool_calls).decode(), "tool_calls" if calls else "stop",
            prompt, 20, 0, 1.0, 1,
        ))  # fmt: skip

    # -- what happened --------------------------------------------------------------------------

    def of(self, run_id: str) -> list[RunEvent]:
        return [e for e in self.journal if e.run_id == run_id]

    def end(self, run_id: str) -> RunEvent | None:
        return next((e for e in self.of(run_id) if e.type_name in TERMINAL_TYPES | {"RunHalted"}), None)

    def tree(self, root: str) -> set[str]:
        runs, frontier = {root}, [root]
        while frontier:
            parent = frontier.pop()
            for e in self.journal:
                if isinstance(e, RunRequested) and e.parent_run_id == parent and e.run_id not in runs:
                    runs.add(e.run_id)
                    frontier.append(e.run_id)
        return runs

    def spent(self, runs: set[str]) -> tuple[float, int]:
        """What the model calls of `runs` cost, from their settlements (children's carves left out)."""
        seen: dict[str, BudgetSettled] = {}
        for e in self.journal:
            if isinstance(e, BudgetSettled) and e.run_id in runs and e.kind == "model":
                seen[e.call_id] = e
        return sum(s.cost_usd for s in seen.values()), sum(s.input_tokens + s.output_tokens for s in seen.values())

    def model_calls(self, runs: set[str]) -> int:
        return len({e.call_id for e in self.journal if isinstance(e, LlmCallRequested) and e.run_id in runs})


def root_request(run: str, *, max_steps: int, budget_usd: float = 0.0, budget_tokens: int = 0) -> RunRequested:
    return RunRequested(ids.run_requested_id(run), run, "t", "the root task", "m", ["sleep", SPAWN_AGENT], max_steps,
                        "k", budget_usd=budget_usd, budget_tokens=budget_tokens)  # fmt: skip


def random_script(seed: int) -> Script:
    """Each run, at each step, either answers or starts up to 3 children (who may do the same),
    with and without budgets and step caps of their own: a tree that tries hard to overspend."""

    def script(
        run: str, depth: int, step: int, _messages: list[dict[str, object]]
    ) -> tuple[str, list[tuple[str, dict[str, object]]]]:
        rng = random.Random(f"{seed}/{run}/{step}")
        if rng.random() < 0.25:
            return f"answer of {run}", []
        calls: list[tuple[str, dict[str, object]]] = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.3:
                calls.append(("sleep", {"seconds": 0}))
                continue
            args: dict[str, object] = {"task": f"part {rng.randint(0, 99)}", "tools": ["sleep", SPAWN_AGENT]}
            if rng.random() < 0.5:
                args["max_steps"] = rng.randint(1, 30)
            if rng.random() < 0.5:
                args["budget_usd"] = rng.choice([0.0001, 0.001, 0.01, 1.0])
            if rng.random() < 0.3:
                args["budget_tokens"] = rng.randint(10, 5000)
            calls.append((SPAWN_AGENT, args))
        return "", calls

    return script
