"""What runs cost, from the cost governor's settlements in the journal: per run, tool, model, tenant.

Only `BudgetSettled` counts: it is the governor's record of a call's actual cost at the price
version reserved with, so summing the journal reproduces every figure exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agentstream.events import BudgetSettled

GROUPS = ("run", "tool", "model", "tenant")


@dataclass
class RunCost:
    run_id: str
    tenant_id: str
    usd: float = 0.0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    by_tool: dict[str, float] = field(default_factory=dict)
    by_model: dict[str, float] = field(default_factory=dict)
    calls_by: dict[str, int] = field(default_factory=dict)  # "tool:<name>" / "model:<name>" -> calls
    price_versions: set[str] = field(default_factory=set)
    first_ms: int = 0
    _settled: set[str] = field(default_factory=set)

    def add(self, event: BudgetSettled, timestamp_ms: int = 0) -> None:
        if event.call_id in self._settled:
            return  # a settlement re-emitted after a crash is the same settlement
        self._settled.add(event.call_id)
        if event.kind == "subagent":
            return  # a child's spend, settled on its parent's ledger: the child's own calls count it
        self.first_ms = self.first_ms or timestamp_ms
        self.usd += event.cost_usd
        self.price_versions.add(event.price_version)
        if event.kind == "model":
            self.model_calls += 1
            self.input_tokens += event.input_tokens
            self.cached_input_tokens += event.cached_input_tokens
            self.output_tokens += event.output_tokens
            self.by_model[event.model] = self.by_model.get(event.model, 0.0) + event.cost_usd
            self.calls_by[f"model:{event.model}"] = self.calls_by.get(f"model:{event.model}", 0) + 1
        else:
            self.tool_calls += 1
            self.by_tool[event.tool] = self.by_tool.get(event.tool, 0.0) + event.cost_usd
            self.calls_by[f"tool:{event.tool}"] = self.calls_by.get(f"tool:{event.tool}", 0) + 1

    def resource(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "usd": round(self.usd, 9),
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "model_calls": self.model_calls,
            "tool_calls": self.tool_calls,
            "by_tool": {k: round(v, 9) for k, v in sorted(self.by_tool.items())},
            "by_model": {k: round(v, 9) for k, v in sorted(self.by_model.items())},
            "price_versions": sorted(self.price_versions),
        }


def group_costs(costs: Iterable[RunCost], group_by: str) -> list[dict[str, Any]]:
    """Totals per run, tool, model or tenant, most expensive first."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {', '.join(GROUPS)}")
    totals: dict[str, dict[str, Any]] = {}
    for cost in costs:
        if group_by == "run":
            parts = {cost.run_id: (cost.usd, cost.model_calls + cost.tool_calls)}
        elif group_by == "tenant":
            parts = {cost.tenant_id: (cost.usd, cost.model_calls + cost.tool_calls)}
        else:
            source = cost.by_tool if group_by == "tool" else cost.by_model
            parts = {name: (usd, cost.calls_by.get(f"{group_by}:{name}", 0)) for name, usd in source.items()}
        for key, (usd, calls) in parts.items():
            row = totals.setdefault(key, {"key": key, "usd": 0.0, "runs": 0, "calls": 0})
            row["usd"] += usd
            row["runs"] += 1
            row["calls"] += calls
    rows = sorted(totals.values(), key=lambda r: (-r["usd"], r["key"]))
    for row in rows:
        row["usd"] = round(row["usd"], 9)
    return rows


def costs_from_journal(entries: Iterable[tuple[BudgetSettled, int]]) -> dict[str, RunCost]:
    found: dict[str, RunCost] = {}
    for event, timestamp_ms in entries:
        found.setdefault(event.run_id, RunCost(event.run_id, event.tenant_id)).add(event, timestamp_ms)
    return found
