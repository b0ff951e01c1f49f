"""What tracing costs the step throughput, measured in pairs: the step benchmark's stack
(`bench/step_overhead.py`) started with tracing on and off in turn, A B B A ..., on one broker in
one process, so that a machine whose speed drifts weighs on both sides alike; the ratio is taken
pair by pair.

    .venv/bin/python bench/ab_trace.py --pairs 8
    .venv/bin/python bench/ab_trace.py --pairs 5 --trace-share 0.1

Each side starts its own processes (the engine, the scripted model) on the shared broker, warms up,
measures `--runs` runs and stops. The broker and the OTLP sink stay up between them: a new broker
per side would put a minute of start-up between A and B, time in which this machine's speed moves
by more than what is measured. The CPU delta counts the engine and its span exporting child
(`engine-0/span-export`). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import bench_settings
from bench.otlp_sink import otlp_sink
from bench.step_overhead import measure, parse, sampling

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"


def engine_cpu(result: dict[str, Any]) -> float:
    cpu = result["cpu_ms_per_step"]
    return float(sum(v for k, v in cpu.items() if k.startswith("engine")))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--trace-share", type=float, default=1.0, help="the share of runs traced on the traced side")
    args = parser.parse_args()
    bench = parse(["--runs", str(args.runs), "--steps", str(args.steps), "--trace-share", str(args.trace_share)])
    on: list[dict[str, Any]] = []
    off: list[dict[str, Any]] = []
    async with bench_settings("abtrace") as (settings, kafka), otlp_sink() as sink:
        for pair in range(args.pairs):
            for traced in (True, False) if pair % 2 == 0 else (False, True):
                if traced:
                    os.environ[ENDPOINT] = sink.url
                    sampling(args.trace_share)
                else:
                    os.environ.pop(ENDPOINT, None)
                result = await measure(settings, kafka, bench, sink if traced else None)
                (on if traced else off).append(result)
                print("on " if traced else "off", result["steps_per_s"], result["cpu_ms_per_step"], flush=True)
    ratios = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(on, off, strict=True)]
    cpu_ratios = [a["cpu_ms_per_step_total"] / b["cpu_ms_per_step_total"] for a, b in zip(on, off, strict=True)]
    deltas = [engine_cpu(a) - engine_cpu(b) for a, b in zip(on, off, strict=True)]
    print(json.dumps({
        "pairs": args.pairs,
        "trace_share": args.trace_share,
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "on_steps_per_s_median": statistics.median(r["steps_per_s"] for r in on),
        "off_steps_per_s_median": statistics.median(r["steps_per_s"] for r in off),
        "cpu_per_step_ratios": [round(r, 3) for r in cpu_ratios],
        "median_cpu_per_step_ratio": round(statistics.median(cpu_ratios), 3),
        "engine_cpu_delta_ms_per_step_median": round(statistics.median(deltas), 3),
        "otlp_export_bytes_per_step": round(statistics.median(r["otlp_export_bytes"] / max(1, r["steps"]) for r in on)),
        "completed": sum(r["completed"] for r in on + off),
        "lost": sum(r["lost"] for r in on + off),
    }))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
