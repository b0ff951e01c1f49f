"""A subagent's budget, carved out of its parent's (processors/orchestrator/subagents.py).

The parent's `spawn_agent` request is reserved on the parent's ledger like any call, at the
child's whole budget (kind "subagent"); the orchestrator starts the child with exactly what was
reserved, so the child's own ledger caps it there. A parent that cannot afford it gets a
`BudgetExceeded`, which its orchestrator folds as the call's error observation. When the child's
ledger closes (its end read, every call of it settled), the child's governor settles the parent's
reservation at the child's actual spend, with a `BudgetSettled` on the parent's key: the parent's
spent + reserved never exceeds its cap, whatever its children do, as every ledger's never does.

The reservation is the parent's, not the tenant's: the child's own calls reserve and settle on the
tenant's day as every run's do, so counting the carve as well would count the child twice.
"""

from __future__ import annotations

from agentstream.events import BudgetSettled
from agentstream.processors.cost_governor.ledger import RunLedger
from agentstream.subagents import SpawnArgs

KIND = "subagent"
# A capped parent always starts a capped child (0 would read as "no cap"): at least this much,
# which a parent with nothing left cannot afford, so it is refused rather than started unbounded.
MIN_USD = 1e-9
MIN_TOKENS = 1


def need(run: RunLedger, arguments_json: str) -> tuple[float, int]:
    """What to reserve for the child: what the spawn asked for, or, not given, half of what the
    parent has left (so the parent keeps some for its own calls, and a later child some too);
    nothing for a dimension the parent has no cap in and the spawn named no budget for."""
    args = SpawnArgs.parse(arguments_json)
    usd, tokens = args.budget_usd, args.budget_tokens
    if run.budget_usd:
        usd = max(MIN_USD, usd or (run.budget_usd - run.committed_usd) / 2)
    if run.budget_tokens:
        tokens = max(MIN_TOKENS, tokens or (run.budget_tokens - run.committed_tokens) // 2)
    return usd, tokens


def parent_settlement(child: RunLedger) -> BudgetSettled:
    """The parent's reservation for `child`, settled at what the child spent (its ledger closed)."""
    from agentstream.processors.cost_governor.core import settled_id  # the one id scheme; core imports us

    return BudgetSettled(
        event_id=settled_id(child.parent_call_id), run_id=child.parent_run_id, tenant_id=child.tenant_id, step=0,
        call_id=child.parent_call_id, kind=KIND, tool="spawn_agent", model="", cost_usd=child.spent_usd,
        input_tokens=child.spent_tokens, cached_input_tokens=0, output_tokens=0,
        released_usd=max(0.0, child.budget_usd - child.spent_usd), price_version="",
    )  # fmt: skip
