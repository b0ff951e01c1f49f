"""Step checks against a labelled set of trajectories, run through the whole stack.

    .venv/bin/python bench/eval.py               # runs bench/eval_set/trajectories.json
    .venv/bin/python bench/eval.py --regenerate  # rewrites the set (bench/eval_cases.py, seeded)

Every trajectory is a scripted-model scenario played over the provider wire protocol to the real
processors on a local broker, with the real built-in tools and the reference MCP time server. Half
are clean, half broken with a correct-looking final answer (bench/eval_cases.KINDS). A trajectory
is flagged when its journal holds an `EvalVerdict`; the step checks alone decide, with the
bench tenant's evaluation policy (bench/eval_cases.POLICY). The last line is one JSON object:
`{trajectories, broken, flagged_broken, false_positives, by_kind, ...}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream.client.journal import RunRequest
from agentstream.client.scan import read_journal
from agentstream.events import TERMINAL_TYPES, EvalVerdict
from agentstream.mining.cases import export_examples, write_cases
from agentstream.mining.signature import cluster_runs
from agentstream.stack import PAYMENTS_AUTO_APPROVED, Deployment
from bench.common import bench_settings
from bench.eval_cases import KINDS, POLICY, TOOLS, build
from bench.scenarios import write_scenarios
from bench.watch import TerminalWatcher

SET = Path(__file__).resolve().parent / "eval_set" / "trajectories.json"


def regenerate(path: Path, total: int) -> None:
    cases = build(total)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"policy": POLICY, "trajectories": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} trajectories to {path}", file=sys.stderr)


def score(cases: list[dict[str, Any]], verdicts: dict[str, list[EvalVerdict]], ended: set[str]) -> dict[str, Any]:
    by_kind: dict[str, dict[str, int]] = {kind: {"n": 0, "flagged": 0} for kind in ("clean", *KINDS)}
    checks: Counter[str] = Counter()
    for case in cases:
        found = verdicts.get(case["name"], [])
        row = by_kind[case["label"]]
        row["n"] += 1
        row["flagged"] += bool(found)
        checks.update(f"{case['label']}:{v.check_name}" for v in found)
    clean = by_kind.pop("clean")
    broken = sum(r["n"] for r in by_kind.values())
    flagged = sum(r["flagged"] for r in by_kind.values())
    return {
        "trajectories": len(cases),
        "broken": broken,
        "flagged_broken": flagged,
        "flagged_broken_pct": round(100.0 * flagged / max(1, broken), 1),
        "false_positives": clean["flagged"],
        "false_positive_pct": round(100.0 * clean["flagged"] / max(1, clean["n"]), 1),
        "by_kind": by_kind,
        "verdicts_by_label_and_check": dict(sorted(checks.items())),
        "ended": len(ended),
    }


async def run(
    cases: list[dict[str, Any]], policy: dict[str, Any], wait_s: float, export: Path | None = None
) -> dict[str, Any]:
    async with bench_settings("eval") as (settings, _kafka):
        scen_dir = settings.home / "scenarios"
        write_scenarios(scen_dir, [{"name": c["name"], "turns": c["turns"]} for c in cases])
        tenant = replace(PAYMENTS_AUTO_APPROVED, eval_json=json.dumps(policy))
        watcher = TerminalWatcher(settings, ends=TERMINAL_TYPES | {"RunHalted"})
        async with Deployment(
            settings, [scen_dir], wait_tools=tuple(TOOLS), policies={"default": tenant}, wait_tools_s=180
        ) as d:
            t0 = time.monotonic()
            names: dict[str, str] = {}
            for case in cases:
                run_id = await d.client.request_run(RunRequest(task=case["task"], tools=list(TOOLS), max_steps=12))
                names[run_id] = case["name"]
            missing = await watcher.wait(set(names), wait_s)
            wall = time.monotonic() - t0
        watcher.close()
        journal = await read_journal(settings)
    verdicts: dict[str, list[EvalVerdict]] = {}
    outcomes: Counter[str] = Counter()
    for run_id, name in names.items():
        entries = journal.get(run_id, [])
        verdicts[name] = [e.event for e in entries if isinstance(e.event, EvalVerdict)]
        outcomes.update(e.event.type_name for e in entries if e.event.type_name in TERMINAL_TYPES | {"RunHalted"})
    result = score(cases, verdicts, set(names) - set(missing))
    if export is not None:
        recorded = {run_id: [e.event for e in journal.get(run_id, [])] for run_id in names}
        clusters, _flagged = cluster_runs(recorded)
        write_cases(export, export_examples(clusters, recorded, per_cluster=1))
    result.update(outcomes=dict(outcomes), wall_s=round(wall, 1))
    for case in cases:
        for v in verdicts[case["name"]]:
            print(
                f"{case['name']} {case['label']:<20} {v.check_name:<12} {v.reason[:60]} {v.evidence_json[:140]}",
                file=sys.stderr,
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help="rewrite the labelled set, then stop")
    parser.add_argument("--set", type=Path, default=SET)
    parser.add_argument("--total", type=int, default=200, help="trajectories written by --regenerate")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--export-cases", type=Path, metavar="FILE",
                        help="also write one run of each failure signature found as regression cases")  # fmt: skip
    args = parser.parse_args()
    if args.regenerate:
        regenerate(args.set, args.total)
        return
    data = json.loads(args.set.read_text())
    result = asyncio.run(run(data["trajectories"], data["policy"], args.timeout, args.export_cases))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
