"""The KV-affinity dispatcher without a broker: the pure policies, the core's replay and the metrics
parser (one run through the real processor: tests/integration/test_kv_dispatcher.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from agentstream import ids
from agentstream.events import (
    LlmCallCompleted,
    LlmCallDispatched,
    LlmCallRequested,
    ReplicaStatus,
    RunCompleted,
    RunEvent,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.kafka.state import PartitionStore
from agentstream.processors.kv_dispatcher.core import KvDispatcherCore, estimate_prompt
from agentstream.processors.kv_dispatcher.hashring import HashRing
from agentstream.processors.kv_dispatcher.policies import Dispatcher
from agentstream.processors.kv_dispatcher.prober import load_from_metrics, parse_targets
from agentstream.processors.kv_dispatcher.state import (
    Dispatch,
    DispatchConfig,
    DispatchState,
    Pin,
    Queued,
    Rejected,
    Replica,
)

TTL = 30_000


def dispatcher(replicas: int = 3, capacity: int = 0, policy: str = "agentstream", **config: int | float) -> Dispatcher:
    state = DispatchState(DispatchConfig(pin_ttl_ms=TTL, **config))  # type: ignore[arg-type]
    for i in range(replicas):
        state.set_replica(Replica(f"r{i}", f"http://r{i}", capacity=capacity))
    return Dispatcher(policy, state)


def turn(d: Dispatcher, session: str, step: int, now: int, prompt: int = 1000) -> Dispatch:
    decision = d.request(f"{session}/s{step}", session, prompt, now)
    assert isinstance(decision, Dispatch), decision
    return decision


def test_a_session_returns_to_its_replica_while_pinned() -> None:
    d = dispatcher()
    first = turn(d, "run-a", 1, 0)
    assert "bounded-load hash" in first.reason
    d.state.finish("run-a/s1", "run-a", 2000, 1_000)
    second = turn(d, "run-a", 2, 5_000)
    assert second.replica == first.replica and second.reason.startswith(f"pinned to {first.replica} (ttl 26s left")


def test_pin_expires_after_its_ttl_and_a_running_tool_holds_it() -> None:
    d = dispatcher()
    turn(d, "a", 1, 0)
    d.state.finish("a/s1", "a", 2000, 0)
    d.tick(TTL - 1)
    assert "a" in d.state.pins
    d.tick(TTL)
    assert "a" not in d.state.pins and d.state.counters.expired == 1
    assert "new session" in turn(d, "a", 2, TTL + 1).reason

    turn(d, "b", 1, 0)
    d.state.finish("b/s1", "b", 2000, 0)
    d.state.tool_started("b", 10)
    d.tick(10 * TTL)  # a long tool: the pin stays while it runs
    assert "b" in d.state.pins and "tool running" in turn(d, "b", 99, 10 * TTL).reason
    d.state.finish("b/s99", "b", 3000, 10 * TTL)
    d.state.tool_finished("b", 10 * TTL + 5)  # the TTL restarts when the tool is done
    d.tick(11 * TTL)
    assert "b" in d.state.pins
    d.tick(11 * TTL + 5)
    assert "b" not in d.state.pins


def test_bounded_load_spreads_new_sessions() -> None:
    d = dispatcher(replicas=4)
    for i in range(200):
        turn(d, f"s{i}", 1, i)
    loads = d.state.sessions_by_replica()
    assert max(loads.values()) <= -(-125 * 201 // 400)  # ceil(1.25 * (total + 1) / n)
    plain = HashRing([f"r{i}" for i in range(4)])
    owners = [plain.owner(f"s{i}") for i in range(200)]
    assert max(owners.count(f"r{i}") for i in range(4)) > max(loads.values())  # the bound did something


def test_hash_ring_is_stable_and_skips_full_or_unhealthy_nodes() -> None:
    ring = HashRing(["r0", "r1", "r2"])
    assert HashRing(["r2", "r1", "r0"]).owner("x") == ring.owner("x")  # no per-process salt
    owner = ring.owner("x")
    assert owner is not None
    others = [n for n in ("r0", "r1", "r2") if n != owner]
    assert ring.pick("x", {owner: 10}, {"r0", "r1", "r2"}) != owner  # full: walk on
    assert ring.pick("x", {}, set(others)) in others  # unhealthy: skipped
    assert ring.pick("x", {}, set()) is None


def test_a_full_replica_queues_new_sessions_instead_of_evicting_running_ones() -> None:
    # Two replicas of 20k tokens; a session at 8k that grows 1k a turn counts 8k + 2 turns = 10k (the
    # near-term footprint alone: the long-run check is off).
    d = dispatcher(replicas=2, capacity=20_000, high_watermark=1.0, growth_prior_tokens=1_000, lookahead_turns=2,
                   session_watermark=0)  # fmt: skip
    for s in ("a", "b", "c", "d"):
        turn(d, s, 1, 0)
        d.state.finish(f"{s}/s1", s, 8000, 0)
        d.state.tool_started(s, 0)  # busy: a running tool's session is never dropped
    assert d.state.sessions_by_replica() == {"r0": 2, "r1": 2}
    waiting = d.request("e/s1", "e", 1000, 1)
    assert isinstance(waiting, Queued) and "KV full on every replica" in waiting.reason
    assert set(d.state.pins) == {"a", "b", "c", "d"}
    later = d.request("f/s1", "f", 1000, 2)
    assert isinstance(later, Queued) and "behind 1 waiting" in later.reason
    assert d.tick(3) == []
    d.state.release("a")  # a run ended: its 10k are free, room for both new 1k sessions (3k each)
    admitted = d.tick(4)
    assert [x.call_id for x in admitted] == ["e/s1", "f/s1"] and "queued" in admitted[0].reason
    bounded = dispatcher(replicas=1, capacity=10_000, growth_prior_tokens=3_000, max_queue=1, lookahead_turns=2,
                         session_watermark=0)  # fmt: skip
    turn(bounded, "a", 1, 0)
    assert isinstance(bounded.request("b/s1", "b", 1000, 0), Queued)
    assert isinstance(bounded.request("c/s1", "c", 1000, 0), Rejected) and bounded.state.counters.rejected == 1


def test_a_session_that_waited_too_long_goes_over_the_estimate_only_when_asked_to() -> None:
    patient = dispatcher(replicas=2, capacity=10_000, growth_prior_tokens=3_000, lookahead_turns=2,
                         session_watermark=0)  # fmt: skip
    turn(patient, "a", 1, 0)
    turn(patient, "b", 1, 0)
    patient.state.tool_started("a", 0)  # both busy: no idle pin to drop, however long c waits
    patient.state.tool_started("b", 0)
    assert isinstance(patient.request("c/s1", "c", 1000, 10), Queued)
    assert patient.tick(10 + 3_600_000) == []  # by default it waits for room, however long
    d = dispatcher(replicas=2, capacity=10_000, growth_prior_tokens=3_000, lookahead_turns=2, session_watermark=0,
                   max_queue_wait_ms=10_000)  # fmt: skip
    turn(d, "a", 1, 0)
    turn(d, "b", 1, 0)  # each counts 1k + 2 x 3k = 7k: one per replica
    d.state.finish("b/s1", "b", 2_000, 0)  # b's replica has 1k less headroom now
    d.state.tool_started("b", 0)  # and b is busy: no idle pin to drop
    assert isinstance(d.request("c/s1", "c", 1000, 10), Queued)
    wait = d.state.config.max_queue_wait_ms
    assert d.tick(10 + wait - 1) == []
    [late] = d.tick(10 + wait)  # queueing longer would cost it more than a re-prefill costs another
    assert late.replica == d.state.pins["a"].replica and "over its KV estimate" in late.reason
    assert d.state.counters.overcommitted == 1


def test_under_pressure_the_coldest_idle_pins_go_first() -> None:
    d = dispatcher(replicas=1, capacity=30_000, high_watermark=1.0, growth_prior_tokens=1_000, lookahead_turns=2,
                   session_watermark=0)  # fmt: skip
    for s, ended in (("old", 1_000), ("recent", 9_000), ("expired", 0)):
        turn(d, s, 1, 0)
        d.state.finish(f"{s}/s1", s, 8000, ended)
    d.state.pins["expired"].expires_ms = 0
    placed = turn(d, "new", 1, 20_000)
    assert "after dropping 1 idle pins" in placed.reason and set(d.state.pins) == {"old", "recent", "new"}
    d.state.finish("new/s1", "new", 8000, 20_000)
    d.state.tool_started("recent", 20_000)
    turn(d, "newer", 1, 21_000)
    # "old" (idle, least recently used) went; "recent" runs a tool; "new" ended its turn just now.
    assert set(d.state.pins) == {"recent", "new", "newer"}


def test_a_session_counts_its_context_plus_its_projected_growth() -> None:
    d = dispatcher(replicas=1, capacity=1_000_000, growth_prior_tokens=1_000, lookahead_turns=2)
    st = d.state
    assert st.new_session_need(2_000) == 4_000  # a new 2k session: 2k + 2 turns at the prior 1k
    turn(d, "young", 1, 0, prompt=2_000)
    assert st.footprint(st.pins["young"]) == 4_000  # not a typical session's size: it is 2k now
    # A session that grows 3k a turn, and one that grows 200 tokens a turn, six turns each.
    for step, (fast, slow) in enumerate(zip(range(2_000, 20_000, 3_000), range(2_000, 3_200, 200), strict=True), 1):
        for s, ctx in (("fast", fast), ("slow", slow)):
            turn(d, s, step, step, prompt=ctx)
            st.finish(f"{s}/s{step}", s, ctx, step, cached_tokens=0)
    pool = st.mean_growth()
    assert 1_000 < pool < 3_000  # the pool-wide mean moved from the prior towards what it saw
    # Each projects its own growth (5 steps), shrunk towards the pool's for the 2 turns it is worth.
    assert st.session_growth(st.pins["fast"]) == pytest.approx((15_000 + 2 * pool) / 7)
    assert st.footprint(st.pins["fast"]) == 17_000 + int(2 * (15_000 + 2 * pool) / 7)
    assert st.footprint(st.pins["slow"]) == 3_000 + int(2 * (1_000 + 2 * pool) / 7)
    # The record keeps what growth is learned from, and reads records that predate it.
    pin = st.pins["fast"]
    assert Pin.from_json(pin.to_json()) == pin
    old = {k: v for k, v in pin.to_json().items() if k not in ("first", "lctx")}
    assert Pin.from_json(old).first_context == 0


def test_the_long_run_check_counts_sessions_at_the_mean_session_size() -> None:
    # Each replica of 100k takes sessions at the mean session size (10k) up to half its capacity:
    # five, however little KV they use now, because young sessions grow.
    d = dispatcher(replicas=2, capacity=100_000, session_watermark=0.5, session_reserve_tokens=10_000)
    for i in range(10):
        turn(d, f"s{i}", 1, 0, prompt=2_000)
    assert d.state.sessions_by_replica() == {"r0": 5, "r1": 5}
    assert d.state.free_kv("r0") > 50_000  # the near-term footprint alone would admit more
    assert isinstance(d.request("late/s1", "late", 2_000, 1), Queued)
    for step, ctx in enumerate((4_000, 6_000, 8_000), 1):  # a session whose turns averaged 6k
        if step > 1:
            turn(d, "s0", step, step, prompt=ctx)
        d.state.finish(f"s0/s{step}", "s0", ctx, step)
    d.state.release("s0")  # its slot is free, and the mean session size moves towards 6k
    assert d.state.mean_session() == pytest.approx(10_000 + (6_000 - 10_000) / 5)  # prior worth 4
    [admitted] = d.tick(10)
    assert admitted.call_id == "late/s1"
    # A replica too small for even one session of the mean size does not make a session wait forever.
    tiny = dispatcher(replicas=1, capacity=10_000, session_watermark=0.5, session_reserve_tokens=10_000)
    assert "larger than any replica's KV" in turn(tiny, "a", 1, 0).reason


def test_a_new_session_goes_to_the_replica_with_the_most_free_kv() -> None:
    d = dispatcher(replicas=3, capacity=100_000, growth_prior_tokens=1_000)
    for s, replica, ctx in (("a", "r0", 50_000), ("b", "r1", 20_000), ("c", "r2", 60_000)):
        d.state.assign(f"{s}/s1", s, replica, ctx, 0)
        d.state.finish(f"{s}/s1", s, ctx, 0)
    placed = turn(d, "new", 1, 1, prompt=2_000)
    assert placed.replica == "r1" and "most free KV" in placed.reason
    # Without the replicas' capacities free KV is unknown: the bounded-load hash decides.
    blind = dispatcher(replicas=3)
    assert "bounded-load hash" in turn(blind, "new", 1, 1).reason


def test_evictions_seen_in_cached_tokens_shrink_the_replicas_room() -> None:
    d = dispatcher(replicas=1, capacity=100_000, high_watermark=1.0, growth_prior_tokens=1_000)
    st, c = d.state, d.state.config
    turn(d, "a", 1, 0)
    st.finish("a/s1", "a", 10_000, 0, cached_tokens=0)  # a first turn: nothing was expected cached
    assert st.room("r0") == 100_000
    turn(d, "a", 2, 1, prompt=11_000)
    st.finish("a/s2", "a", 12_000, 1, cached_tokens=10_000)  # its last turn's context was still there
    assert st.room_factor["r0"] == 1.0 and st.counters.cache_misses == 0
    turn(d, "a", 3, 2, prompt=13_000)
    st.finish("a/s3", "a", 14_000, 2, cached_tokens=500)  # the replica evicted a session counted as held
    assert st.room_factor["r0"] == pytest.approx(1 - c.miss_backoff) and st.counters.cache_misses == 1
    assert st.room("r0") == int(100_000 * (1 - c.miss_backoff))
    for step in range(4, 4 + 200):  # hits give the room back, slowly
        turn(d, "a", step, step, prompt=14_000)
        st.finish(f"a/s{step}", "a", 14_000, step, cached_tokens=14_000)
    assert st.room_factor["r0"] == 1.0
    for step in range(300, 400):  # a run of misses never shrinks it below the floor
        turn(d, "a", step, step, prompt=14_000)
        st.finish(f"a/s{step}", "a", 14_000, step, cached_tokens=0)
    assert st.room_factor["r0"] == pytest.approx(c.min_room_factor)
    # A server that never reports cached tokens (always 0) is not taken to be evicting.
    mute = dispatcher(replicas=1, capacity=100_000)
    for step in range(1, 10):
        turn(mute, "a", step, step, prompt=1_000 * step)
        mute.state.finish(f"a/s{step}", "a", 1_000 * step, step, cached_tokens=0)
    assert mute.state.room("r0") == int(100_000 * mute.state.config.high_watermark)


def test_unhealthy_replica_gets_no_new_sessions_and_its_sessions_move() -> None:
    d = dispatcher(replicas=2)
    first = turn(d, "a", 1, 0)
    d.state.finish("a/s1", "a", 2000, 0)
    d.state.set_replica(Replica(first.replica, "http://x", healthy=False))
    moved = turn(d, "a", 2, 1)
    assert moved.replica != first.replica and f"{first.replica} unhealthy" in moved.reason
    assert all(turn(d, f"n{i}", 1, 2).replica == moved.replica for i in range(10))


def test_baselines_ignore_affinity() -> None:
    rr = dispatcher(policy="round_robin")
    assert [turn(rr, "a", i, i).replica for i in range(3)] == ["r0", "r1", "r2"]
    ll = dispatcher(policy="least_loaded")
    assert [turn(ll, f"s{i}", 1, 0).replica for i in range(3)] == ["r0", "r1", "r2"]
    sh = dispatcher(policy="session_hash")
    assert len({turn(sh, "a", i, i).replica for i in range(5)}) == 1


def test_prompt_estimate() -> None:
    first = orjson.dumps([{"role": "user", "content": "x" * 400}]).decode()
    assert estimate_prompt(0, 0, first) == (len(first) // 4, 1)
    later = orjson.dumps([{"role": "user", "content": "x" * 400}, {"role": "tool", "content": "y" * 80}]).decode()
    assert estimate_prompt(500, 1, later) == (520, 2)


def journal(run: str, steps: int) -> Iterator[RunEvent]:
    for step in range(1, steps + 1):
        call = ids.llm_call_id(run, step)
        msgs = orjson.dumps([{"role": "user", "content": "hi " * 100}] * step).decode()
        yield LlmCallRequested(ids.requested_event_id(call), run, "t", step, call, "m", msgs, "[]", 100)
        yield LlmCallCompleted(ids.completed_event_id(call), run, "t", step, call, "p", "m", "", "[]", "stop",
                               1000 * step, 100, 0, 1.0, 1)  # fmt: skip
        tool = ids.tool_call_id(run, step, 0)
        yield ToolCallRequested(ids.requested_event_id(tool), run, "t", step, tool, "tc", "x", "{}", tool, 1000)
        if step < steps:
            yield ToolCallCompleted(ids.completed_event_id(tool), run, "t", step, tool, "x", tool, "ok", False, 1.0)


def test_replay_rebuilds_the_same_state(tmp_path: Path) -> None:
    statuses = {f"r{i}": ReplicaStatus(f"replica/r{i}", f"r{i}", f"http://r{i}", True, 100_000, 0, 0, 0, 0)
                for i in range(3)}  # fmt: skip

    def core() -> KvDispatcherCore:
        return KvDispatcherCore(Dispatcher("agentstream", DispatchState()), lambda: statuses, lambda: 1_000)

    live, store = core(), PartitionStore(tmp_path / "live")
    recorded: list[RunEvent] = []
    for event in [e for run in ("a", "b", "c") for e in journal(run, 3)] + list(journal("d", 1)):
        recorded.append(event)
        for out in live.apply(store, event, live=True).emit:
            assert isinstance(out, LlmCallDispatched) and out.event_id == f"{out.call_id}/dispatched"
            recorded.append(out)
            live.apply(store, out, live=True)  # read back, as the journal would deliver it
    recorded.append(RunCompleted(ids.terminal_id("c"), "c", "t", 3, "", ""))
    live.apply(store, recorded[-1], live=True)
    assert sum(isinstance(e, LlmCallDispatched) for e in recorded) == 10

    replayed, fresh = core(), PartitionStore(tmp_path / "replayed")
    assert all(not replayed.apply(fresh, e, live=False).emit for e in recorded)  # replay never acts
    assert not replayed.resume(fresh).emit  # every call was dispatched: nothing pending
    # A request whose dispatch never reached the journal (a crash in between) is dispatched on resume.
    pending = next(e for e in journal("e", 1) if isinstance(e, LlmCallRequested))
    again, other = core(), PartitionStore(tmp_path / "again")
    for event in [*recorded, pending]:
        again.apply(other, event, live=False)
    [late] = again.resume(other).emit
    assert isinstance(late, LlmCallDispatched) and late.call_id == pending.call_id and late.tenant_id == "t"

    def view(c: KvDispatcherCore) -> dict[str, tuple[str, int, int, int]]:
        return {s: (p.replica, p.context_tokens, p.in_flight, p.tool_running) for s, p in c.state.pins.items()}

    assert view(replayed) == view(live) and set(view(live)) == {"a", "b", "d"}
    assert list(replayed.state.queue) == list(live.state.queue) == []
    # A third core that only has the live store (no replay) picks up the same pins.
    restarted = core()
    restarted.resume(store)
    assert {s: v[:2] for s, v in view(restarted).items()} == {s: v[:2] for s, v in view(live).items()}


VLLM = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.25
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",gpu_memory_utilization="0.9",num_cpu_blocks="None",num_gpu_blocks="27136",prefix_caching_hash_algo="builtin"} 1.0
vllm:prefix_cache_queries_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 120000.0
vllm:prefix_cache_hits_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 90000.0
"""


SGLANG = """# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="Qwen/Qwen2.5-7B-Instruct",tp_rank="0"} 3.0
sglang:num_queue_reqs{model_name="Qwen/Qwen2.5-7B-Instruct",tp_rank="0"} 1.0
sglang:token_usage{model_name="Qwen/Qwen2.5-7B-Instruct",tp_rank="0"} 0.5
sglang:max_total_num_tokens{model_name="Qwen/Qwen2.5-7B-Instruct",tp_rank="0"} 200000.0
sglang:cache_hit_rate{model_name="Qwen/Qwen2.5-7B-Instruct",tp_rank="0"} 0.4
"""


def test_metrics_parser_reads_vllm_and_sglang() -> None:
    v = load_from_metrics(VLLM)
    assert (v.running, v.waiting, v.capacity_tokens, v.used_tokens) == (7, 2, 27136 * 16, 27136 * 4)
    s = load_from_metrics(SGLANG)
    assert (s.running, s.waiting, s.capacity_tokens, s.used_tokens) == (3, 1, 200_000, 100_000)
    assert load_from_metrics("garbage\n") == load_from_metrics("")
    assert [t.replica for t in parse_targets("r0=http://a:1, r1=http://b:2/")] == ["r0", "r1"]
    with pytest.raises(ValueError):
        parse_targets("http://a:1")
