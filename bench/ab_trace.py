"""What tracing costs the step throughput, measured in pairs: `bench/step_overhead.py` with and
without `--trace`, alternated A B B A ... so that a machine whose speed drifts weighs on both sides
alike, the ratio taken pair by pair.

    .venv/bin/python bench/ab_trace.py --pairs 8
    .venv/bin/python bench/ab_trace.py --pairs 5 --trace-share 0.1

Each run is its own benchmark process (its own broker and stack). The CPU delta counts the engine
and its span exporting child (`engine-0/span-export`). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run(traced: bool, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "bench/step_overhead.py", "--runs", str(args.runs), "--steps", str(args.steps)]
    if traced:
        command += ["--trace", "--trace-share", str(args.trace_share)]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def engine_cpu(result: dict[str, Any]) -> float:
    cpu = result["cpu_ms_per_step"]
    return float(sum(v for k, v in cpu.items() if k.startswith("engine")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--trace-share", type=float, default=1.0, help="the share of runs traced on the traced side")
    args = parser.parse_args()
    on: list[dict[str, Any]] = []
    off: list[dict[str, Any]] = []
    for pair in range(args.pairs):
        for traced in (True, False) if pair % 2 == 0 else (False, True):
            result = run(traced, args)
            (on if traced else off).append(result)
            print("on " if traced else "off", result["steps_per_s"], result["cpu_ms_per_step"], flush=True)
    ratios = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(on, off, strict=True)]
    deltas = [engine_cpu(a) - engine_cpu(b) for a, b in zip(on, off, strict=True)]
    print(json.dumps({
        "pairs": args.pairs,
        "trace_share": args.trace_share,
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(statistics.median(ratios), 3),
        "on_steps_per_s_median": statistics.median(r["steps_per_s"] for r in on),
        "off_steps_per_s_median": statistics.median(r["steps_per_s"] for r in off),
        "engine_cpu_delta_ms_per_step_median": round(statistics.median(deltas), 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
