"""`agentstream costs | budgets | kill`: what runs cost, tenant budgets, and cost kill switches.

`costs` asks the run API when AGENTSTREAM_API_KEY is set (the key's tenant only); otherwise it
reads the journal directly, as an operator, across tenants. `budgets` and `kill` are operator
commands writing to the control topic, which the cost governor follows within a second.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from agentstream.budgets.controls import KILL_SCOPES, set_kill_switch, set_tenant_budget
from agentstream.cli.api import api_configured, via_api
from agentstream.client.http import RunsClient
from agentstream.client.scan import read_journal
from agentstream.config import Settings
from agentstream.costs import GROUPS, costs_from_journal, group_costs
from agentstream.events import BudgetSettled
from agentstream.settings import CliSettings, load


def add_cost_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    costs = sub.add_parser("costs", help="what runs cost: one run, or grouped by run, tool, model or tenant")
    costs.add_argument("--run", help="one run's cost in detail")
    costs.add_argument("--by", choices=GROUPS, default="run", help="grouping (default: run)")
    costs.add_argument("--tenant", help="only this tenant (journal path only; the API shows the key's tenant)")
    costs.add_argument("--json", action="store_true")
    costs.set_defaults(handler=run_costs_command)

    budgets = sub.add_parser("budgets", help="set a tenant's daily dollar cap and active-run cap")
    budgets.add_argument("tenant")
    budgets.add_argument("--usd-per-day", type=float, default=0.0, help="0: no daily cap")
    budgets.add_argument("--max-active-runs", type=int, default=0, help="0: no cap")
    budgets.set_defaults(handler=run_budgets_command)

    kill = sub.add_parser("kill", help="engage or release a kill switch: runs it covers halt at their next call")
    kill.add_argument("scope", choices=KILL_SCOPES)
    kill.add_argument("target", nargs="?", default="", help="the tenant or run id (none for platform)")
    kill.add_argument("--release", action="store_true", help="release the switch (halted runs may then resume)")
    kill.add_argument("--reason", default="stopped by an operator")
    kill.set_defaults(handler=run_kill_command)


# Grouped by one kind of call, the other kind's cost is in the total but in no row.
UNGROUPED = {"model": "(tool calls, no model)", "tool": "(model calls, no tool)"}


def _print(body: Any, as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    if "data" in body:
        print(f"{'key':<40} {'usd':>14} {'runs':>6} {'calls':>7}")
        for row in body["data"]:
            print(f"{row['key']:<40} {row['usd']:>14.6f} {row['runs']:>6} {row['calls']:>7}")
        # Grouped by model (or tool), the rows hold only model (or tool) calls while the total holds
        # every call: what no row shows gets a line of its own, so the lines add up to the total.
        rest = round(body["total_usd"] - sum(row["usd"] for row in body["data"]), 9)
        if body.get("group_by") in UNGROUPED and abs(rest) >= 5e-7:
            print(f"{UNGROUPED[body['group_by']]:<40} {rest:>14.6f}")
        print(f"{'total':<40} {body['total_usd']:>14.6f}")
    else:
        for key, value in body.items():
            print(f"{key:>20}: {value}")


async def _costs_via_api(client: RunsClient, args: argparse.Namespace) -> int:
    answer = await client.cost(args.run) if args.run else await client.costs(args.by)
    _print(answer.model_dump(mode="json"), args.json)
    return 0


async def run_costs_command(args: argparse.Namespace) -> int:
    if api_configured():
        return await via_api(lambda client: _costs_via_api(client, args))
    journal = await read_journal(Settings.from_env())
    settled = [
        (e.event, e.timestamp_ms) for entries in journal.values() for e in entries if isinstance(e.event, BudgetSettled)
    ]
    costs = costs_from_journal(settled)
    if args.tenant:
        costs = {run: c for run, c in costs.items() if c.tenant_id == args.tenant}
    if args.run:
        found = costs.get(args.run)
        if found is None:
            print(f"no settled cost for run {args.run}", file=sys.stderr)
            return 1
        _print(found.resource(), args.json)
        return 0
    rows = group_costs(costs.values(), args.by)
    _print({"group_by": args.by, "total_usd": round(sum(c.usd for c in costs.values()), 9), "data": rows}, args.json)
    return 0


async def run_budgets_command(args: argparse.Namespace) -> int:
    try:
        event = await set_tenant_budget(
            Settings.from_env(), args.tenant, usd_per_day=args.usd_per_day, max_active_runs=args.max_active_runs,
            set_by=f"cli:{load(CliSettings).user}",
        )  # fmt: skip
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(f"tenant {event.tenant_id}: ${event.usd_per_day:g}/day, {event.max_active_runs} active runs (0 = no cap)")
    return 0


async def run_kill_command(args: argparse.Namespace) -> int:
    try:
        event = await set_kill_switch(
            Settings.from_env(), args.scope, args.target, engaged=not args.release, reason=args.reason,
            set_by=f"cli:{load(CliSettings).user}",
        )  # fmt: skip
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    what = f"{event.scope} {event.target}".strip()
    print(f"kill switch for {what}: {'engaged' if event.engaged else 'released'}")
    return 0
