"""The workload of `bench/kv_dispatch.py`: multi-turn agent runs, their arrival rate from a target
KV load, the sizing of the bench (time scale, steady state) that follows from it, and the goals.

Offered KV load (Little's law): arrival rate x the mean KV token-seconds of a run timed as if alone
on a replica that keeps its KV (prefill of each turn's new tokens, lone-request decode, the whole
context held through the turn and the tool gap after it), over the pool's KV capacity. Deriving the
rate from it keeps the pressure per replica the same at every pool size, where a fixed rate per
replica and a fixed run count would leave a large pool never full.

Warm-up: before the measured runs, the bench plays one isolated run duration of arrivals
(`WARMUP_SPANS`) whose runs it does not count, so the measured runs find the pool as loaded as it
stays, at any run count. Measured from a cold start instead (`--warmup-spans 0`), the mean JCT
averages in the first runs, which find the pool empty, and a short configuration (25 runs per
replica) is mostly such runs: round robin's re-prefill backlog, which grows for as long as runs
keep arriving, had not built, and its mean depended on the run count (3.8-3.9x agentstream's at
4 x 100, 4.4x at 8 x 200, 7.3x at 4 x 200; after the warm-up 6.7x, 6.7x and 8.9x: bench/RESULTS.md).
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Any

from agentstream.doubles.replica_emulator.profile import DEFAULT_8B_H100, ReplicaProfile

# Bounds of the automatic time scale: below 0.02 CPU lag dominates the emulated times on two cores;
# above 0.1 nothing is gained for the goals and the wall time grows.
MIN_SCALE, MAX_SCALE = 0.02, 0.1
# The most turns per real second a policy is played at (from its estimated makespan). CPU lag on two
# cores is multiplied by 1/scale in emulated time and stretches every run (tool gaps, decode), which
# raises the KV load the runs actually make. Measured at 8 replicas, 400 runs: the affinity policies
# at scale 0.1 (~250 turns/s) gave agentstream 1.00x the oracle; at 0.044 (~570 turns/s) the
# oracle's runs were 30% longer and agentstream 3.2x the oracle. At 4 replicas, 200 runs, KV load
# 0.6: scale 0.058 (~250 turns/s) put the oracle's peak KV demand at 0.97 of capacity and agentstream
# at 1.4x the oracle, scale 0.1 (~155 turns/s) at 0.86 and 1.00x. Hence the least compression the
# wall budget allows, not the most this rate allows.
MAX_TURNS_PER_S = 250.0
# The baselines re-prefill much of their turns: the same turns take them several times the emulated
# time, so at the same real turn rate they bear more compression (their own scale leaves agentstream
# and the oracle, which the goals compare, more of the budget). Measured at 8 replicas, 400 runs:
# round robin's mean JCT was 534.7 s at scale 0.1 and 566.8 s at 0.0324 (+6%, in agentstream's
# favour). Session hash joined them when replicas began to slow decodes for prefills (2026-12-05):
# its makespan at the default load is then 0.5-1.07 of the way from the affinity policies' to round
# robin's, and played at the common scale it alone took 165 s of the 342 s that 8 x 400 ran. (On the
# emulator before that, its thrash was bistable: at 0.0395 it tipped, 292 s against 84 s at 0.1.)
OWN_SCALE = frozenset({"round_robin", "least_loaded", "session_hash"})
# A cold-start run is in steady state when runs keep arriving for this many isolated run durations:
# the first duration fills the pool, the rest is measured with sessions of every age resident.
STEADY_SPANS = 2.0
# Isolated run durations of unmeasured arrivals before the measured runs: one fills the pool.
WARMUP_SPANS = 1.0
# The default offered KV load: the pool's KV would be half full on average with every run timed as
# if alone. Runs sharing a replica last longer (the serialized prefill, batched decode, and decodes
# slowed by the other sessions' prefills), so after the warm-up the oracle's measured mean demand is
# 0.62-0.75 of capacity and its peaks 0.76-1.06 (2-8 replicas; KV is oversubscribed at its peaks at
# 2 replicas). At 0.8 the oracle's mean demand is 1.16 of the pool (4 x 200): more KV than the pool
# holds for as long as runs arrive, so under any policy that keeps running sessions resident new
# sessions queue without bound (bench/RESULTS.md).
DEFAULT_KV_LOAD = 0.5
POLICY_OVERHEAD_S = 6.0  # wall seconds per policy outside the workload: processes starting, draining


@dataclass(frozen=True)
class Turn:
    prompt_tokens: int  # the whole context sent this turn
    output_tokens: int
    tool_gap_s: float  # emulated seconds of tool work after this turn


@dataclass(frozen=True)
class RunSpec:
    index: int
    arrival_s: float
    turns: tuple[Turn, ...]
    measured: bool = True  # False: a warm-up run, played but not counted


def make_turns(runs: int, seed: int | str) -> list[tuple[Turn, ...]]:
    rng = random.Random(seed)
    out = []
    for _ in range(runs):
        n = rng.randint(10, 30)
        prompt, last = rng.randint(1500, 2500), rng.randint(26_000, 30_000)
        growth = (last - prompt) / (n - 1)
        turns = []
        for _ in range(n):
            tokens = rng.randint(100, 300)
            # Log-uniform: most tools answer fast, a few take seconds (a span of an order of magnitude).
            gap = math.exp(rng.uniform(math.log(0.5), math.log(5.0)))
            turns.append(Turn(prompt, tokens, gap))
            prompt += tokens + max(50, round(growth * rng.uniform(0.6, 1.4)) - tokens)
        out.append(tuple(turns))
    return out


def isolated_run(turns: tuple[Turn, ...], profile: ReplicaProfile = DEFAULT_8B_H100) -> tuple[float, float]:
    """(seconds, KV token-seconds) of one run alone on a replica that keeps its KV: each turn
    prefills only its new tokens and decodes at the lone-request rate, and the run holds its whole
    context through the turn and the tool gap after it."""
    held, seconds, kv_seconds = 0, 0.0, 0.0
    for i, turn in enumerate(turns):
        prefill = (turn.prompt_tokens - held) * profile.prefill_s_per_token
        busy = prefill + turn.output_tokens * profile.decode_s_per_token
        busy += turn.tool_gap_s if i < len(turns) - 1 else 0.0
        held = turn.prompt_tokens + turn.output_tokens
        seconds += busy
        kv_seconds += held * busy
    return seconds, kv_seconds


@dataclass(frozen=True)
class Workload:
    specs: list[RunSpec]  # warm-up runs first, then the measured ones, in arrival order
    rate_per_s: float
    kv_load: float  # offered KV demand / the pool's capacity, from the isolated timing (Little's law)
    run_s: float  # mean isolated run duration

    @property
    def span_s(self) -> float:
        """Emulated seconds from the start until the last arrival, warm-up included."""
        return self.specs[-1].arrival_s if self.specs else 0.0

    @property
    def warmup_runs(self) -> int:
        return sum(not s.measured for s in self.specs)

    @property
    def measured_from_s(self) -> float:
        """When the first measured run arrives (0 from a cold start)."""
        return next((s.arrival_s for s in self.specs if s.measured), 0.0) if self.warmup_runs else 0.0

    @property
    def steady(self) -> bool:
        """Whether the measured runs find the pool loaded: after a warm-up of a run duration, or, from
        a cold start, with arrivals going on long enough that the filling stretch is a small part."""
        return self.measured_from_s >= self.run_s or self.span_s >= STEADY_SPANS * self.run_s


def make_workload(
    runs: int,
    seed: int,
    capacity_tokens: int,
    kv_load: float,
    rate_per_s: float | None = None,
    warmup_spans: float = WARMUP_SPANS,
) -> Workload:
    """The runs, and their Poisson arrivals at the rate that offers `kv_load` x the pool's KV
    (`rate_per_s` overrides it), after `warmup_spans` isolated run durations of warm-up arrivals.
    Measured turns, warm-up turns and arrivals draw from separate generators, so one seed gives the
    same measured runs at every load, pool size and warm-up."""
    all_turns = make_turns(runs, seed)
    iso = [isolated_run(t) for t in all_turns]
    run_s = statistics.mean(s for s, _kv in iso)
    kv_seconds = statistics.mean(kv for _s, kv in iso)
    rate = rate_per_s if rate_per_s else kv_load * capacity_tokens / kv_seconds
    # Warm-up runs are those arriving before the warm-up ends; the first arrival after it is the
    # first measured run (so a cold start draws the very arrivals it always did).
    rng, warm_until = random.Random(f"arrivals-{seed}"), max(0.0, warmup_spans) * run_s
    arrivals: list[float] = []
    t, measured = 0.0, 0
    while measured < runs:
        t += rng.expovariate(rate)
        arrivals.append(t)
        measured += t >= warm_until
    warm = len(arrivals) - runs
    turns = [*make_turns(warm, f"warmup-{seed}"), *all_turns]
    specs = [RunSpec(i, at, tr, measured=i >= warm) for i, (at, tr) in enumerate(zip(arrivals, turns, strict=True))]
    return Workload(specs, rate, rate * kv_seconds / capacity_tokens, run_s)


def estimate_makespans(w: Workload, replicas: int, policies: list[str]) -> dict[str, float]:
    """Emulated seconds each policy's run will take, for choosing the time scale: arrivals plus the
    last runs' duration for the affinity policies; for the baselines, which re-prefill most of every
    prompt (round robin finds a run's KV on 1 replica in N), the serialized prefill of that work if
    it is longer. Session hash sits between, nearer the affinity policies while KV is plentiful and
    nearer round robin as the load oversubscribes it. Rough, on purpose: it only sizes the
    compression."""
    profile = DEFAULT_8B_H100
    affine = w.span_s + 1.5 * w.run_s
    prompt = sum(t.prompt_tokens for s in w.specs for t in s.turns)
    # x1.5: measured makespans of round robin ran 1.3-1.6x this bound (decode and queueing on top).
    thrash = max(affine, 1.5 * prompt * (1 - 1 / replicas) * profile.prefill_s_per_token / replicas)
    # Measured session-hash makespans, as a fraction of the way from the affinity estimate to round
    # robin's measured one: 0-0.1 at KV load 0.5 and 0.6-1.2 at 0.8 while replicas prefilled and
    # decoded at once; since prefills slow decodes, 0.52-1.07 at 0.5 (2-8 replicas, after the
    # warm-up). Under-estimating on purpose (0.75 at 0.5): a short estimate plays session hash at
    # a lower real turn rate than the others, less CPU lag, never more.
    toward_thrash = min(1.0, max(0.0, (w.kv_load - 0.2) / 0.4))
    plentiful = 1.35 * affine  # its hash imbalance alone: measured 0.96-1.37x the affinity makespan
    hashed = plentiful + toward_thrash * max(0.0, thrash - plentiful)
    guess = {"round_robin": thrash, "least_loaded": thrash, "session_hash": hashed}
    return {p: guess.get(p, affine) for p in policies}


def auto_time_scales(makespans: dict[str, float], turns: int, budget_s: float, overhead_s: float) -> dict[str, float]:
    """A time scale per policy. Every policy is played at no higher a real turn rate than the
    affinity policies: they share the least compression that fits `budget_s`; the baselines
    (`OWN_SCALE`), whose estimate is longer for the same turns, are compressed by their estimate's
    ratio to the shortest on top of it, less where the budget leaves room. Never more compressed
    than `MAX_TURNS_PER_S` allows; where that wins, the wall time goes over the budget (reported)
    rather than the figures being distorted."""
    playable = max(1.0, budget_s - overhead_s * len(makespans))
    shortest = max(1.0, min(makespans.values()))  # the affinity policies' estimate
    weight = sum(shortest if p in OWN_SCALE else m for p, m in makespans.items())
    common = min(MAX_SCALE, max(MIN_SCALE, playable / weight, turns / (MAX_TURNS_PER_S * shortest)))
    own = {p: max(1.0, m) for p, m in makespans.items() if p in OWN_SCALE}
    same_rate = {p: max(MIN_SCALE, common * shortest / m) for p, m in own.items()}
    # What the others leave of the budget eases the baselines' compression, up to the common scale:
    # the largest one scale that, with no baseline under its same-rate scale, fills what is left.
    left = playable - common * sum(m for p, m in makespans.items() if p not in OWN_SCALE)
    eased, rest = common, dict(own)
    while rest:
        eased = min(common, (left - sum(own[p] * same_rate[p] for p in own if p not in rest)) / sum(rest.values()))
        if not (held := {p for p in rest if same_rate[p] > eased}):
            break
        for p in held:
            del rest[p]
    return {p: round(max(same_rate[p], eased) if p in own else common, 4) for p in makespans}


def workload_warnings(w: Workload, replicas: int) -> list[str]:
    """Why this configuration cannot say much about the goals, if it cannot."""
    out = []
    if not w.steady:
        need = math.ceil(STEADY_SPANS * w.run_s * w.rate_per_s)
        out.append(
            f"not in steady state: runs arrive for {w.span_s:.0f} s, {w.span_s / w.run_s:.1f} run durations "
            f"({w.run_s:.0f} s each), the measured ones from {w.measured_from_s:.0f} s; the pool never holds "
            f"sessions of every age, so KV pressure and the baselines' backlog stay transient. Keep the "
            f"warm-up (--warmup-spans {WARMUP_SPANS:g}) or use --runs {need} or more ({need / replicas:.0f} per "
            f"replica) at this load"
        )
    if w.kv_load < 0.4:
        out.append(f"offered KV load {w.kv_load:.2f}: KV is rarely short, so the policies barely differ")
    return out


def goals(policies: dict[str, dict[str, Any]], oversubscribed: bool, steady: bool) -> dict[str, Any]:
    jct = {name: p["mean_jct_s"] for name, p in policies.items() if p.get("mean_jct_s")}
    ours = jct.get("agentstream")
    # `meaningful` false: the figures are what was measured, but the configuration (see "warnings")
    # cannot show whether the goals hold.
    out: dict[str, Any] = {"kv_oversubscribed": oversubscribed, "meaningful": steady}
    if ours:
        rr, oracle, sh = jct.get("round_robin"), jct.get("oracle"), jct.get("session_hash")
        out["agentstream_vs_round_robin_jct"] = round(rr / ours, 2) if rr else None
        out["agentstream_vs_oracle_jct"] = round(ours / oracle, 3) if oracle else None
        out["agentstream_beats_session_hash"] = (ours < sh) if sh else None
        out["met"] = {
            "jct_4x_lower_than_round_robin": bool(rr and rr / ours >= 4),
            "jct_within_1_25x_of_oracle": bool(oracle and ours / oracle <= 1.25),
            # None when KV was never oversubscribed: the goal does not apply (there is no thrash to beat).
            "beats_session_hash_oversubscribed": bool(sh and ours < sh) if oversubscribed else None,
        }
    return out
