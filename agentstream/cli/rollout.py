"""`agentstream rollout start|promote|rollback|status`: a candidate orchestrator version rolled out
ring by ring (internal tenants, read-only runs, runs with nothing irreversible, every run)."""

from __future__ import annotations

import argparse
import sys

from agentstream.config import Settings
from agentstream.rollout.admin import RolloutError, describe, promote, read_rollout, roll_back, start_rollout


def add_rollout_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("rollout", help="canary rings for an orchestrator version: start, promote, roll back")
    rsub = r.add_subparsers(dest="rollout_command", required=True)
    start = rsub.add_parser("start", help="new runs of internal tenants start on the candidate (ring 1)")
    start.add_argument("candidate", help="a version every orchestrator knows (AGENTSTREAM_ORCHESTRATOR_VERSIONS)")
    start.add_argument("--baseline", default="v1", help="what the other runs start on (default v1)")
    start.add_argument("--internal-tenant", action="append", default=[], help="ring 1 (repeatable)")
    rsub.add_parser("promote", help="the next ring (after ring 4: promoted for good)")
    back = rsub.add_parser("rollback", help="new runs back on the baseline; started runs keep their version")
    back.add_argument("--reason", default="rolled back by an operator")
    rsub.add_parser("status", help="the rollout in force")
    r.set_defaults(handler=run_rollout_command)


async def run_rollout_command(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    try:
        match args.rollout_command:
            case "start":
                print(
                    describe(await start_rollout(settings, args.candidate, args.baseline, args.internal_tenant, "cli"))
                )
            case "promote":
                print(describe(await promote(settings, "cli")))
            case "rollback":
                rolled = await roll_back(settings, args.reason, "cli")
                print(describe(rolled) if rolled is not None else "nothing to roll back")
            case "status":
                print(describe(await read_rollout(settings)))
    except RolloutError as exc:
        print(f"agentstream rollout: {exc}", file=sys.stderr)
        return 2
    return 0
