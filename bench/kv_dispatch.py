"""KV-affinity dispatch: five routing policies over emulated model replicas, driven through Kafka.

    .venv/bin/python bench/kv_dispatch.py --replicas 4 --runs 200 --seed 1

Starts a local Kafka, N replica emulators (Llama-3.1-8B on H100 timing, `--kv-tokens` of KV each)
and, per policy, the real dispatcher process (`processors/kv_dispatcher/app.py` under
`agentstream.process.serve`, its own topic prefix). The bench plays orchestrator, model invoker and
tools: per run (10-30 turns; context growing from ~2k to ~30k tokens; 100-300 output tokens a turn;
tool gaps 0.5-5 s, log-uniform) it journals `LlmCallRequested`, waits for the dispatcher's
`LlmCallDispatched`, sends the turn to that replica (session = run id), journals `LlmCallCompleted`,
`ToolCallRequested`, sleeps the tool gap, `ToolCallCompleted`, and at the end `RunCompleted`. Runs
arrive as a Poisson process at the rate that offers `--kv-load` x the pool's KV (`bench/kv_workload.py`),
so every pool size is under the same pressure. Before the `--runs` measured runs, one isolated run
duration of warm-up arrivals (`--warmup-spans`, 1; `warmup_runs` in the JSON) fills the pool: they
are played like the others but not counted, so the measured runs find the pool as loaded as it
stays whatever their number (`--warmup-spans 0`: a cold start, where too few runs for that rate to
reach steady state is reported in `steady_state`, `warnings`, `goals.meaningful`). The same workload (seeded) runs
under every policy. Every emulated duration is multiplied by the policy's time scale (`time_scales`;
by default agentstream and the oracle share the least compression that fits `--wall-budget`, and
the baselines (round robin, least loaded, session hash), which take several times longer for the
same turns, are compressed further, to no higher a real turn rate; `--time-scale` sets one for
all); reported times are divided by it (emulated s).

Every figure below is over the measured runs only, but the KV demand, which is the pool's.

  mean_jct_s                 run arrival -> last turn done
  p99_ttft_s                 LlmCallRequested journaled -> first token (dispatch wait included)
  mean_queue_wait_s          time queued calls spent in the dispatcher's admission queue

Only time in the admission queue waits for emulated events, so only it is emulated time; a call's
trip through Kafka and the dispatcher is real latency, alike for every policy, counted at its real
length (queue time = journaled -> decided, by the dispatcher's stamp, less that of calls that did
not wait). The pin TTL and the longest queue wait are scaled. `loop_lag_ms_p50_p99`: how late the bench's event loop wakes
(real ms, x 1/scale in emulated terms), the CPU contention behind the figures.

  cache_hit_rate             cached prompt tokens / prompt tokens
  recomputed_prefill_tokens  per turn: uncached tokens minus the tokens new since the previous turn
  peak_kv_demand_tokens      max over time of the summed context of every live run (mean_: its mean)

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from agentstream.config import Settings
from agentstream.doubles.replica_emulator.profile import DEFAULT_8B_H100
from agentstream.stack import ensure_topics
from agentstream.topics import JOURNAL, load_topics
from bench.common import bench_settings, percentile
from bench.kv_driver import Driver
from bench.kv_fleet import Fleet, log, wait_dispatcher_ready
from bench.kv_workload import (
    DEFAULT_KV_LOAD,
    POLICY_OVERHEAD_S,
    WARMUP_SPANS,
    Workload,
    auto_time_scales,
    estimate_makespans,
    goals,
    make_workload,
    workload_warnings,
)

POLICIES = ["round_robin", "least_loaded", "session_hash", "agentstream", "oracle"]


async def emulator_counters(urls: list[str]) -> dict[str, int]:
    total: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls:
            for key, value in (await http.get(f"{url}/_emulator/stats")).json()["counters"].items():
                total[key] = total.get(key, 0) + int(value)
    return total


async def run_policy(base: Settings, fleet: Fleet, policy: str, w: Workload, scale: float) -> dict[str, Any]:
    settings = dataclasses.replace(base, topic_prefix=f"{base.topic_prefix}{policy.replace('_', '')}",
                                   home=base.home / policy)  # fmt: skip
    settings.home.mkdir(parents=True, exist_ok=True)
    await ensure_topics(settings)
    partitions = load_topics(settings.topic_prefix)[JOURNAL].partitions
    began = time.monotonic()
    if not fleet.urls or fleet.infinite != (policy == "oracle") or fleet.time_scale != scale:
        await asyncio.to_thread(fleet.start_emulators, policy == "oracle", scale)
    else:
        async with httpx.AsyncClient(timeout=10) as http:
            for url in fleet.urls:
                (await http.post(f"{url}/_emulator/reset")).raise_for_status()
    fleet.start_dispatcher(settings, policy)
    try:
        await wait_dispatcher_ready(settings, partitions, fleet)
        driver = Driver(settings, partitions, policy, scale)
        makespan = await driver.run_all(w.specs, w.measured_from_s or w.run_s)
    finally:
        await asyncio.to_thread(fleet.stop_dispatcher)
    t, counters = driver.tally, await emulator_counters(fleet.urls)
    return {
        "mean_jct_s": round(statistics.mean(t.jcts), 2) if t.jcts else None,
        "p50_jct_s": round(percentile(t.jcts, 50), 2),
        "p99_ttft_s": round(percentile(t.ttfts, 99), 3),
        "mean_ttft_s": round(statistics.mean(t.ttfts), 3),
        "cache_hit_rate": round(t.cached / max(1, t.prompt), 4),
        "recomputed_prefill_tokens": t.recomputed,
        "queued": t.queued,
        "rejected": t.rejected,
        "failed_runs": t.failed_runs,
        "mean_dispatch_wait_s": round(statistics.mean(t.waits), 3),
        "mean_queue_wait_s": round(statistics.mean(t.queue_s), 2) if t.queue_s else 0.0,
        "dispatch_round_trip_ms_p50": round(percentile(t.rtts_ms, 50), 1) if t.rtts_ms else None,
        "peak_kv_demand_tokens": t.peak_demand,
        "mean_kv_demand_tokens": round(t.mean_demand),
        "loop_lag_ms_p50_p99": [round(percentile(t.lag_ms, 50), 1), round(percentile(t.lag_ms, 99), 1)],
        "makespan_s": round(makespan, 1),
        "replica_evictions": counters.get("evictions", 0),
        "time_scale": scale,
        "wall_s": round(time.monotonic() - began, 1),
    }


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked before any process starts or event loop runs (a usage error exits 2
    with its message alone)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--runs", type=int, default=200, help="measured runs (after the warm-up)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-scale", type=float, default=None,
                        help="real seconds per emulated second (default: chosen to fit --wall-budget)")  # fmt: skip
    parser.add_argument("--wall-budget", type=float, default=230, help="wall seconds for all policies (goal: 300)")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--max-queue-wait-s", type=float, default=0.0,
                        help="emulated seconds a new session waits for KV before going over the estimate (0: no limit)")  # fmt: skip
    parser.add_argument("--kv-tokens", type=int, default=DEFAULT_8B_H100.kv_capacity_tokens,
                        help="KV capacity of each replica in tokens (default: the 8B-on-H100 profile's)")  # fmt: skip
    parser.add_argument("--prefill-chunk-tokens", type=int, default=DEFAULT_8B_H100.prefill_chunk_tokens,
                        help="the emulators' prompt tokens per step beside decodes (0: prefill never slows decodes)")  # fmt: skip
    parser.add_argument("--kv-load", type=float, default=DEFAULT_KV_LOAD,
                        help="offered KV demand / the pool's KV capacity, which sets the arrival rate")  # fmt: skip
    parser.add_argument("--warmup-spans", type=float, default=WARMUP_SPANS,
                        help="isolated run durations of unmeasured arrivals first, filling the pool (0: cold start)")  # fmt: skip
    parser.add_argument("--arrival-rate", type=float, default=None,
                        help="runs per emulated second per replica (overrides --kv-load)")  # fmt: skip
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if unknown := sorted(set(policies) - set(POLICIES)):
        parser.error(f"unknown policies {unknown}")
    if args.runs < 1 or args.replicas < 1:
        parser.error("--runs and --replicas must be at least 1")
    if args.warmup_spans < 0:
        parser.error("--warmup-spans must not be negative (0 starts cold)")
    try:  # the emulators' own rule for their profile, told here before any of them starts
        DEFAULT_8B_H100.with_changes(prefill_chunk_tokens=args.prefill_chunk_tokens)
    except ValueError as exc:
        parser.error(f"--prefill-chunk-tokens: {exc}")
    if args.time_scale is not None and args.time_scale <= 0:
        parser.error(f"--time-scale must be positive (real seconds per emulated second), not {args.time_scale}")
    args.policies = policies
    return args


async def main(args: argparse.Namespace) -> None:
    policies: list[str] = args.policies
    capacity = args.kv_tokens * args.replicas
    rate = args.arrival_rate * args.replicas if args.arrival_rate else None
    w = make_workload(args.runs, args.seed, capacity, args.kv_load, rate, args.warmup_spans)
    turns = [t for s in w.specs for t in s.turns]
    estimates = estimate_makespans(w, args.replicas, policies)
    if args.time_scale:
        scales = dict.fromkeys(policies, args.time_scale)
    else:
        scales = auto_time_scales(estimates, len(turns), args.wall_budget, POLICY_OVERHEAD_S)
    expected_wall = sum(estimates[p] * scales[p] for p in policies) + POLICY_OVERHEAD_S * len(policies)
    if expected_wall > args.wall_budget:
        log(
            f"expected wall time ~{expected_wall:.0f} s, over the {args.wall_budget:.0f} s budget at time scales {scales}"
        )
    warnings = workload_warnings(w, args.replicas)
    log(f"{args.runs} runs after {w.warmup_runs} warm-up runs, {len(turns)} turns, {args.replicas} replicas x {args.kv_tokens} KV tokens, "
        f"{w.rate_per_s:.3f} runs/s (KV load {w.kv_load:.2f}), time scales {scales}"
        f"{'' if args.time_scale else ' (auto)'}")  # fmt: skip
    for warning in warnings:
        log(f"warning: {warning}")
    began = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    async with bench_settings("kvdispatch") as (settings, _kafka):
        fleet = Fleet(args.replicas, args.kv_tokens, settings.home / "logs", args.max_queue_wait_s,
                      args.prefill_chunk_tokens)  # fmt: skip
        try:
            for policy in policies:
                log(f"{policy}: running")
                results[policy] = await run_policy(settings, fleet, policy, w, scales[policy])
                log(f"{policy}: {json.dumps(results[policy])}")
        finally:
            await asyncio.to_thread(fleet.close)
    # The demand the workload makes when nothing holds it back: the oracle run's, else the largest.
    unheld = results.get("oracle") or max(results.values(), key=lambda r: r["peak_kv_demand_tokens"], default={})
    peak, mean = unheld.get("peak_kv_demand_tokens", 0), unheld.get("mean_kv_demand_tokens", 0)
    workload = {
        "arrival_rate_per_s": round(w.rate_per_s, 3),
        "offered_kv_load": round(w.kv_load, 3),
        "runs_per_replica": round(args.runs / args.replicas, 1),
        "warmup_runs": w.warmup_runs,
        "measured_from_s": round(w.measured_from_s, 1),
        "isolated_run_s": round(w.run_s, 1),
        "arrivals_span_s": round(w.span_s, 1),
        "arrivals_span_in_run_durations": round(w.span_s / w.run_s, 2),
        "steady_state": not warnings,
        "turns_total": len(turns),
        "turns_per_run": [10, 30],
        "context_tokens": [min(t.prompt_tokens for t in turns), max(t.prompt_tokens for t in turns)],
        "output_tokens": [100, 300],
        "tool_gap_s": [0.5, 5.0],
        "peak_kv_demand_tokens": peak,
        "mean_kv_demand_tokens": mean,
        "kv_capacity_total_tokens": capacity,
        "peak_kv_demand_vs_capacity": round(peak / capacity, 3),
        "mean_kv_demand_vs_capacity": round(mean / capacity, 3),
    }
    out = {
        "replicas": args.replicas, "runs": args.runs, "warmup_runs": w.warmup_runs, "warmup_spans": args.warmup_spans,
        "seed": args.seed, "time_scales": scales,
        "time_scale_auto": not args.time_scale, "kv_tokens_per_replica": args.kv_tokens,
        "prefill_chunk_tokens": args.prefill_chunk_tokens,
        "wall_s": round(time.monotonic() - began, 1),
        "estimated_makespan_s": {p: round(v) for p, v in estimates.items()}, "expected_wall_s": round(expected_wall),
        "workload": workload, "policies": results,
        "goals": goals(results, peak > capacity, not warnings), "warnings": warnings,
    }  # fmt: skip
    print(json.dumps(out))


def _run() -> None:
    args = parse_args()
    loop = asyncio.new_event_loop()
    task = loop.create_task(main(args))
    # SIGTERM cancels the bench like Ctrl-C does, so every child process is stopped on the way out.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    finally:
        loop.close()


if __name__ == "__main__":
    _run()
