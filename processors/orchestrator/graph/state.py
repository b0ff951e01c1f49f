"""A graph run's progress: a frozen value held in the run's state (RunState.graph), persisted with it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class GraphProgress:
    values: dict[str, Any] = field(default_factory=dict)
    ready: tuple[str, ...] = ()  # tokens ("<node>.<visit>") whose call is to be asked for
    running: tuple[str, ...] = ()  # tokens whose call was asked for (journaled)
    visits: dict[str, int] = field(default_factory=dict)
    taken: dict[str, int] = field(default_factory=dict)  # bounded edges ("a>b"): times taken
    arrived: dict[str, int] = field(default_factory=dict)  # join: branches arrived in this fan-out
    # A subagent node's child budget the cost governor reserved on this run's ledger ("usd tokens").
    budgets: dict[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()  # the nodes entered, in order (a branch as "node>target")
    failure: str = ""

    @property
    def done(self) -> bool:
        return not self.ready and not self.running and not self.failure and not any(self.arrived.values())

    @staticmethod
    def load(value: Any) -> GraphProgress:
        if isinstance(value, GraphProgress):
            return value
        d = dict(value)
        for name in ("ready", "running", "path"):
            d[name] = tuple(d.get(name, ()))
        return GraphProgress(**d)
