"""The cost governor as a processor core.

Every model and tool call is reserved here before it may run: the model invoker and the tool
executor perform a call only once its `BudgetReserved` is in the journal. A call that would break
a cap gets a `BudgetExceeded` instead, and the orchestrator halts the run with that reason.

State: one `RunLedger` per run and one `TenantDay` per tenant in each partition's store. A
decision is applied to the state when it is made (so two calls decided back to back both count)
and again, idempotently, when its event is read back, which is how a replay rebuilds the state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from agentstream.blobs.offload import offloaded_bytes
from agentstream.budgets.controls import CostControls
from agentstream.events import (
    TERMINAL_TYPES,
    BudgetExceeded,
    BudgetReserved,
    BudgetSettled,
    Event,
    LlmCallCompleted,
    LlmCallFailed,
    LlmCallRequested,
    ResumeRequested,
    RunEvent,
    RunHalted,
    RunRequested,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.journal_limits import RESPONSE_TOO_LARGE
from agentstream.kafka.core import Outcome
from agentstream.kafka.state import EndedRuns, PartitionStore
from agentstream.pricing import ModelPrice, PriceBook, PriceTable
from agentstream.processors.cost_governor import subagents
from agentstream.processors.cost_governor.ledger import DAY_MS, Reservation, RunLedger, TenantDay, TenantView, check
from agentstream.subagents import SPAWN_AGENT

HANDLED = frozenset(
    {
        "RunRequested", "LlmCallRequested", "LlmCallCompleted", "LlmCallFailed", "ToolCallRequested",
        "ToolCallCompleted", "BudgetReserved", "BudgetSettled", "RunHalted", "ResumeRequested", *TERMINAL_TYPES,
    }
)  # fmt: skip
# Chat templates add a few tokens per message beyond its text.
TEMPLATE_TOKENS_PER_MESSAGE = 16

WorstPrice = Callable[[str, PriceTable], ModelPrice]  # (the requested model, the table) -> the price to reserve at


def reserved_id(call_id: str) -> str:
    return f"{call_id}/reserved"


def settled_id(call_id: str) -> str:
    return f"{call_id}/settled"


def exceeded_id(call_id: str, halt: int) -> str:
    return f"{call_id}/exceeded{halt:02d}"


def requested_price(model: str, table: PriceTable) -> ModelPrice:
    return table.model(model)


# An ended run's ledger is deleted and a marker kept, for the last ENDED_KEEP ended runs of the
# partition: a call request re-emitted after the end must not reserve budget for a run that is
# over. See processors/orchestrator/core.py for why that bound suffices.
ENDED_KEEP = 10_000  # the bound and its reason: agentstream/calls.py CLOSED_KEEP


class CostGovernorCore:
    name = "cost-governor"

    def __init__(
        self,
        prices: PriceBook,
        controls: CostControls,
        clock_ms: Callable[[], int],
        *,
        worst_price: WorstPrice = requested_price,
        bytes_per_token: float = 1.0,
        ended_keep: int = ENDED_KEEP,
    ) -> None:
        self._ended = EndedRuns("ended/", ended_keep)
        self.prices = prices
        self.controls = controls
        self.clock_ms = clock_ms
        self.worst_price = worst_price
        # Tokens are bounded by bytes / bytes_per_token. 1.0 is a true bound for byte-level BPE
        # tokenizers (a token covers at least one byte); larger values reserve less but are a guess.
        self.bytes_per_token = bytes_per_token
        # Every partition store seen, so a tenant's spend is summed over all of this instance's runs.
        self._stores: dict[str, PartitionStore] = {}

    def accepts(self, type_name: str) -> bool:
        return type_name in HANDLED

    def still_wanted(self, store: PartitionStore, key: str) -> bool:
        return True  # starts no side effects

    @staticmethod
    def applied_when_emitted(event: Event) -> bool:
        """A reservation is applied as it is decided, a call's settlement as it is made; a
        child's settlement of its parent's carve and a refusal are applied when read back."""
        return isinstance(event, BudgetReserved) or (isinstance(event, BudgetSettled) and event.kind != subagents.KIND)

    def resume(self, store: PartitionStore) -> Outcome:
        self._stores[str(store.path)] = store
        out = Outcome()
        for key in list(store.keys_with_prefix("undecided/")):
            ask = store.get(key)
            raw = None if ask is None else store.get(f"run/{ask['run_id']}")
            if ask is None or raw is None:
                store.delete(key)
                continue
            run = RunLedger.load(raw)
            if run.halted or run.ended or self._known(store, run, ask["call_id"]):
                store.delete(key)
                continue
            out.emit.append(self._decide_and_apply(store, run, ask))
            self._save(store, run)
        return out

    def apply(self, store: PartitionStore, event: Event, *, live: bool) -> Outcome:
        if not isinstance(event, RunEvent):
            return Outcome()
        self._stores[str(store.path)] = store
        raw = store.get(f"run/{event.run_id}")
        if raw is None and self._ended.ended(store, event.run_id):
            return Outcome()  # over: a re-sent request of it must not open a new ledger or reserve
        run = RunLedger.load(raw) if raw is not None else None
        if isinstance(event, RunRequested):
            if run is None:
                run = RunLedger(
                    event.run_id, event.tenant_id, event.budget_usd, event.budget_tokens, event.budget_wall_s,
                    parent_run_id=event.parent_run_id, parent_call_id=event.parent_call_id,
                )  # fmt: skip
                self._save(store, run)
            return Outcome()
        if run is None:
            # A run requested before the governor existed (or already cleaned up): no run caps,
            # but the tenant's caps and the kill switches still apply to its new calls.
            if event.type_name not in ("LlmCallRequested", "ToolCallRequested"):
                return Outcome()
            run = RunLedger(event.run_id, event.tenant_id)
        emitted: list[RunEvent] = []
        match event:
            case LlmCallRequested() | ToolCallRequested():
                if not run.halted and not run.ended and not self._known(store, run, event.call_id):
                    # Remembered until decided: a request read while recovering is decided in resume().
                    ask = self._ask(event)
                    store.put(f"undecided/{event.call_id}", ask)
                    if live:
                        emitted.append(self._decide_and_apply(store, run, ask))
            case BudgetReserved():
                self._reserve(store, run, event)
                store.delete(f"undecided/{event.call_id}")
            case BudgetExceeded():
                store.delete(f"undecided/{event.call_id}")
            case LlmCallCompleted() | LlmCallFailed() | ToolCallCompleted():
                held = run.reserved.get(event.call_id)  # a child's carve settles at its spend, not here
                if live and held is not None and held.kind != subagents.KIND and _is_final(event):
                    settlement = self._settlement(run, event)
                    self._settle(store, run, settlement)
                    emitted.append(settlement)
            case BudgetSettled():
                self._settle(store, run, event)
            case RunHalted():
                run.halts, run.halted = max(run.halts, event.halt), True
                self._deactivate(store, run)
            case ResumeRequested():
                self._raise(run, event)
            case _ if event.type_name in TERMINAL_TYPES:
                run.ended = True
                self._deactivate(store, run)
        if live and run.ended and not run.reserved and run.parent_call_id:
            emitted.append(subagents.parent_settlement(run))  # the child's ledger closes now: its spend is final
        self._save(store, run, unchanged_from=raw)
        return Outcome(emit=emitted)

    # decisions -----------------------------------------------------------------------------

    def _ask(self, request: LlmCallRequested | ToolCallRequested) -> dict[str, Any]:
        """What a decision needs of a request, small enough to keep until it is decided."""
        ask: dict[str, Any] = {"run_id": request.run_id, "call_id": request.call_id, "step": request.step}
        if isinstance(request, LlmCallRequested):
            prompt_bytes = len(request.messages_json.encode()) + len(request.tools_json.encode())
            # Offloaded tool results reach the provider whole: reserve for what their handles say.
            prompt_bytes += offloaded_bytes(request.messages_json)
            messages = request.messages_json.count('"role"')
            prompt = int(prompt_bytes / self.bytes_per_token) + TEMPLATE_TOKENS_PER_MESSAGE * (messages + 1)
            ask.update(kind="model", tool="", model=request.model, prompt_tokens=prompt, max_tokens=request.max_tokens)
        elif request.tool == SPAWN_AGENT:
            ask.update(kind=subagents.KIND, tool=request.tool, model="", prompt_tokens=0, max_tokens=0,
                       spawn=request.arguments_json)  # fmt: skip
        else:
            ask.update(kind="tool", tool=request.tool, model="", prompt_tokens=0, max_tokens=0)
        return ask

    def _decide_and_apply(self, store: PartitionStore, run: RunLedger, ask: dict[str, Any]) -> RunEvent:
        decision = self._decide(run, ask)
        if isinstance(decision, BudgetReserved):
            self._reserve(store, run, decision)
            store.delete(f"undecided/{ask['call_id']}")
        return decision

    def _decide(self, run: RunLedger, ask: dict[str, Any]) -> BudgetReserved | BudgetExceeded:
        now = self.clock_ms()
        table = self.prices.current
        kind, tool, call_id, step = ask["kind"], ask["tool"], ask["call_id"], ask["step"]
        if kind == "model":
            need_tokens = ask["prompt_tokens"] + ask["max_tokens"]
            need_usd = self.worst_price(ask["model"], table).worst_case(ask["prompt_tokens"], ask["max_tokens"])
        elif kind == subagents.KIND:
            need_usd, need_tokens = subagents.need(run, ask.get("spawn", ""))
        else:
            need_tokens, need_usd = 0, table.tool(tool)
        view = self._tenant_view(run, now)
        refusal = check(run, view, need_usd, need_tokens, now)
        if refusal is not None:
            evidence = {**refusal.evidence, "kind": kind, "tool": tool, "price_version": table.version}
            return BudgetExceeded(
                event_id=exceeded_id(call_id, run.halts + 1), run_id=run.run_id, tenant_id=run.tenant_id,
                step=step, call_id=call_id, kind=kind, limit=refusal.limit, reason=refusal.reason,
                resumable=refusal.resumable, evidence_json=orjson.dumps(evidence).decode(), decided_ms=now,
            )  # fmt: skip
        return BudgetReserved(
            event_id=reserved_id(call_id), run_id=run.run_id, tenant_id=run.tenant_id, step=step,
            call_id=call_id, kind=kind, tool=tool, reserved_usd=need_usd, reserved_tokens=need_tokens,
            committed_usd=run.committed_usd + need_usd, tenant_committed_usd=view.committed_usd + need_usd,
            price_version=table.version, decided_ms=now,
        )  # fmt: skip

    def _settlement(
        self, run: RunLedger, result: LlmCallCompleted | LlmCallFailed | ToolCallCompleted
    ) -> BudgetSettled:
        held = run.reserved[result.call_id]
        table = self.prices.get(held.price_version)
        model, tokens = "", (0, 0, 0)
        if isinstance(result, LlmCallCompleted):
            model = result.model
            tokens = (result.input_tokens, result.cached_input_tokens, result.output_tokens)
            cost = table.model(model).cost(*tokens)
        elif isinstance(result, ToolCallCompleted):
            cost = 0.0 if result.is_error else held.usd
        elif result.error_type == RESPONSE_TOO_LARGE:
            # The provider generated (and bills) an answer the journal could not hold: charged at
            # what was reserved, the worst case the run agreed to, as its tokens are unknown.
            cost = held.usd
        else:
            cost = 0.0  # a model call that failed for good returned nothing billable
        return BudgetSettled(
            event_id=settled_id(result.call_id), run_id=run.run_id, tenant_id=run.tenant_id, step=held.step,
            call_id=result.call_id, kind=held.kind, tool=held.tool, model=model, cost_usd=cost,
            input_tokens=tokens[0], cached_input_tokens=tokens[1], output_tokens=tokens[2],
            released_usd=held.usd - cost, price_version=held.price_version,
        )  # fmt: skip

    def _tenant_view(self, run: RunLedger, now_ms: int) -> TenantView:
        day = now_ms // DAY_MS
        committed, active = 0.0, 0
        for store in self._stores.values():
            if store.closed:  # a partition given up (or being reopened): its share is no longer ours
                continue
            share = TenantDay.load(store.get(f"tenant/{run.tenant_id}"))
            committed += share.reserved_usd + (share.spent_usd if share.day >= day else 0.0)
            active += share.active
        budget = self.controls.budget(run.tenant_id)
        kill = self.controls.kill_for(run.tenant_id, run.run_id)
        killed_by = (
            None if kill is None else f"{kill.scope} {kill.target or 'platform'} ({kill.reason}, by {kill.set_by})"
        )
        return TenantView(committed, active, budget.usd_per_day, budget.max_active_runs, killed_by)

    # evolution (idempotent: applied when decided and again when read back) -------------------

    @staticmethod
    def _known(store: PartitionStore, run: RunLedger, call_id: str) -> bool:
        return call_id in run.reserved or store.get(f"settled/{call_id}") is not None

    def _reserve(self, store: PartitionStore, run: RunLedger, event: BudgetReserved) -> None:
        if self._known(store, run, event.call_id):
            return
        run.reserved[event.call_id] = Reservation(
            event.kind, event.reserved_usd, event.reserved_tokens, event.tool, event.step, event.price_version
        )
        run.started_ms = run.started_ms or event.decided_ms
        tenant = self._tenant(store, run.tenant_id)
        tenant.roll(event.decided_ms // DAY_MS)
        if event.kind != subagents.KIND:  # a child's carve: the child's own calls count for the tenant
            tenant.reserved_usd += event.reserved_usd
        if not run.active and not run.ended:
            run.active = True
            tenant.active += 1
        store.put(f"tenant/{run.tenant_id}", tenant.dump())

    def _settle(self, store: PartitionStore, run: RunLedger, event: BudgetSettled) -> None:
        held = run.reserved.pop(event.call_id, None)
        if held is None:
            return
        store.put(f"settled/{event.call_id}", 1)
        run.spent_usd += event.cost_usd
        run.spent_tokens += event.input_tokens + event.output_tokens
        if held.kind == subagents.KIND:
            return  # the child's own settlements counted for the tenant already
        tenant = self._tenant(store, run.tenant_id)
        tenant.reserved_usd = max(0.0, tenant.reserved_usd - held.usd)
        tenant.spent_usd += event.cost_usd
        store.put(f"tenant/{run.tenant_id}", tenant.dump())

    def _deactivate(self, store: PartitionStore, run: RunLedger) -> None:
        if run.active:
            run.active = False
            tenant = self._tenant(store, run.tenant_id)
            tenant.active = max(0, tenant.active - 1)
            store.put(f"tenant/{run.tenant_id}", tenant.dump())

    @staticmethod
    def _raise(run: RunLedger, event: ResumeRequested) -> None:
        # Only the resume of the current halt counts, once; an uncapped budget stays uncapped.
        if not run.halted or event.halt != run.halts or run.resumed >= event.halt:
            return
        run.resumed, run.halted = event.halt, False
        if run.budget_usd:
            run.budget_usd += max(0.0, event.add_usd)
        if run.budget_tokens:
            run.budget_tokens += max(0, event.add_tokens)
        if run.budget_wall_s:
            run.budget_wall_s += max(0.0, event.add_wall_s)

    @staticmethod
    def _tenant(store: PartitionStore, tenant_id: str) -> TenantDay:
        return TenantDay.load(store.get(f"tenant/{tenant_id}"))

    def _save(self, store: PartitionStore, run: RunLedger, unchanged_from: Any = None) -> None:
        """Writes the run's ledger, unless it equals `unchanged_from` (what was read): every write
        is also a changelog record, and most events leave a run's ledger as it was."""
        if run.ended and not run.reserved:
            # Nothing can change an ended run's spend any more; its record is the journal's.
            store.delete(f"run/{run.run_id}")
            self._ended.mark(store, run.run_id)
            for prefix in (f"settled/{run.run_id}/", f"undecided/{run.run_id}/"):
                for key in list(store.keys_with_prefix(prefix)):
                    store.delete(key)
        else:
            dumped = run.dump()
            if unchanged_from is None or dumped != unchanged_from:
                store.put(f"run/{run.run_id}", dumped)


def _is_final(event: LlmCallCompleted | LlmCallFailed | ToolCallCompleted) -> bool:
    return not isinstance(event, LlmCallFailed) or event.final
