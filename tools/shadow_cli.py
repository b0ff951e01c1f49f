"""`agentstream shadow --candidate VERSION`: recorded runs replayed against a candidate orchestrator
version, with model outputs, tool results and human inputs pinned, reported per run and in all."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

from agentstream.cli.args import since_ms
from agentstream.config import Settings
from agentstream.settings import OrchestratorSettings, load


def add_shadow_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "shadow",
        help="replay recorded runs against a candidate orchestrator version and report where they diverge",
        epilog="exit 0: every run identical; 1: some diverged or could not be replayed; 2: bad arguments",
    )
    p.add_argument(
        "--candidate", required=True,
        help="a version this orchestrator knows (AGENTSTREAM_ORCHESTRATOR_VERSIONS), or module:attribute",
    )  # fmt: skip
    p.add_argument("--runs", type=_positive, default=None, help="only the last N runs started")
    p.add_argument("--since", type=since_ms, default=None,
                   help="only runs started since: ISO 8601 time, epoch ms, or an age (30m, 2h, 7d)")  # fmt: skip
    p.add_argument("--tenant", default=None, help="only this tenant's runs")
    p.add_argument("--cases", type=Path, default=None,
                   help="replay the runs of a regression case file (agentstream mine --export) instead of the journal")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the whole report as JSON instead of the table")
    p.add_argument(
        "--out", type=Path, default=None, help="the report file (default: <home>/shadow/<candidate>-<time>.json)"
    )
    p.set_defaults(handler=shadow_command)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


async def shadow_command(args: argparse.Namespace) -> int:
    # Imported here: the orchestrator's cores and the Kafka reader are this command's alone, and
    # every other command would pay for importing them at start.
    from agentstream.mining.cases import CaseFileError, load_cases
    from agentstream.processors.orchestrator.versions import VersionError, build_registry, resolve_version
    from agentstream.tools.shadow_batch import render_table, replay_all, report_json
    from agentstream.tools.shadow_read import RecordedRun, Selection, read_recorded_runs

    settings = Settings.from_env()
    chosen = load(OrchestratorSettings)
    try:
        candidate = resolve_version(build_registry(chosen.version, chosen.versions), args.candidate)
    except VersionError as exc:
        print(f"agentstream shadow: {exc}")
        return 2
    if args.cases is not None:
        try:
            runs = [RecordedRun(c.run_id, c.events) for c in load_cases(args.cases)]
        except CaseFileError as exc:
            print(f"agentstream shadow: {exc}")
            return 2
    else:
        runs = await read_recorded_runs(settings, Selection(args.runs, args.since, args.tenant))
    t0 = time.perf_counter()
    reports = replay_all(runs, candidate)
    report = report_json(reports, candidate.name, time.perf_counter() - t0)
    out = args.out or settings.home / "shadow" / f"{_safe(candidate.name)}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_table(report))
        print(f"\nreport: {out}")
    summary = report["summary"]
    return 0 if summary["identical"] == summary["runs"] else 1


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
