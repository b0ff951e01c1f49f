"""`agentstream quarantine ...`: a tool's output declared poisoned since a time, and lifting it.

`quarantine tool NAME --since T --reason R` disables the tool, halts every live run that consumed
its output since T (a run kill switch each), flags every such run (ended ones included) with a
`RunFlagged` of kind "quarantine", and records the quarantine; `list` and `show` read the records;
`release ID` lifts the runs' switches (they can then be resumed) and, with `--enable-tool`, the
tool's. A refused request is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import orjson

from agentstream.cli.args import since_ms
from agentstream.config import Settings
from agentstream.events import ToolQuarantined
from agentstream.quarantine.actions import quarantine_tool, release_quarantine
from agentstream.quarantine.book import QuarantineError, read_quarantines
from agentstream.registry.admin import RegistryError


def add_quarantine_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = sub.add_parser("quarantine", help="quarantine a tool's poisoned output: halt or flag every run that read it")
    qsub = q.add_subparsers(dest="quarantine_command", required=True)
    tool = qsub.add_parser("tool", help="disable a tool and halt (live) or flag (ended) the runs that consumed it")
    tool.add_argument("name")
    tool.add_argument("--owner", default="", help="the tool's owner tenant (default: the platform's tool)")
    tool.add_argument("--since", required=True, type=since_ms,
                      help="its output is poisoned from here on: ISO 8601, epoch ms, or a span ago (2h)")  # fmt: skip
    tool.add_argument("--reason", required=True, help="shown on every run it flags")
    tool.add_argument("--id", default="", help="the quarantine's id (default: <tool>-<now ms>)")
    tool.add_argument("--json", action="store_true")
    qsub.add_parser("list", help="every quarantine on record")
    show = qsub.add_parser("show", help="one quarantine and the runs it halted and flagged")
    show.add_argument("quarantine_id")
    release = qsub.add_parser("release", help="lift a quarantine's run switches (halted runs may then resume)")
    release.add_argument("quarantine_id")
    release.add_argument("--enable-tool", action="store_true", help="also re-enable the tool")
    q.set_defaults(handler=run_quarantine_command)


async def run_quarantine_command(args: argparse.Namespace) -> int:
    return await quarantine_command(Settings.from_env(), args)


def _describe(q: ToolQuarantined) -> dict[str, object]:
    return {
        "quarantine_id": q.quarantine_id, "tool": q.tool, "owner": q.owner or "platform",
        "since": datetime.fromtimestamp(q.since_ms / 1000, UTC).isoformat(), "reason": q.reason,
        "halted_runs": q.halted_runs, "flagged_runs": q.flagged_runs,
        "state": "released" if q.released else "engaged", "set_by": q.set_by,
    }  # fmt: skip


async def quarantine_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        match args.quarantine_command:
            case "tool":
                record = await quarantine_tool(settings, args.owner, args.name, args.since, reason=args.reason,
                                               by="cli", quarantine_id=args.id)  # fmt: skip
                if args.json:
                    print(orjson.dumps(_describe(record)).decode())
                else:
                    print(f"quarantine {record.quarantine_id}: {args.name} disabled; "
                          f"{len(record.halted_runs)} live runs halted, {len(record.flagged_runs)} ended runs flagged")  # fmt: skip
                    for run_id in record.halted_runs:
                        print(f"  halted   {run_id}")
                    for run_id in record.flagged_runs:
                        print(f"  flagged  {run_id}")
            case "list":
                for q in sorted((await read_quarantines(settings)).values(), key=lambda q: q.set_ms):
                    d = _describe(q)
                    print(f"{q.quarantine_id:<32} {d['state']:<9} {q.tool:<20} since {d['since']}  "
                          f"{len(q.halted_runs)} halted, {len(q.flagged_runs)} flagged  {q.reason}")  # fmt: skip
            case "show":
                held = (await read_quarantines(settings)).get(args.quarantine_id)
                if held is None:
                    raise QuarantineError(f"no quarantine {args.quarantine_id!r}")
                print(orjson.dumps(_describe(held), option=orjson.OPT_INDENT_2).decode())
            case "release":
                record = await release_quarantine(settings, args.quarantine_id, by="cli", enable_tool=args.enable_tool)
                print(f"quarantine {record.quarantine_id} released: {len(record.halted_runs)} runs may be resumed"
                      + ("; tool re-enabled" if args.enable_tool else f"; {record.tool} stays disabled"))  # fmt: skip
    except (QuarantineError, RegistryError) as exc:
        print(f"agentstream quarantine: {exc}", file=sys.stderr)
        return 2
    return 0
