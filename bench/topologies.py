"""Topologies beyond one ReAct loop, measured through the real stack: subagent fan-out, explicit
graphs and code-mode tool calling (issue 19).

    .venv/bin/python bench/topologies.py [--only fanout,graph,code_mode]

Each part starts its own stack (local broker, processors, scripted model) and is also runnable
alone (`bench/topologies_fanout.py`, `bench/topologies_graph.py`, `bench/topologies_code.py`).
The last line is JSON with three parts:

  fanout     parent_wall_s, child_wall_s: a parent starting 8 subagents whose tool calls each take
             2 s, and one child alone (parallel: parent at most 1.5x a child);
             parent_input_tokens_small_scratch / _large_scratch: the parent's prompt tokens when
             its children read 1 KB and 100 KB (isolation: within 5% of each other)
  graph      runs, valid_paths, node_overhead_ms_p50, react_step_overhead_ms_p50: a 12-node graph
             with a branch, a fan-out/join and an approval node, run 100 times
  code_mode  react_model_calls, code_model_calls, react_input_tokens, code_input_tokens,
             same_effects: one task of at least 10 tool calls over 5 tools, done both ways
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.topologies_code import measure_code_mode
from bench.topologies_fanout import measure_fanout
from bench.topologies_graph import measure_graph

PARTS: dict[str, Callable[[], Awaitable[Any]]] = {
    "fanout": measure_fanout,
    "graph": measure_graph,
    "code_mode": measure_code_mode,
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts to measure")
    args = parser.parse_args()
    wanted = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; known: {sorted(PARTS)}")
    result: dict[str, Any] = {}
    for part in wanted:  # one at a time: each starts and stops its own stack
        result[part] = await PARTS[part]()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
