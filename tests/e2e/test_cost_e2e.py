"""Hard caps through the whole platform, on the real broker: a scripted model that always asks
for more, 200 runs with random budgets across tenants with random daily caps. No run and no tenant
ever spends past its cap, and every halted run has its reason in the journal. Then: a halted run
resumes once its budget is raised, and a kill switch halts a tenant's runs within seconds."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentstream.budgets.controls import set_kill_switch, set_tenant_budget
from agentstream.client.journal import JournalEntry, RunBudget, RunRequest
from agentstream.client.scan import read_journal
from agentstream.events import (
    TERMINAL_TYPES,
    BudgetExceeded,
    BudgetReserved,
    BudgetSettled,
    LlmCallCompleted,
    RunHalted,
    RunRequested,
)
from agentstream.stack import Deployment
from tests.harness import isolated_settings

# Every turn asks for another calculation, each different (so no loop is detected), with some text.
SPENDER = {
    "turns": [
        {"text": f"step {i}: " + "still working on it " * 10,
         "tool_calls": [{"name": "calculator", "arguments": {"expression": f"{i} * 7 + 1"}}]}
        for i in range(80)
    ]
}  # fmt: skip
PRICES = {
    "versions": [
        {"version": "test-1", "models": {"scripted": {"input": 1.0, "cached_input": 0.1, "output": 4.0}},
         "tools": {"calculator": 0.0005}}
    ]
}  # fmt: skip
TENANTS = [f"tenant{i}" for i in range(5)]
RUNS = 200
LIMITS = {"budget_usd", "budget_tokens", "tenant_usd_per_day", "kill_switch"}


@pytest.fixture(scope="module")
async def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    home: Path = tmp_path_factory.mktemp("costs")
    settings, scen = await isolated_settings(kafka_bootstrap, home, "costs", {"spender": SPENDER})
    prices = home / "prices.json"
    prices.write_text(json.dumps(PRICES))
    async with Deployment(settings, [scen], extra_env={"AGENTSTREAM_PRICES": str(prices)}) as d:
        yield d


def _settled_everything(runs: dict[str, list[JournalEntry]], run_ids: set[str]) -> bool:
    for run_id in run_ids:
        events = [e.event for e in runs.get(run_id, [])]
        if not any(isinstance(e, RunHalted) or e.type_name in TERMINAL_TYPES for e in events):
            return False
        reserved = {e.call_id for e in events if isinstance(e, BudgetReserved)}
        settled = {e.call_id for e in events if isinstance(e, BudgetSettled)}
        if reserved - settled:
            return False  # a call in flight when a sibling was refused is still to be settled
    return True


async def _wait_settled(d: Deployment, run_ids: set[str], timeout_s: float) -> dict[str, list[JournalEntry]]:
    deadline = time.monotonic() + timeout_s
    while True:
        runs = await read_journal(d.settings)
        if _settled_everything(runs, run_ids) or time.monotonic() > deadline:
            return runs
        await asyncio.sleep(2.0)


@pytest.mark.timeout(400)
async def test_no_run_and_no_tenant_ever_exceeds_its_hard_cap(deployment: Deployment) -> None:
    d, rng = deployment, random.Random(20261125)
    tenant_caps = {t: round(rng.uniform(0.03, 0.12), 4) for t in TENANTS}
    for tenant, cap in tenant_caps.items():
        await set_tenant_budget(d.settings, tenant, usd_per_day=cap, max_active_runs=0, set_by="test")
    await asyncio.sleep(1.5)  # the governor follows the control topic within a second
    budgets: dict[str, RunBudget] = {}
    for i in range(RUNS):
        budget = RunBudget(
            usd=round(rng.uniform(0.004, 0.04), 5), tokens=rng.choice([0, 0, 0, rng.randint(3_000, 20_000)])
        )
        tenant = rng.choice(TENANTS)
        run_id = await d.client.request_run(
            RunRequest(task=f"[scenario:spender] spend {i}", tools=["calculator"], max_steps=100, tenant_id=tenant,
                       budget=budget)
        )  # fmt: skip
        budgets[run_id] = budget
    runs = await _wait_settled(d, set(budgets), 300)

    spent_by_tenant: dict[str, float] = defaultdict(float)
    limits_seen: dict[str, int] = defaultdict(int)
    for run_id, budget in budgets.items():
        events = [e.event for e in runs[run_id]]
        tenant = next(e for e in events if isinstance(e, RunRequested)).tenant_id
        settled = [e for e in events if isinstance(e, BudgetSettled)]
        spent = sum(e.cost_usd for e in settled)
        tokens = sum(e.input_tokens + e.output_tokens for e in settled)
        spent_by_tenant[tenant] += spent
        assert spent <= budget.usd + 1e-9, (run_id, spent, budget)
        if budget.tokens:
            assert tokens <= budget.tokens, (run_id, tokens, budget)
        # the model calls the journal records are exactly the ones settled: nothing ran unreserved
        completed = {e.call_id for e in events if isinstance(e, LlmCallCompleted)}
        assert completed <= {e.call_id for e in events if isinstance(e, BudgetReserved)}
        halts = [e for e in events if isinstance(e, RunHalted)]
        assert halts, f"{run_id} ended without a halt: {[e.type_name for e in events][-3:]}"
        halt = halts[-1]
        assert halt.limit in LIMITS and halt.reason and halt.resumable
        refusal = next(e for e in events if isinstance(e, BudgetExceeded) and e.limit == halt.limit)
        assert refusal.reason == halt.reason and json.loads(refusal.evidence_json)
        limits_seen[halt.limit] += 1
    for tenant, spent in spent_by_tenant.items():
        assert spent <= tenant_caps[tenant] + 1e-9, (tenant, spent, tenant_caps[tenant])
    # the workload exercised the run caps and the tenant circuit breaker both
    assert limits_seen["budget_usd"] > 0 and limits_seen["tenant_usd_per_day"] > 0, dict(limits_seen)


async def test_a_run_halted_at_its_budget_resumes_after_a_raise(deployment: Deployment) -> None:
    d = deployment
    run_id = await d.client.request_run(
        RunRequest(task="[scenario:spender] raise me", tools=["calculator"], max_steps=100, tenant_id="raiser",
                   budget=RunBudget(usd=0.012))
    )  # fmt: skip
    first = [e.event async for e in d.client.follow(run_id, timeout_s=60, until=lambda e: isinstance(e, RunHalted))]
    halt = first[-1]
    assert isinstance(halt, RunHalted) and halt.limit == "budget_usd"
    steps_before = halt.steps
    await d.client.resume(run_id, "raiser", halt.halt, 0, "more money", raise_budget=RunBudget(usd=0.02))
    again = [
        e.event async for e in d.client.follow(run_id, timeout_s=60, until=lambda e: isinstance(e, RunHalted) and e.halt == 2)
    ]  # fmt: skip
    second = again[-1]
    assert isinstance(second, RunHalted) and second.limit == "budget_usd" and second.steps > steps_before
    await d.client.cancel(run_id, "raiser", "done")


async def test_a_tenant_kill_switch_halts_its_runs_within_seconds(deployment: Deployment) -> None:
    d = deployment
    run_id = await d.client.request_run(
        RunRequest(task="[scenario:spender] until stopped", tools=["calculator"], max_steps=100, tenant_id="victim")
    )
    async for _entry in d.client.follow(run_id, timeout_s=60, until=lambda e: isinstance(e, LlmCallCompleted)):
        pass
    engaged = time.monotonic()
    await set_kill_switch(d.settings, "tenant", "victim", engaged=True, reason="incident 42", set_by="test")
    halted = [e async for e in d.client.follow(run_id, timeout_s=30, until=lambda e: isinstance(e, RunHalted))]
    halt = halted[-1].event
    assert isinstance(halt, RunHalted) and halt.limit == "kill_switch" and "incident 42" in halt.reason
    assert time.monotonic() - engaged < 5.0
    await set_kill_switch(d.settings, "tenant", "victim", engaged=False, reason="over", set_by="test")
    await d.client.cancel(run_id, "victim", "done")
