"""pass^k of a scenario set through the real stack: each task run k times (or --trials n >= k),
success = completed, the expected answer, and no failed step check (the procedure counts). The scripted model is deterministic, so the harness stands in for a sampling model by
drawing each trial's variant (seeded, by weight) from the set (bench/passk_set.json).

    .venv/bin/python bench/passk.py --k 5 [--trials 8] [--seed 7] [--set bench/passk_set.json]

The last line is JSON: tasks, k, trials, pass_at_1, pass_hat_k, answer_only_pass_at_1, by_task."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream.client.journal import RunRequest
from agentstream.client.scan import read_journal
from agentstream.mining.passk import Trial, judge_trial, report
from agentstream.stack import Deployment
from bench.common import bench_settings
from bench.scenarios import write_scenarios
from bench.watch import TerminalWatcher

SET = Path(__file__).with_name("passk_set.json")


def draws(tasks: list[dict[str, Any]], trials: int, seed: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    rng = random.Random(seed)
    out = []
    for task in tasks:
        variants = task["variants"]
        for _ in range(trials):
            out.append((task, rng.choices(variants, weights=[v["weight"] for v in variants])[0]))
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tasks = json.loads(Path(args.set).read_text())["tasks"]
    planned = draws(tasks, args.trials or args.k, args.seed)
    async with bench_settings("passk") as (settings, _kafka):
        scen_dir = settings.home / "scenarios"
        write_scenarios(scen_dir, [{"name": f"{t['name']}-{v['name']}", "turns": v["turns"]} for t in tasks
                                   for v in t["variants"]])  # fmt: skip
        watcher = TerminalWatcher(settings)
        async with Deployment(settings, [scen_dir]) as d:
            started: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
            for task, variant in planned:
                request = RunRequest(task=f"[scenario:{task['name']}-{variant['name']}] {task['task']}",
                                     tools=task["tools"], max_steps=8)  # fmt: skip
                started[await d.client.request_run(request)] = (task, variant)
            missing = await watcher.wait(set(started), args.timeout)
            watcher.close()
            journal = await read_journal(settings)
    trials: list[Trial] = []
    for run_id, (task, variant) in started.items():
        events = [e.event for e in journal.get(run_id, [])]
        trials.append(judge_trial(task["name"], variant["name"], events, task["expect"]))
    out = report(trials, args.k)
    out["not_ended"] = len(missing)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--trials", type=int, default=0, help="trials per task (default k; at least k)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--set", default=str(SET))
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.trials and args.trials < args.k:
        sys.exit("--trials must be at least --k")
    result = asyncio.run(main(args))
    print(json.dumps(result))
