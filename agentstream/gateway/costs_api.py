"""The costs API: what a tenant's runs cost, per run or grouped by run, tool or model."""

from __future__ import annotations

from starlette.responses import Response

from agentstream.contract.queries import ListCostsQuery
from agentstream.contract.resources import BudgetCaps, CostReport, CostRow, RunCost
from agentstream.costs import group_costs
from agentstream.gateway.errors import ApiError, model_response
from agentstream.gateway.projection import RunIndex


async def run_cost(index: RunIndex, run_id: str, tenant_id: str) -> Response:
    view = await index.find(tenant_id, run_id)
    if view is None or view.cost is None:
        raise ApiError(404, "not_found", "run not found")
    body = RunCost(**view.cost.resource(), status=view.public_status, budget=BudgetCaps(**view.budget))
    return model_response(body)


def tenant_costs(index: RunIndex, tenant_id: str, query: ListCostsQuery) -> Response:
    since_ms = query.since_ms
    costs = [
        v.cost for v in index.runs.values() if v.tenant_id == tenant_id and v.cost is not None and v.created_ms >= since_ms
    ]  # fmt: skip
    rows = [CostRow(**row) for row in group_costs(costs, query.group_by)]
    total = round(sum(c.usd for c in costs), 9)
    return model_response(CostReport(group_by=query.group_by, since_ms=since_ms, total_usd=total, data=rows))
