"""Shadow replay at scale: record runs through the real stack, then replay them against the current
orchestrator version (it must reproduce every one) and against a candidate that changes one
tool-choice rule, whose reach is known from the recording itself.

    .venv/bin/python bench/shadow.py --runs 2000

Recording: a local broker, every processor, the scripted model and the real MCP time server; each
run is 2-4 steps of one of four scenarios, a known subset of them calling `convert_time`. The
candidate (`CANDIDATE` below, also usable as `agentstream shadow --candidate bench.shadow:CANDIDATE`)
routes every `convert_time` call to `get_current_time`: exactly the runs that call `convert_time`
change their tool choices. Replay reads the journal once in bulk and re-drives every run with its
model outputs and tool results pinned (no model or tool is called). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream.client.journal import RunRequest
from agentstream.processors.orchestrator.versions import V1, OrchestratorVersion
from agentstream.stack import Deployment
from agentstream.tools.shadow_batch import replay_all, summarize
from agentstream.tools.shadow_read import Selection, read_recorded_runs
from bench.common import bench_settings
from bench.scenarios import write_scenarios
from bench.watch import TerminalWatcher

TOOLS = ["calculator", "get_current_time", "convert_time"]


def _to_current_time(tool: str, arguments: str) -> tuple[str, str] | None:
    """The candidate's one changed rule: asked to convert a time, it looks the target zone's time up."""
    if tool != "convert_time":
        return None
    target = json.loads(arguments).get("target_timezone", "UTC")
    return "get_current_time", json.dumps({"timezone": target})


CANDIDATE = OrchestratorVersion("time-lookup", tool_rules=(_to_current_time,), description="convert_time -> lookup")


def _calc(expr: str) -> dict[str, Any]:
    return {"name": "calculator", "arguments": {"expression": expr}}


def _convert(hour: int) -> dict[str, Any]:
    args = {"source_timezone": "UTC", "time": f"{hour:02d}:30", "target_timezone": "Asia/Tokyo"}
    return {"name": "convert_time", "arguments": args}


SCENARIOS: list[dict[str, Any]] = [
    {"name": "sh_calc2", "turns": [{"text": "", "tool_calls": [_calc("6 * 7")]}, {"text": "42"}]},
    {"name": "sh_calc3", "turns": [{"text": "", "tool_calls": [_calc("2 + 2")]},
                                   {"text": "", "tool_calls": [_calc("4 * 10")]}, {"text": "40"}]},
    {"name": "sh_tz3", "turns": [{"text": "", "tool_calls": [_calc("9 + 1")]},
                                 {"text": "", "tool_calls": [_convert(9)]}, {"text": "18:30 in Tokyo"}]},
    {"name": "sh_mix4", "turns": [{"text": "", "tool_calls": [{"name": "get_current_time",
                                                                "arguments": {"timezone": "UTC"}}]},
                                  {"text": "", "tool_calls": [_calc("3 * 3")]},
                                  {"text": "", "tool_calls": [_convert(3)]}, {"text": "done"}]},
]  # fmt: skip
WEIGHTS = [0.4, 0.25, 0.2, 0.15]  # the runs that call convert_time: about 35%


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=900.0, help="for the recording to end")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    chosen = {f"run_shadow{i:05d}": rng.choices(SCENARIOS, WEIGHTS)[0]["name"] for i in range(args.runs)}
    async with bench_settings("shadow") as (settings, _kafka):
        scen_dir = settings.home / "scenarios"
        write_scenarios(scen_dir, SCENARIOS)
        watcher = TerminalWatcher(settings)
        async with Deployment(settings, [scen_dir], wait_tools=tuple(TOOLS)) as d:
            t0 = time.monotonic()
            ids = list(chosen)
            for start in range(0, len(ids), 200):  # appends in flight together, not one round trip each
                await asyncio.gather(*(
                    d.client.request_run(RunRequest(task=f"[scenario:{chosen[r]}] run {r}", tools=TOOLS, max_steps=6,
                                                    run_id=r))
                    for r in ids[start : start + 200]
                ))  # fmt: skip
            missing = await watcher.wait(set(ids), args.timeout)
            record_s = time.monotonic() - t0
        watcher.close()

        t1 = time.monotonic()
        recorded = await read_recorded_runs(settings, Selection())
        read_s = time.monotonic() - t1
        recorded = [r for r in recorded if r.run_id in chosen]
        t2 = time.monotonic()
        current = replay_all(recorded, V1)
        current_s = time.monotonic() - t2
        t3 = time.monotonic()
        candidate = replay_all(recorded, CANDIDATE)
        candidate_s = time.monotonic() - t3

    now = summarize(current, V1.name, current_s)
    cand = summarize(candidate, CANDIDATE.name, candidate_s)
    # The truth, from the recording: the runs whose journal has a convert_time call.
    using = {r.run_id for r in recorded if "convert_time" in {getattr(e, "tool", "") for e in r.events}}
    planned = {r for r, s in chosen.items() if s in ("sh_tz3", "sh_mix4")}
    changed = {r.run_id for r in candidate if r.tool_choice_changed}
    total = len(recorded)
    share_truth = len(using) / total if total else 0.0
    print(f"recorded {total} runs in {record_s:.1f}s ({len(missing)} not ended); read the journal in {read_s:.2f}s")
    print(f"current ({V1.name}): {now['identical']} identical, {now['diverged']} diverged, "
          f"{now['unreplayable']} not replayable in {current_s:.2f}s")  # fmt: skip
    print(f"candidate ({CANDIDATE.name}): tool choices changed in {cand['share_changed']:.2%} of runs "
          f"(truth {share_truth:.2%}); changed = the convert_time runs: {changed == using}")  # fmt: skip
    result = {
        "runs": total,
        "not_ended": len(missing),
        "completed": sum(1 for r in recorded if any(e.type_name == "RunCompleted" for e in r.events)),
        "divergences_current": now["diverged"] + now["unreplayable"],
        "share_changed": cand["share_changed"],
        "share_truth": round(share_truth, 4),
        "share_error_pp": round(abs(cand["share_changed"] - share_truth) * 100, 3),
        "changed_runs_are_the_convert_time_runs": changed == using,
        "planned_convert_time_runs": len(planned),
        "by_step": cand["by_step"],
        "new_check_failures": cand["new_check_failures"],
        "record_s": round(record_s, 1),
        "read_s": round(read_s, 2),
        "replay_s": round(candidate_s, 2),
        # What one `agentstream shadow` does: the journal read in bulk, then every run replayed.
        "journals_per_min": round(total / (read_s + candidate_s) * 60) if total else 0,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
