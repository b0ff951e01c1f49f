"""How much processor state a finished run leaves behind, per core.

Drives N runs to their end through the real cores (orchestrator, policy gate, cost governor,
model invoker's and tool executor's call ledgers) over real partition stores, in one process and
without Kafka: every event a core emits is read back by every core, as the journal would hand it
to them, and the ledgers' work items answer at once (each run: one model call that asks for the
calculator, one tool call, one model call that answers). Then every run has ended, so whatever a
store holds is what finished runs keep. Prints one JSON object: keys and bytes per finished run
per core, and the totals.

    .venv/bin/python bench/state_footprint.py --runs 500
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Options, Rdict

from agentstream import ids
from agentstream.budgets.controls import CostControls
from agentstream.calls import CallLedgerCore, Clearances
from agentstream.credentials.delegation import DelegationIssuer
from agentstream.events import (
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    RunEvent,
    RunRequested,
    ToolCallAuthorized,
    ToolCallCompleted,
)
from agentstream.kafka.core import Outcome, ProcessorCore
from agentstream.kafka.state import PartitionStore
from agentstream.pricing.table import parse_price_book
from agentstream.processors.cost_governor.core import CostGovernorCore
from agentstream.processors.orchestrator.core import OrchestratorCore
from agentstream.processors.policy_gate.core import PolicyGateCore
from agentstream.registry.catalog import ToolCatalog
from agentstream.registry.entry import ToolEntry
from agentstream.security.signing import Signer

NOW = 1_800_000_000_000
CALC = ToolEntry(
    "calculator", "Arithmetic.",
    {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    "read_only", {"kind": "builtin"}, idempotent=True,
)  # fmt: skip
PRICES = parse_price_book(
    {"versions": [{"version": "v1", "models": {"m": {"input": 1.0, "cached_input": 0.1, "output": 4.0}},
                   "tools": {"calculator": 0.001}}]}
)  # fmt: skip


async def _answer_model(request: LlmCallRequested, _clearances: Clearances) -> list[RunEvent]:
    calls = [] if request.step > 1 else [{"id": "c1", "name": "calculator", "arguments_json": '{"expression":"2+2"}'}]
    text = "the answer is 4" if request.step > 1 else "let me compute"
    return [
        LlmCallCompleted(
            ids.completed_event_id(request.call_id), request.run_id, request.tenant_id, request.step,
            request.call_id, "scripted", "m", text, orjson.dumps(calls).decode(),
            "tool_calls" if calls else "stop", 120, 20, 0, 1.0, 1,
        )
    ]  # fmt: skip


async def _answer_tool(request: ToolCallAuthorized, _clearances: Clearances) -> list[RunEvent]:
    return [
        ToolCallCompleted(
            ids.completed_event_id(request.call_id), request.run_id, request.tenant_id, request.step,
            request.call_id, request.tool, request.idempotency_key, "4", False, 1.0,
        )
    ]  # fmt: skip


def cores(keep: int | None = None) -> list[ProcessorCore]:
    """The cores, as their processes build them; `keep`: how many ended runs each remembers per
    partition (None: their defaults)."""
    catalog = ToolCatalog()
    catalog.apply(CALC.to_event())
    clock = lambda: NOW  # noqa: E731
    ended: dict[str, Any] = {} if keep is None else {"ended_keep": keep}
    closed: dict[str, Any] = {} if keep is None else {"closed_keep": keep}
    return [
        OrchestratorCore(lambda _tenant: {"calculator": CALC}, **ended),
        PolicyGateCore(catalog, Signer(b"c" * 32), Signer(b"a" * 32), DelegationIssuer(b"d" * 32), clock, **ended),
        CostGovernorCore(PRICES, CostControls(), clock, **ended),
        CallLedgerCore(
            "model-invoker", LlmCallRequested,
            lambda e: e.call_id if isinstance(e, LlmCallCompleted | LlmCallFailed) else None,
            _answer_model, frozenset({"LlmCallCompleted", "LlmCallFailed"}), requires=frozenset({"BudgetReserved"}),
            **closed,
        ),
        CallLedgerCore(
            "tool-executor", ToolCallAuthorized,
            lambda e: e.call_id if isinstance(e, ToolCallCompleted) else None,
            _answer_tool, frozenset({"ToolCallCompleted"}), requires=frozenset({"BudgetReserved"}), **closed,
        ),
    ]  # fmt: skip


class Platform:
    """Every core over its own partition store, fed one journal (one partition's worth)."""

    def __init__(self, root: Path, keep: int | None = None) -> None:
        self.cores = cores(keep)
        self.stores = {c.name: PartitionStore(root / c.name) for c in self.cores}
        self.journal: list[Event] = []
        self.changes: dict[str, int] = {}  # changed keys per core, over every one-event batch

    async def feed(self, *events: Event) -> list[Event]:
        """Appends `events` and everything they cause until the platform is quiet; returns all
        that was appended."""
        start = len(self.journal)
        queue: deque[Event] = deque(events)
        while queue:
            event = queue.popleft()
            self.journal.append(event)
            outcome = Outcome()
            for core in self.cores:
                if core.accepts(event.type_name):
                    store = self.stores[core.name]
                    outcome.extend(core.apply(store, event, live=True))
                    # What a changelog carries for this batch of one event: each changed key.
                    changed = getattr(store, "staged_changes", None)
                    self.changes[core.name] = self.changes.get(core.name, 0) + (len(changed()) if changed else 0)
                    store.commit(len(self.journal))
            queue.extend(outcome.emit)
            for item in outcome.work:
                queue.extend(await item.run())
        return self.journal[start:]

    async def run(self, run_id: str) -> list[Event]:
        return await self.feed(
            RunRequested(ids.run_requested_id(run_id), run_id, "acme", "what is 2+2?", "m", ["calculator"], 10, run_id)
        )

    def close(self) -> None:
        for store in self.stores.values():
            store.close()


async def drive(runs: int, root: Path, keep: int | None) -> dict[str, Any]:
    platform = Platform(root, keep)
    for i in range(runs):
        await platform.run(f"run_{i:06d}")
    platform.close()
    per_core: dict[str, Any] = {}
    for name, store in platform.stores.items():
        held = _contents(store.path)
        prefixes: dict[str, int] = {}
        for key in held:
            prefix = key.decode().split("/", 1)[0]
            prefixes[prefix] = prefixes.get(prefix, 0) + 1
        size = sum(len(k) + len(v) for k, v in held.items())
        per_core[name] = {
            "keys": len(held),
            "bytes": size,
            "keys_per_run": round(len(held) / runs, 3),
            "bytes_per_run": round(size / runs, 1),
            "by_prefix": prefixes,
            "changed_keys_per_run": round(platform.changes.get(name, 0) / runs, 2),
        }
    events = len(platform.journal)
    return {"runs": runs, "keep": keep, "journal_events": events, "events_per_run": round(events / runs, 1),
            "cores": per_core}  # fmt: skip


def _contents(path: Path) -> dict[bytes, bytes]:
    """A closed store's keys and stored bytes, the offset excluded (read straight from RocksDB,
    so the script also measures a checkout whose PartitionStore lacks `committed`)."""
    options = Options(raw_mode=True)
    db = Rdict(str(path), options=options)
    try:
        return {k: v for k, v in db.items() if isinstance(k, bytes) and not k.startswith(b"\x00")}
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument(
        "--keep", type=int, default=None, help="ended runs remembered per partition (default: the cores')"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="state-footprint-") as tmp:
        result = asyncio.run(drive(args.runs, Path(tmp), args.keep))
    result["keys_per_run_total"] = round(sum(c["keys_per_run"] for c in result["cores"].values()), 3)
    result["bytes_per_run_total"] = round(sum(c["bytes_per_run"] for c in result["cores"].values()), 1)
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
