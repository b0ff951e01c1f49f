"""A small crash-survival run in every test pass: bench/chaos.py with fewer runs and kills, on the
session's broker, with the topology mix (subagent trees, graph runs, code-mode programs) in 8 of
the 20 runs. The full-size figures live in bench/RESULTS.md."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# A run left unfinished is reported with its last events (bench/chaos.py `not_completed`); the
# deadline leaves room for a CI machine running other suites beside this one.
@pytest.mark.timeout(600)
async def test_runs_survive_sigkills_with_no_duplicates_or_resends(kafka_bootstrap: str) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "chaos.py"), "--runs", "20", "--kills", "6", "--scenarios", "4",
        "--effect-crash-rate", "0.03", "--timeout", "300", "--topologies", "subagents,graph,code", "--phase-kills", "1",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 560)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["completed"] == result["runs"] == 20, (result["not_completed"], err.decode(errors="replace")[-3000:])
    assert result["lost"] == 0
    assert result["duplicate_side_effects"] == 0
    assert result["model_calls_resent"] == 0
    assert result["trajectories_differing"] == 0
    assert result["kills"] >= 1
    # 2 subagent parents (3 children each), 4 graph runs (a subagent node each), 2 code-mode runs.
    trees = result["topologies"]
    assert trees["completed"] == 20 and trees["child_runs"] == trees["child_runs_completed"] == 10, trees
