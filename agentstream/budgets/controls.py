"""The operator's cost controls as a table: tenant budgets and kill switches, last write wins."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from agentstream.config import Settings
from agentstream.events import Event, KillSwitchSet, TenantBudgetSet
from agentstream.kafka.table import TopicTable, put_record
from agentstream.topics import CONTROL, load_topics

KILL_SCOPES = ("platform", "tenant", "run")


@dataclass(frozen=True, slots=True)
class TenantBudget:
    usd_per_day: float = 0.0  # 0: no cap
    max_active_runs: int = 0  # 0: no cap


@dataclass(frozen=True, slots=True)
class Kill:
    scope: str
    target: str
    reason: str
    set_by: str


@dataclass
class CostControls:
    budgets: dict[str, TenantBudget] = field(default_factory=dict)
    kills: dict[tuple[str, str], Kill] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        # One dict operation per event: a reader thread updates what the event loop reads.
        if isinstance(event, TenantBudgetSet):
            self.budgets[event.tenant_id] = TenantBudget(event.usd_per_day, event.max_active_runs)
        elif isinstance(event, KillSwitchSet):
            key = (event.scope, event.target)
            if event.engaged:
                self.kills[key] = Kill(event.scope, event.target, event.reason, event.set_by)
            else:
                self.kills.pop(key, None)

    def budget(self, tenant_id: str) -> TenantBudget:
        return self.budgets.get(tenant_id, TenantBudget())

    def kill_for(self, tenant_id: str, run_id: str) -> Kill | None:
        """The switch that stops this run, the widest first."""
        for key in (("platform", ""), ("tenant", tenant_id), ("run", run_id)):
            kill = self.kills.get(key)
            if kill is not None:
                return kill
        return None


class ControlReader(TopicTable):
    def __init__(self, settings: Settings, controls: CostControls | None = None) -> None:
        super().__init__(settings, [load_topics(settings.topic_prefix)[CONTROL].name])
        self.controls = controls if controls is not None else CostControls()

    def _on_event(self, event: Event) -> None:
        self.controls.apply(event)


def budget_key(tenant_id: str) -> str:
    return f"budget/{tenant_id}"


def kill_key(scope: str, target: str) -> str:
    return f"kill/{scope}/{target}"


async def set_tenant_budget(
    settings: Settings, tenant_id: str, *, usd_per_day: float, max_active_runs: int, set_by: str
) -> TenantBudgetSet:
    if usd_per_day < 0 or max_active_runs < 0:
        raise ValueError("budgets must not be negative (0 means no cap)")
    event = TenantBudgetSet(
        budget_key(tenant_id), tenant_id, float(usd_per_day), int(max_active_runs), set_by, int(time.time() * 1000)
    )
    await put_record(settings, load_topics(settings.topic_prefix)[CONTROL].name, event)
    return event


async def set_kill_switch(
    settings: Settings, scope: str, target: str, *, engaged: bool, reason: str, set_by: str
) -> KillSwitchSet:
    if scope not in KILL_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(KILL_SCOPES)}, not {scope!r}")
    if (scope == "platform") != (target == ""):
        raise ValueError("the platform switch has no target; tenant and run switches need one")
    event = KillSwitchSet(kill_key(scope, target), scope, target, engaged, reason, set_by, int(time.time() * 1000))
    await put_record(settings, load_topics(settings.topic_prefix)[CONTROL].name, event)
    return event
