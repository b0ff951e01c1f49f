"""The costs API: what a tenant's runs cost, per run or grouped by run, tool or model."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentstream.costs import RunCost, group_costs
from agentstream.gateway.errors import ApiError
from agentstream.gateway.projection import RunIndex

COST_GROUPS = ["run", "tool", "model"]  # a tenant sees its own spend only, so no "tenant" grouping


async def run_cost(index: RunIndex, run_id: str, tenant_id: str) -> Response:
    view = await index.find(tenant_id, run_id)
    if view is None or view.cost is None:
        raise ApiError(404, "not_found", "run not found")
    return JSONResponse({**view.cost.resource(), "status": view.public_status, "budget": view.budget})


def tenant_costs(index: RunIndex, request: Request, tenant_id: str, since_ms: int) -> Response:
    group_by = request.query_params.get("group_by", "run")
    if group_by not in COST_GROUPS:
        raise ApiError(400, "invalid_parameter", f"group_by must be one of: {', '.join(COST_GROUPS)}", field="group_by")
    costs: list[RunCost] = [
        v.cost for v in index.runs.values() if v.tenant_id == tenant_id and v.cost is not None and v.created_ms >= since_ms
    ]  # fmt: skip
    rows = group_costs(costs, group_by)
    total = round(sum(c.usd for c in costs), 9)
    return JSONResponse({"group_by": group_by, "since_ms": since_ms, "total_usd": total, "data": rows})
