"""A run's and a tenant's spend, and the check that keeps every hard cap unbroken. Pure.

The invariant: for every run and tenant, spent + outstanding reservations stays within the cap.
A call is reserved at its worst case before it runs and settled at its actual cost after, which
is never more than what was reserved, so the cap holds whatever the call does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

DAY_MS = 86_400_000


@dataclass(slots=True)
class Reservation:
    kind: str  # "model" or "tool"
    usd: float
    tokens: int
    tool: str
    step: int
    price_version: str


@dataclass(slots=True)
class RunLedger:
    run_id: str
    tenant_id: str
    budget_usd: float = 0.0  # 0: no cap
    budget_tokens: int = 0
    budget_wall_s: float = 0.0
    started_ms: int = 0  # the first reservation's decision time: wall clock counts from there
    spent_usd: float = 0.0
    spent_tokens: int = 0
    reserved: dict[str, Reservation] = field(default_factory=dict)
    halts: int = 0
    halted: bool = False
    resumed: int = 0  # the last halt whose resume raised the budget
    active: bool = False  # counted in its tenant's active runs
    ended: bool = False
    # A subagent's parent and the parent's call it answers: its spend settles that call (subagents.py).
    parent_run_id: str = ""
    parent_call_id: str = ""

    @property
    def committed_usd(self) -> float:
        return self.spent_usd + sum(r.usd for r in self.reserved.values())

    @property
    def committed_tokens(self) -> int:
        return self.spent_tokens + sum(r.tokens for r in self.reserved.values())

    def dump(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies every value, and this runs for every event of a step.
        out = {name: getattr(self, name) for name in _RUN_FIELDS}
        out["reserved"] = {
            k: {name: getattr(r, name) for name in _RESERVATION_FIELDS} for k, r in self.reserved.items()
        }
        return out

    @staticmethod
    def load(raw: dict[str, Any]) -> RunLedger:
        # A copy that shares nothing mutable with `raw`: the governor skips a write when the
        # ledger still equals what it read (CostGovernorCore._save).
        reserved = {k: Reservation(**v) for k, v in raw.get("reserved", {}).items()}
        return RunLedger(**{**raw, "reserved": reserved})


_RUN_FIELDS = tuple(f.name for f in fields(RunLedger))
_RESERVATION_FIELDS = tuple(f.name for f in fields(Reservation))


@dataclass(slots=True)
class TenantDay:
    """One partition's share of a tenant's spend today; the governor sums the partitions."""

    day: int = 0
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    active: int = 0

    def roll(self, day: int) -> None:
        if day > self.day:
            self.day, self.spent_usd = day, 0.0

    def dump(self) -> dict[str, Any]:
        return {"day": self.day, "spent_usd": self.spent_usd, "reserved_usd": self.reserved_usd, "active": self.active}

    @staticmethod
    def load(raw: dict[str, Any] | None) -> TenantDay:
        return TenantDay(**raw) if raw else TenantDay()


@dataclass(frozen=True, slots=True)
class TenantView:
    committed_usd: float  # spent today plus outstanding reservations, across partitions
    active: int
    usd_per_day: float
    max_active_runs: int
    killed_by: str | None  # the kill switch that stops the tenant or this run, if any


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: str
    reason: str
    resumable: bool
    evidence: dict[str, Any]


def check(run: RunLedger, tenant: TenantView, need_usd: float, need_tokens: int, now_ms: int) -> Refusal | None:
    """Whether a call costing at most `need_usd` and `need_tokens` may start now."""
    if tenant.killed_by is not None:
        return Refusal("kill_switch", f"stopped by a kill switch: {tenant.killed_by}", True, {})
    if run.budget_usd and run.committed_usd + need_usd > run.budget_usd + 1e-12:
        return Refusal(
            "budget_usd",
            f"run budget ${run.budget_usd:.6f} would be exceeded: ${run.spent_usd:.6f} spent, "
            f"${run.committed_usd - run.spent_usd:.6f} reserved, this call may cost ${need_usd:.6f}",
            True,
            {"spent_usd": run.spent_usd, "committed_usd": run.committed_usd, "need_usd": need_usd},
        )
    if run.budget_tokens and run.committed_tokens + need_tokens > run.budget_tokens:
        return Refusal(
            "budget_tokens",
            f"run budget of {run.budget_tokens} tokens would be exceeded: {run.spent_tokens} used, "
            f"this call may use {need_tokens}",
            True,
            {"spent_tokens": run.spent_tokens, "committed_tokens": run.committed_tokens, "need_tokens": need_tokens},
        )
    started = run.started_ms or now_ms
    if run.budget_wall_s and (now_ms - started) / 1000.0 >= run.budget_wall_s:
        return Refusal(
            "wall_clock",
            f"run wall-clock budget of {run.budget_wall_s:g}s used up ({(now_ms - started) / 1000.0:.1f}s)",
            True,
            {"elapsed_s": (now_ms - started) / 1000.0},
        )
    if tenant.usd_per_day and tenant.committed_usd + need_usd > tenant.usd_per_day + 1e-12:
        return Refusal(
            "tenant_usd_per_day",
            f"tenant {run.tenant_id}'s daily budget ${tenant.usd_per_day:.6f} would be exceeded "
            f"(${tenant.committed_usd:.6f} committed today): every run of the tenant halts",
            True,
            {"tenant_committed_usd": tenant.committed_usd, "need_usd": need_usd},
        )
    if not run.active and tenant.max_active_runs and tenant.active >= tenant.max_active_runs:
        return Refusal(
            "tenant_active_runs",
            f"tenant {run.tenant_id} already has {tenant.active} active runs (cap {tenant.max_active_runs})",
            True,
            {"active": tenant.active},
        )
    return None
