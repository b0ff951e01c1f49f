"""Crash survival: concurrent multi-step runs while processors are SIGKILLed and restarted.

    .venv/bin/python bench/chaos.py --runs 100 --kills 20

Each processor is its own OS process. A killer SIGKILLs a random processor at random moments and
restarts it; on top of that the tool executor and model invoker kill themselves, with a small
probability, right after a side effect or a model reply and before its result is journaled (the
narrowest crash window). The last line printed is one JSON object.

  lost                    runs with no terminal event when the deadline passed
  duplicate_side_effects  transfers applied more than once for one logical call, or applied for a
                          call the journal never requested
  model_calls_resent      requests the model server received for a call whose completion was
                          already in the journal at that moment
  trajectories_differing  runs whose trajectory differs from a crash-free run of the same scenario
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from agentstream.client.journal import RunRequest
from agentstream.client.scan import read_journal
from agentstream.events import LlmCallCompleted, ToolCallRequested
from agentstream.stack import Deployment
from agentstream.trajectory import summarize
from bench.common import bench_settings, comparable_trajectory
from bench.scenarios import chaos_scenario, write_scenarios
from bench.watch import TerminalWatcher
from processors.tool_executor.builtin import bank_stats, bank_transfers

TOOLS = ["calculator", "lookup", "transfer_funds", "convert_time"]


async def submit(deployment: Deployment, scenarios: int, runs: int, steps: int, tag: str) -> dict[str, int]:
    run_scenario: dict[str, int] = {}
    for i in range(runs):
        k = i % scenarios
        run_id = await deployment.client.request_run(
            RunRequest(task=f"[scenario:chaos{k}] {tag} run {i}", tools=TOOLS, max_steps=steps + 5)
        )
        run_scenario[run_id] = k
    return run_scenario


async def killer(deployment: Deployment, kills: int, rng: random.Random, stop: asyncio.Event, log: list[str]) -> None:
    assert deployment.procs is not None
    procs = deployment.procs
    done = 0
    while not stop.is_set():
        for key in procs.crashed():  # self-inflicted crashes at the injected crash points
            log.append(f"{time.monotonic():.2f} {key} crashed itself; restarting")
            procs.restart(key)
        if done < kills:
            await asyncio.sleep(rng.uniform(0.4, 2.0))
            if stop.is_set():
                break
            key = rng.choice(sorted(procs.procs))
            procs.kill(key, signal.SIGKILL)
            done += 1
            log.append(f"{time.monotonic():.2f} SIGKILL {key} ({done}/{kills})")
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            procs.restart(key)
        else:
            await asyncio.sleep(0.2)


def report_first_difference(run_id: str, reference: list[tuple[str, ...]], observed: list[tuple[str, ...]]) -> None:
    """Print where the first differing run parts from its reference, so a failure can be read."""
    for index, (want, got) in enumerate(zip(reference, observed, strict=False)):
        if want != got:
            print(f"{run_id} differs at item {index}:\n  reference {want}\n  observed  {got}", file=sys.stderr)
            return
    print(f"{run_id}: {len(observed)} items against {len(reference)} in its reference", file=sys.stderr)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=8, help="tool steps per run (model calls = steps + 1)")
    parser.add_argument("--scenarios", type=int, default=10)
    parser.add_argument("--effect-crash-rate", type=float, default=0.01)
    parser.add_argument("--reply-crash-rate", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    t_start = time.monotonic()
    async with bench_settings("chaos") as (settings, _kafka):
        scen_dir = settings.home / "scenarios"
        write_scenarios(scen_dir, [chaos_scenario(k, args.steps) for k in range(args.scenarios)])
        watcher = TerminalWatcher(settings)
        try:
            print(f"reference: {args.scenarios} crash-free runs", file=sys.stderr)
            # Every tool the scenarios call must be registered before the first run starts: a run
            # pins the tools it may use when it starts, and an unknown one fails it.
            async with Deployment(settings, [scen_dir], wait_tools=tuple(TOOLS)) as calm:
                reference_runs = await submit(calm, args.scenarios, args.scenarios, args.steps, "reference")
                assert not await watcher.wait(set(reference_runs), args.timeout), "reference runs did not finish"

            chaos_env = {
                "AGENTSTREAM_CHAOS": f"tool_after_effect={args.effect_crash_rate},model_after_reply={args.reply_crash_rate}"
            }
            log: list[str] = []
            async with Deployment(settings, [scen_dir], extra_env=chaos_env, wait_tools=tuple(TOOLS)) as chaotic:
                async with httpx.AsyncClient() as http:
                    await http.post(f"{chaotic.model_url}/_scripted/reset")
                print(f"chaos: {args.runs} concurrent runs, {args.kills} SIGKILLs", file=sys.stderr)
                t_chaos = time.monotonic()
                stop = asyncio.Event()
                kill_task = asyncio.create_task(killer(chaotic, args.kills, rng, stop, log))
                chaos_runs = await submit(chaotic, args.scenarios, args.runs, args.steps, "chaos")
                lost_ids = await watcher.wait(set(chaos_runs), args.timeout)
                stop.set()
                await kill_task
                chaos_wall = time.monotonic() - t_chaos
                async with httpx.AsyncClient() as http:
                    stats = (await http.get(f"{chaotic.model_url}/_scripted/stats")).json()
                assert chaotic.procs is not None
                restarts = sum(chaotic.procs.restarts.values())
        finally:
            watcher.close()
        journal = await read_journal(settings)
        transfers = bank_transfers(settings.bank_path)
        bank = bank_stats(settings.bank_path)

    references = {k: comparable_trajectory(journal[r], r) for r, k in reference_runs.items()}
    failed_references = {
        r: summarize(journal[r]).reason for r in reference_runs if summarize(journal[r]).status != "completed"
    }
    if failed_references:
        # A reference that did not complete would count every chaos run of its scenario as differing.
        raise SystemExit(f"crash-free reference runs did not complete: {failed_references}")
    completed = differing = steps_total = 0
    min_steps = 10**9
    statuses: dict[str, int] = {}
    requested_keys: set[str] = set()
    resent = 0
    for run_id, k in chaos_runs.items():
        entries = journal.get(run_id, [])
        summary = summarize(entries)
        statuses[summary.status] = statuses.get(summary.status, 0) + 1
        completed += summary.status == "completed"
        steps_total += summary.steps
        min_steps = min(min_steps, summary.steps)
        observed = comparable_trajectory(entries, run_id)
        if observed != references[k]:
            differing += 1
            if differing == 1:
                report_first_difference(run_id, references[k], observed)
        for entry in entries:
            event = entry.event
            if isinstance(event, ToolCallRequested) and event.tool == "transfer_funds":
                requested_keys.add(event.idempotency_key)
            if isinstance(event, LlmCallCompleted):
                receipts = stats["calls"].get(event.call_id, [])
                resent += sum(1 for t in receipts if t > entry.timestamp_ms)
    applied: dict[str, int] = {}
    for row in transfers:
        applied[row["idempotency_key"]] = applied.get(row["idempotency_key"], 0) + 1
    duplicate_effects = sum(n - 1 for n in applied.values() if n > 1)
    duplicate_effects += sum(
        1 for key in applied if key not in requested_keys and not key.startswith(tuple(reference_runs))
    )
    result = {
        "runs": args.runs,
        "completed": completed,
        "lost": len(lost_ids),
        "statuses": statuses,
        "duplicate_side_effects": duplicate_effects,
        "model_calls_resent": resent,
        "trajectories_differing": differing,
        "kills": sum(1 for line in log if "SIGKILL" in line),
        "self_crashes_at_injected_points": sum(1 for line in log if "crashed itself" in line),
        "restarts": restarts,
        "transfers_requested": len(requested_keys),
        "transfers_applied": sum(1 for key in applied if key in requested_keys),
        # re-driven transfers the bank recognised by their idempotency key: each one is a crash
        # that landed between the side effect and its journal append, closed by the key
        "transfer_redeliveries_deduplicated": bank["deduplicated"],
        "min_model_steps_per_run": min_steps,
        "model_steps_total": steps_total,
        "chaos_wall_s": round(chaos_wall, 1),
        "total_wall_s": round(time.monotonic() - t_start, 1),
    }
    for line in log:
        print(line, file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
