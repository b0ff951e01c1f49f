"""`agentstream mine`: flagged trajectories clustered by failure signature, the top clusters with
example runs, and one cluster exported as regression cases (`--export K --out FILE`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import orjson

from agentstream.cli.args import since_ms
from agentstream.client.scan import read_journal
from agentstream.config import Settings
from agentstream.mining.cases import export_cases, write_cases
from agentstream.mining.signature import cluster_runs


def add_mine_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mine = sub.add_parser(
        "mine", help="cluster flagged trajectories by failure signature; export one as regression cases"
    )
    mine.add_argument("--since", type=since_ms, default=None, help="only runs journaled since (ISO 8601, ms, 2h)")
    mine.add_argument("--tenant", default="", help="only this tenant's runs")
    mine.add_argument("--top", type=int, default=10, help="clusters shown (default 10)")
    mine.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    mine.add_argument("--export", type=int, metavar="K", help="write cluster K (1 = the largest) as regression cases")
    mine.add_argument("--out", type=Path, help="the case file --export writes")
    mine.set_defaults(handler=run_mine_command)


async def run_mine_command(args: argparse.Namespace) -> int:
    return await mine_command(Settings.from_env(), args)


async def mine_command(settings: Settings, args: argparse.Namespace) -> int:
    if (args.export is None) != (args.out is None):
        print("agentstream mine: --export K and --out FILE go together", file=sys.stderr)
        return 2
    entries = await read_journal(settings, since_ms=args.since)
    runs = {
        run_id: [e.event for e in es]
        for run_id, es in entries.items()
        if es and (not args.tenant or es[0].event.tenant_id == args.tenant)
    }
    clusters, flagged = cluster_runs(runs)
    if args.export is not None:
        if not 1 <= args.export <= len(clusters):
            print(f"agentstream mine: no cluster {args.export} ({len(clusters)} found)", file=sys.stderr)
            return 2
        chosen = clusters[args.export - 1]
        write_cases(args.out, export_cases(chosen, runs))
        print(f"wrote {len(chosen.runs)} regression cases of {chosen.signature.text!r} to {args.out}")
        return 0
    shown = [c.describe(flagged) for c in clusters[: max(0, args.top)]]
    if args.json:
        print(orjson.dumps({"runs": len(runs), "flagged": flagged, "clusters": shown}).decode())
        return 0
    print(f"{len(runs)} runs, {flagged} flagged, {len(clusters)} failure signatures")
    for k, c in enumerate(shown, 1):
        print(f"{k:>3}. {c['runs']:>6} runs ({c['share_of_flagged']:.1%}) {c['signature']}")
        print(f"       patterns: {'; '.join(c['patterns'])}")  # type: ignore[arg-type]
        print(f"       e.g. {', '.join(c['examples'])}")  # type: ignore[arg-type]
    return 0
