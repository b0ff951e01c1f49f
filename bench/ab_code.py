"""This tree's processes against another checkout's, measured in pairs on one broker: the step
benchmark's stack (`bench/step_overhead.py`) started from each tree in turn, A B B A ..., so that a
machine whose speed drifts weighs on both sides alike; the ratio is taken pair by pair.

    git worktree add /tmp/base <rev>      # or: git archive <rev> | tar -x -C /tmp/base
    .venv/bin/python bench/ab_code.py --base /tmp/base --pairs 6
    .venv/bin/python bench/ab_code.py --base /tmp/base --pairs 6 --trace   # tracing on, both sides

The processes a side starts (the engine, the scripted model) import the agentstream package of
that side's tree (PYTHONPATH); the benchmark's own client is this tree's on both sides. The broker
and the OTLP sink stay up between sides. The last line is one JSON object.
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
from bench.step_overhead import measure, parse

ROOT = Path(__file__).resolve().parents[1]
ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (its root directory)")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--trace", action="store_true", help="tracing on for both sides")
    args = parser.parse_args()
    if not (args.base / "agentstream" / "__init__.py").is_file():
        parser.error(f"{args.base} holds no agentstream package")
    bench = parse(["--runs", str(args.runs), "--steps", str(args.steps)])
    sides: dict[str, list[dict[str, Any]]] = {"this": [], "base": []}
    async with bench_settings("abcode") as (settings, kafka), otlp_sink() as sink:
        if args.trace:
            os.environ[ENDPOINT] = sink.url
        for pair in range(args.pairs):
            for side in ("this", "base") if pair % 2 == 0 else ("base", "this"):
                os.environ["PYTHONPATH"] = str((ROOT if side == "this" else args.base).resolve())
                result = await measure(settings, kafka, bench, sink if args.trace else None)
                sides[side].append(result)
                print(f"{side:4}", result["steps_per_s"], result["cpu_ms_per_step_total"], result["cpu_ms_per_step"],
                      flush=True)  # fmt: skip
    this, base = sides["this"], sides["base"]
    ratios = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(this, base, strict=True)]
    cpu = [a["cpu_ms_per_step_total"] / b["cpu_ms_per_step_total"] for a, b in zip(this, base, strict=True)]
    print(json.dumps({
        "pairs": args.pairs,
        "tracing": args.trace,
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "this_steps_per_s_median": statistics.median(r["steps_per_s"] for r in this),
        "base_steps_per_s_median": statistics.median(r["steps_per_s"] for r in base),
        "cpu_per_step_ratios": [round(r, 3) for r in cpu],
        "this_cpu_ms_per_step_median": statistics.median(r["cpu_ms_per_step_total"] for r in this),
        "base_cpu_ms_per_step_median": statistics.median(r["cpu_ms_per_step_total"] for r in base),
        "completed": sum(r["completed"] for r in this + base),
        "lost": sum(r["lost"] for r in this + base),
    }))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
