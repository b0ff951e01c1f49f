"""The KV bench's choice of time scales (`bench/kv_workload.py`): pure arithmetic, no processes.

What the figures rest on: agentstream and the oracle are always compared at one scale; only the
baselines, which take longer for the same turns, are compressed further, never to a higher real
turn rate than those two; the wall budget is respected unless the CPU-lag floor forbids it.
"""

from __future__ import annotations

import pytest

from agentstream.doubles.replica_emulator.profile import DEFAULT_8B_H100
from bench.kv_workload import (
    MAX_SCALE,
    MAX_TURNS_PER_S,
    MIN_SCALE,
    OWN_SCALE,
    POLICY_OVERHEAD_S,
    auto_time_scales,
    estimate_makespans,
    make_workload,
)

POLICIES = ["round_robin", "least_loaded", "session_hash", "agentstream", "oracle"]


def _plan(replicas: int, runs: int, budget_s: float) -> tuple[dict[str, float], dict[str, float], int]:
    w = make_workload(runs, 1, DEFAULT_8B_H100.kv_capacity_tokens * replicas, 0.5)
    turns = sum(len(s.turns) for s in w.specs)
    makespans = estimate_makespans(w, replicas, POLICIES)
    return makespans, auto_time_scales(makespans, turns, budget_s, POLICY_OVERHEAD_S), turns


@pytest.mark.parametrize(("replicas", "runs"), [(2, 200), (4, 100), (4, 200), (8, 200), (8, 400)])
def test_the_compared_policies_share_a_scale_and_the_plan_fits_the_budget(replicas: int, runs: int) -> None:
    makespans, scales, turns = _plan(replicas, runs, 230)
    common = scales["agentstream"]
    assert scales["oracle"] == common
    assert {"round_robin", "least_loaded", "session_hash"} == OWN_SCALE
    assert MIN_SCALE <= common <= MAX_SCALE
    for policy in OWN_SCALE:
        assert MIN_SCALE <= scales[policy] <= common
        # Never played faster in real turns per second than the compared policies are.
        assert turns / (makespans[policy] * scales[policy]) <= turns / (makespans["agentstream"] * common) * 1.01
    wall = sum(makespans[p] * scales[p] for p in POLICIES) + POLICY_OVERHEAD_S * len(POLICIES)
    floor_binds = common <= turns / (MAX_TURNS_PER_S * makespans["agentstream"]) * 1.001
    assert wall <= 230 * 1.01 or floor_binds or min(scales.values()) == MIN_SCALE


def test_a_tight_budget_does_not_compress_past_the_cpu_lag_floor() -> None:
    makespans, scales, turns = _plan(4, 200, 40)
    assert scales["agentstream"] >= min(MAX_SCALE, turns / (MAX_TURNS_PER_S * makespans["agentstream"])) - 1e-4


def test_a_forced_single_policy_plan_uses_the_least_compression() -> None:
    w = make_workload(200, 1, DEFAULT_8B_H100.kv_capacity_tokens * 4, 0.5)
    makespans = estimate_makespans(w, 4, ["agentstream", "oracle"])
    scales = auto_time_scales(makespans, sum(len(s.turns) for s in w.specs), 230, POLICY_OVERHEAD_S)
    assert scales == {"agentstream": MAX_SCALE, "oracle": MAX_SCALE}


def test_the_warm_up_fills_the_pool_before_the_measured_runs_and_changes_none_of_them() -> None:
    capacity = DEFAULT_8B_H100.kv_capacity_tokens * 4
    cold = make_workload(50, 1, capacity, 0.5, warmup_spans=0)
    warm = make_workload(50, 1, capacity, 0.5)
    measured = [s for s in warm.specs if s.measured]
    warmup = [s for s in warm.specs if not s.measured]
    # The same 50 runs are measured, after one isolated run duration of unmeasured arrivals.
    assert [s.turns for s in measured] == [s.turns for s in cold.specs]
    assert warm.warmup_runs == len(warmup) > 0 and cold.warmup_runs == 0
    assert all(s.arrival_s < warm.run_s for s in warmup) and measured[0].arrival_s >= warm.run_s
    assert [s.index for s in warm.specs] == list(range(len(warm.specs)))
    # 12.5 runs per replica: a cold start never reaches steady load, the warm-up does.
    assert warm.steady and not cold.steady
    assert warm.rate_per_s == cold.rate_per_s and warm.kv_load == cold.kv_load
