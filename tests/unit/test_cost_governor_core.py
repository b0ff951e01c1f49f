"""The cost governor's core over real partition stores, without Kafka: reservations, settlements,
refusals at every cap, resume after a raise, tenant caps across partitions, and replay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentstream import ids
from agentstream.budgets.controls import CostControls, Kill, TenantBudget
from agentstream.events import (
    BudgetExceeded,
    BudgetReserved,
    BudgetSettled,
    LlmCallCompleted,
    LlmCallRequested,
    ResumeRequested,
    RunCompleted,
    RunEvent,
    RunHalted,
    RunRequested,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.kafka.state import PartitionStore
from agentstream.pricing.table import parse_price_book
from agentstream.processors.cost_governor.core import CostGovernorCore

PRICES = parse_price_book(
    {"versions": [{"version": "v1", "models": {"m": {"input": 1.0, "cached_input": 0.1, "output": 4.0}},
                   "tools": {"pay": 0.5}}]}
)  # fmt: skip
NOW = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[PartitionStore]]:
    opened = [PartitionStore(tmp_path / f"p{i}") for i in range(2)]
    yield opened
    for store in opened:
        store.close()


def requested(run: str, budget_usd: float = 0.0, tenant: str = "t", **budget: float) -> RunRequested:
    return RunRequested(ids.run_requested_id(run), run, tenant, "task", "m", [], 10, "k", budget_usd=budget_usd,
                        budget_tokens=int(budget.get("tokens", 0)), budget_wall_s=budget.get("wall_s", 0.0))  # fmt: skip


def llm(run: str, step: int, max_tokens: int = 100, tenant: str = "t") -> LlmCallRequested:
    call = ids.llm_call_id(run, step)
    return LlmCallRequested(ids.requested_event_id(call), run, tenant, step, call, "m", "[]", "[]", max_tokens)


def done(request: LlmCallRequested, input_tokens: int, output_tokens: int) -> LlmCallCompleted:
    return LlmCallCompleted(
        ids.completed_event_id(request.call_id), request.run_id, request.tenant_id, request.step, request.call_id,
        "p", "m", "ok", "[]", "stop", input_tokens, output_tokens, 0, 1.0, 1,
    )  # fmt: skip


def tool(run: str, step: int, index: int, name: str = "pay") -> ToolCallRequested:
    call = ids.tool_call_id(run, step, index)
    return ToolCallRequested(ids.requested_event_id(call), run, "t", step, call, "tc", name, "{}", call, 1000)


def feed(core: CostGovernorCore, store: PartitionStore, *events: RunEvent, live: bool = True) -> list[RunEvent]:
    """Applies events as the shell would, reading every emitted event back as the journal would."""
    out: list[RunEvent] = []
    for event in events:
        emitted = core.apply(store, event, live=live).emit
        out += emitted
        for e in emitted:
            core.apply(store, e, live=live)
    return out


def governor(controls: CostControls | None = None, clock: Clock | None = None) -> CostGovernorCore:
    return CostGovernorCore(PRICES, controls or CostControls(), clock or Clock())


def test_reserve_the_worst_case_then_settle_the_actual(stores: list[PartitionStore]) -> None:
    core, store = governor(), stores[0]
    feed(core, store, requested("r1", budget_usd=1.0))
    request = llm("r1", 1, max_tokens=1000)
    (reserved,) = feed(core, store, request)
    assert isinstance(reserved, BudgetReserved) and reserved.kind == "model"
    # at least max_tokens at the output price, plus the prompt bound at the input price
    assert reserved.reserved_usd >= 1000 * 4.0 / 1e6
    (settled,) = feed(core, store, done(request, 50, 200))
    assert isinstance(settled, BudgetSettled)
    assert settled.cost_usd == pytest.approx((50 * 1.0 + 200 * 4.0) / 1e6)
    assert settled.released_usd == pytest.approx(reserved.reserved_usd - settled.cost_usd)
    assert feed(core, store, done(request, 50, 200)) == []  # a re-read completion settles nothing twice


def test_a_call_that_could_overshoot_is_refused_and_runs_after_a_raise(stores: list[PartitionStore]) -> None:
    core, store = governor(), stores[0]
    feed(core, store, requested("r1", budget_usd=0.001))
    request = llm("r1", 1, max_tokens=1000)  # worst case > $0.004
    (refused,) = feed(core, store, request)
    assert isinstance(refused, BudgetExceeded) and refused.limit == "budget_usd" and refused.resumable
    assert "would be exceeded" in refused.reason
    feed(core, store, RunHalted(ids.halt_id("r1", 1), "r1", "t", 0, 1, "budget_usd", refused.reason, True))
    assert feed(core, store, request) == []  # a halted run gets no decisions
    feed(core, store, ResumeRequested(ids.resume_id("r1", 1), "r1", "t", 1, 0, "raise", "test", add_usd=0.01))
    (reserved,) = feed(core, store, request)
    assert isinstance(reserved, BudgetReserved) and reserved.committed_usd <= 0.011


def test_parallel_calls_count_against_each_other(stores: list[PartitionStore]) -> None:
    core, store = governor(), stores[0]
    feed(core, store, requested("r1", budget_usd=1.2))
    first, second, third = (tool("r1", 1, i) for i in range(3))
    # decided back to back, before any reservation is read back from the journal
    out = [e for r in (first, second, third) for e in core.apply(store, r, live=True).emit]
    assert [type(e).__name__ for e in out] == ["BudgetReserved", "BudgetReserved", "BudgetExceeded"]


def test_the_tenant_cap_spans_partitions_and_halts_every_run(stores: list[PartitionStore]) -> None:
    controls = CostControls(budgets={"t": TenantBudget(usd_per_day=1.0)})
    core = governor(controls)
    feed(core, stores[0], requested("a"))
    feed(core, stores[1], requested("b"))
    (ok,) = feed(core, stores[0], tool("a", 1, 0))
    feed(core, stores[0], ToolCallCompleted("x", "a", "t", 1, ok.call_id, "pay", ok.call_id, "ok", False, 1.0))  # type: ignore[attr-defined]
    (ok_b,) = feed(core, stores[1], tool("b", 1, 0))
    assert isinstance(ok_b, BudgetReserved) and ok_b.tenant_committed_usd == pytest.approx(1.0)
    (refused,) = feed(core, stores[1], tool("b", 1, 1))
    assert isinstance(refused, BudgetExceeded) and refused.limit == "tenant_usd_per_day"
    (refused_a,) = feed(core, stores[0], tool("a", 2, 0))
    assert isinstance(refused_a, BudgetExceeded) and refused_a.limit == "tenant_usd_per_day"


def test_a_new_day_resets_the_tenant_cap(stores: list[PartitionStore]) -> None:
    clock = Clock()
    core = governor(CostControls(budgets={"t": TenantBudget(usd_per_day=0.5)}), clock)
    feed(core, stores[0], requested("a"))
    (ok,) = feed(core, stores[0], tool("a", 1, 0))
    feed(core, stores[0], ToolCallCompleted("x", "a", "t", 1, ok.call_id, "pay", ok.call_id, "ok", False, 1.0))  # type: ignore[attr-defined]
    assert isinstance(feed(core, stores[0], tool("a", 2, 0))[0], BudgetExceeded)
    clock.now += 86_400_000
    assert isinstance(feed(core, stores[0], tool("a", 3, 0))[0], BudgetReserved)


def test_kill_switches_and_the_active_run_cap(stores: list[PartitionStore]) -> None:
    controls = CostControls(budgets={"t": TenantBudget(max_active_runs=1)})
    core = governor(controls)
    feed(core, stores[0], requested("a"), requested("b"))
    assert isinstance(feed(core, stores[0], llm("a", 1))[0], BudgetReserved)
    (second,) = feed(core, stores[0], llm("b", 1))
    assert isinstance(second, BudgetExceeded) and second.limit == "tenant_active_runs"
    feed(core, stores[0], RunCompleted(ids.terminal_id("a"), "a", "t", 1, "done", "done"))
    assert isinstance(feed(core, stores[0], llm("b", 1))[0], BudgetReserved)  # "a" ended: room again
    controls.kills[("tenant", "t")] = Kill("tenant", "t", "incident", "ops")
    (killed,) = feed(core, stores[0], llm("b", 2))
    assert isinstance(killed, BudgetExceeded) and killed.limit == "kill_switch" and "incident" in killed.reason


def test_token_and_wall_clock_caps(stores: list[PartitionStore]) -> None:
    clock = Clock()
    core = governor(clock=clock)
    feed(core, stores[0], requested("a", tokens=150), requested("b", wall_s=10))
    (tokens,) = feed(core, stores[0], llm("a", 1, max_tokens=200))
    assert isinstance(tokens, BudgetExceeded) and tokens.limit == "budget_tokens"
    assert isinstance(feed(core, stores[0], llm("b", 1))[0], BudgetReserved)
    clock.now += 11_000
    (late,) = feed(core, stores[0], tool("b", 1, 0))
    assert isinstance(late, BudgetExceeded) and late.limit == "wall_clock"


def test_replaying_the_journal_rebuilds_the_same_ledger(stores: list[PartitionStore]) -> None:
    core, live_store, replay_store = governor(), stores[0], stores[1]
    journal: list[RunEvent] = [requested("r1", budget_usd=1.0)]
    core.apply(live_store, journal[0], live=True)
    for step in (1, 2):
        request = llm("r1", step)
        journal.append(request)
        journal += core.apply(live_store, request, live=True).emit
        completion = done(request, 10 * step, 20)
        journal.append(completion)
        journal += core.apply(live_store, completion, live=True).emit
    fresh = governor()
    for event in journal:
        assert fresh.apply(replay_store, event, live=False).emit == []
    assert replay_store.get("run/r1") == live_store.get("run/r1")
    assert replay_store.get("tenant/t") == live_store.get("tenant/t")


def test_a_request_read_while_recovering_is_decided_once_caught_up(stores: list[PartitionStore]) -> None:
    core, store = governor(), stores[0]
    request = llm("r1", 1)
    assert feed(core, store, requested("r1", budget_usd=1.0), request, live=False) == []
    (decided,) = core.resume(store).emit
    assert isinstance(decided, BudgetReserved) and decided.call_id == request.call_id
    core.apply(store, decided, live=True)  # read back
    assert core.resume(store).emit == []  # decided once


def test_an_answer_too_large_to_journal_is_charged_at_its_reservation_and_other_failures_at_nothing(
    stores: list[PartitionStore],
) -> None:
    from agentstream.events import LlmCallFailed
    from agentstream.journal_limits import RESPONSE_TOO_LARGE

    core, store = governor(), stores[0]
    feed(core, store, requested("r1", budget_usd=1.0))
    for step, error_type in ((1, RESPONSE_TOO_LARGE), (2, "provider_error")):
        request = llm("r1", step, max_tokens=1000)
        (reserved,) = feed(core, store, request)
        assert isinstance(reserved, BudgetReserved)
        failed = LlmCallFailed(ids.completed_event_id(request.call_id), "r1", "t", step, request.call_id, "p",
                               error_type, "too big", None, False, 1, True)  # fmt: skip
        (settled,) = feed(core, store, failed)
        assert isinstance(settled, BudgetSettled)
        expected = reserved.reserved_usd if error_type == RESPONSE_TOO_LARGE else 0.0
        assert settled.cost_usd == pytest.approx(expected)
        assert settled.released_usd == pytest.approx(reserved.reserved_usd - expected)


def test_what_the_governor_applies_as_it_emits_changes_nothing_when_handed_back(stores: list[PartitionStore]) -> None:
    """The shell does not hand the governor its own reservations and call settlements back
    (`applied_when_emitted`): applying them again must change nothing and emit nothing. A refusal
    is applied only when read back (it clears the request's undecided mark)."""
    core, store = governor(), stores[0]
    feed(core, store, requested("r1", budget_usd=0.002))
    model_call = llm("r1", 1, max_tokens=100)
    script: list[RunEvent] = [model_call, done(model_call, 10, 20), tool("r1", 1, 0, "calc"), llm("r1", 2, 10_000)]
    checked: list[str] = []
    for event in script:
        for emitted in core.apply(store, event, live=True).emit:
            if core.applied_when_emitted(emitted):
                before = dict(store.staged_changes())
                assert core.apply(store, emitted, live=True).emit == []
                assert store.staged_changes() == before, emitted
                checked.append(type(emitted).__name__)
            else:
                assert isinstance(emitted, BudgetExceeded)
                assert store.get(f"undecided/{emitted.call_id}") is not None  # cleared by its read-back
                core.apply(store, emitted, live=True)
                assert store.get(f"undecided/{emitted.call_id}") is None
                checked.append("BudgetExceeded")
    assert checked == ["BudgetReserved", "BudgetSettled", "BudgetReserved", "BudgetExceeded"]
