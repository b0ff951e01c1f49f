"""The replica emulator's models without a server: its KV cache bookkeeping and its timing model
(its HTTP face over real uvicorn servers: tests/integration/test_replica_emulator.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from agentstream.doubles.replica_emulator import (
    DEFAULT_8B_H100,
    UNLIMITED_KV_TOKENS,
    KvCache,
    ReplicaEngine,
    ReplicaProfile,
    RequestTooLarge,
)
from agentstream.doubles.replica_emulator.stepclock import StepClock

# -- KvCache ---------------------------------------------------------------------------------


def _idle(cache: KvCache, session: str, tokens: int) -> None:
    assert cache.reserve(session, tokens)
    cache.release(session, tokens)


def test_cached_tokens_is_the_resident_prefix_capped_by_the_prompt() -> None:
    cache = KvCache(1000)
    assert cache.cached_tokens("a", 50) == 0
    _idle(cache, "a", 100)
    assert cache.cached_tokens("a", 50) == 50
    assert cache.cached_tokens("a", 300) == 100
    assert cache.used_tokens == 100 and cache.sessions == ("a",)


def test_reserve_evicts_least_recently_used_idle_sessions() -> None:
    cache = KvCache(100)
    _idle(cache, "a", 40)
    _idle(cache, "b", 40)
    _idle(cache, "a", 40)  # a is now the most recently used
    assert cache.sessions == ("b", "a")
    assert cache.reserve("c", 40)
    assert cache.sessions == ("a", "c")
    assert cache.used_tokens == 80 and cache.counters.evictions == 1


def test_reserve_never_evicts_in_flight_sessions_and_fails_without_side_effects() -> None:
    cache = KvCache(100)
    assert cache.reserve("busy", 60)
    _idle(cache, "idle", 30)
    assert not cache.reserve("big", 80)  # would need the busy session's blocks
    assert cache.sessions == ("busy", "idle") and cache.used_tokens == 90 and cache.counters.evictions == 0
    assert not cache.evict("busy")
    assert cache.reserve("mid", 40)  # evicting the idle session is enough
    assert cache.sessions == ("busy", "mid")
    cache.release("busy", 1000)  # release never grows past the reservation
    assert cache.resident_tokens("busy") == 60 and cache.used_tokens == 100


def test_a_session_grows_in_place_without_evicting_itself() -> None:
    cache = KvCache(100)
    _idle(cache, "a", 60)
    assert cache.reserve("a", 90)
    assert cache.sessions == ("a",) and cache.used_tokens == 90 and cache.counters.evictions == 0


def test_parallel_requests_of_one_session_keep_it_in_flight_until_the_last_ends() -> None:
    cache = KvCache(100)
    assert cache.reserve("a", 50)
    assert cache.reserve("a", 30)  # does not shrink what the first request holds
    assert cache.resident_tokens("a") == 50
    cache.release("a", 30)
    assert cache.in_flight("a") and not cache.evict("a")
    cache.release("a", 50)
    assert not cache.in_flight("a") and cache.evict("a") and cache.used_tokens == 0
    with pytest.raises(KeyError):
        cache.release("a", 1)


def test_admit_counts_hits_misses_and_recomputation_after_eviction() -> None:
    cache = KvCache(100)
    assert cache.admit("a", 50, 60) == 0
    cache.release("a", 60)
    assert cache.admit("a", 80, 90) == 60  # second turn: the first turn's prompt + output are cached
    cache.release("a", 90)
    assert cache.admit("b", 50, 60) == 0  # evicts a, which held 90
    cache.release("b", 60)
    assert cache.admit("a", 70, 80) == 0  # a comes back cold: its 70-token prefix is recomputed
    c = cache.counters
    assert (c.requests, c.hits, c.misses, c.evictions) == (4, 1, 3, 2)
    assert c.cached_tokens == 60 and c.prefilled_tokens == 50 + 20 + 50 + 70
    assert c.recomputed_tokens == 70
    assert cache.admit("huge", 100, 101) is None and cache.counters.requests == 4


def test_reset_forgets_idle_sessions_but_keeps_in_flight_ones() -> None:
    cache = KvCache(100)
    _idle(cache, "idle", 30)
    assert cache.admit("busy", 10, 20) == 0
    cache.reset()
    assert cache.sessions == ("busy",) and cache.used_tokens == 20 and cache.counters.requests == 0
    cache.release("busy", 20)
    assert cache.used_tokens == 20


def test_unlimited_cache_never_evicts() -> None:
    cache = KvCache()
    assert cache.unlimited and cache.capacity_tokens == UNLIMITED_KV_TOKENS
    for i in range(100):
        _idle(cache, f"s{i}", 1_000_000)
    assert len(cache.sessions) == 100 and cache.counters.evictions == 0


def test_default_profile_matches_the_documented_calibration() -> None:
    # 53 GiB of KV at 128 KiB per token, a whole number of 16-token blocks.
    assert DEFAULT_8B_H100.kv_capacity_tokens == 53 * 2**30 // (2 * 32 * 8 * 128 * 2)
    assert DEFAULT_8B_H100.kv_capacity_tokens % 16 == 0
    assert 1 / DEFAULT_8B_H100.prefill_s_per_token == pytest.approx(15_000)
    assert DEFAULT_8B_H100.prefill_chunk_tokens == 2048  # vLLM's chunked-prefill step budget
    with pytest.raises(ValueError):
        ReplicaProfile(kv_capacity_tokens=0, prefill_s_per_token=0, decode_s_per_token=0, max_running=1)
    with pytest.raises(ValueError):
        DEFAULT_8B_H100.with_changes(prefill_chunk_tokens=-1)


# -- ReplicaEngine timing ----------------------------------------------------------------------


def _profile(**overrides: Any) -> ReplicaProfile:
    base: dict[str, Any] = {
        "kv_capacity_tokens": 1_000_000,
        "prefill_s_per_token": 0.001,
        "decode_s_per_token": 0.001,
        "max_running": 8,
        "time_scale": 0.05,
    }
    return ReplicaProfile(**(base | overrides))


async def test_prefill_costs_only_uncached_tokens() -> None:
    engine = ReplicaEngine(_profile())
    first = await engine.generate("s", 2000, 10)  # 2000 x 1 ms x 0.05 = 100 ms of prefill
    assert first.cached_tokens == 0 and first.prefill_tokens == 2000
    assert first.ttft_s >= 0.1 and first.total_s >= first.ttft_s
    second = await engine.generate("s", 2050, 10)
    assert second.cached_tokens == 2010 and second.prefill_tokens == 40
    assert second.ttft_s < first.ttft_s / 3
    assert engine.counters.hits == 1 and engine.completed == 2 and engine.generated_tokens == 20


async def test_prefills_are_serialized_but_decodes_overlap() -> None:
    engine = ReplicaEngine(_profile(prefill_s_per_token=0.001, decode_s_per_token=0.002))
    start = time.monotonic()
    # Each: 1000 tokens of prefill = 50 ms; 500 output tokens = 50 ms of decode.
    a, b = await asyncio.gather(engine.generate("a", 1000, 500), engine.generate("b", 1000, 500))
    elapsed = time.monotonic() - start
    assert a.ttft_s >= 0.05 and b.ttft_s >= 0.1  # b's prefill waited for a's
    assert elapsed < 0.145 + 0.1  # decodes overlapped: ~150 ms, not ~200 ms (slack for a loaded machine)


async def test_a_prefill_slows_every_decode_on_its_replica_by_its_compute_time() -> None:
    # a decodes 1,000 tokens (1 ms each x 0.05 = 50 ms alone); b arrives 10 ms in with a 1,000-token
    # prompt (50 ms of compute) in chunks of 100: every step a decodes in meanwhile also carries a chunk.
    async def pair(chunk: int) -> tuple[float, float]:
        engine = ReplicaEngine(
            _profile(prefill_s_per_token=0.001, decode_s_per_token=0.001, prefill_chunk_tokens=chunk)
        )
        a = asyncio.create_task(engine.generate("a", 10, 1000))
        await asyncio.sleep(0.01)
        b = await engine.generate("b", 1000, 10)
        return (await a).total_s, b.ttft_s

    shared_a, shared_b = await pair(100)
    free_a, free_b = await pair(0)
    assert free_a < 0.08  # the idealised engine: a's decode ignores b's prefill (~50 ms)
    assert shared_a >= 0.095  # ~50 ms of decode + ~50 ms stalled behind b's chunks
    # b's prefill pays one ITL per chunk for the decode riding along: 10 x 0.05 ms on 50 ms.
    assert shared_b >= 0.0505 and free_b >= 0.05


async def test_decode_steps_follow_the_batch_as_it_changes() -> None:
    # ITL doubles as the batch fills (slowdown 1.0, max_running 2): a alone runs 1 ms steps until b
    # joins, then 2 ms steps, and back to 1 ms once b is done.
    engine = ReplicaEngine(
        _profile(prefill_s_per_token=0.0, decode_s_per_token=0.001, max_running=2, decode_batch_slowdown=1.0)
    )
    a = asyncio.create_task(engine.generate("a", 10, 2000))  # 100 ms alone at 0.05 ms a step
    await asyncio.sleep(0.02)
    b = await engine.generate("b", 10, 200)  # 200 steps at 0.1 ms while both run: ~20 ms
    first = await a
    assert b.total_s >= 0.02
    assert first.total_s >= 0.105  # ~110 ms: the ~200 steps it shared with b cost twice as long


async def test_step_clock_wakes_each_waiter_at_its_own_count_across_rate_changes() -> None:
    clock = StepClock(0.001)
    loop = asyncio.get_running_loop()
    start = loop.time()
    woke: dict[str, float] = {}

    async def waiter(name: str, steps: float) -> None:
        await clock.wait_steps(steps)
        woke[name] = loop.time() - start

    tasks = [asyncio.create_task(waiter("early", 10)), asyncio.create_task(waiter("late", 40))]
    cancelled = asyncio.create_task(waiter("cancelled", 20))
    await asyncio.sleep(0.015)  # 15 steps at 1 ms: early is done
    cancelled.cancel()
    clock.set_step_s(0.002)  # the remaining 25 steps of late take 50 ms
    await asyncio.gather(*tasks)
    assert woke["early"] == pytest.approx(0.010, abs=0.008)
    assert woke["late"] >= 0.015 + 0.05 - 0.002
    assert "cancelled" not in woke and clock.steps() >= 40
    with pytest.raises(ValueError):
        clock.set_step_s(0)


async def test_requests_beyond_max_running_wait_in_fifo_order() -> None:
    engine = ReplicaEngine(_profile(max_running=2, prefill_s_per_token=0.0, decode_s_per_token=0.02))
    # 100 tokens x 20 ms x 0.05 = 100 ms each.
    tasks = [asyncio.create_task(engine.generate(f"s{i}", 10, 100)) for i in range(3)]
    await asyncio.sleep(0.02)
    assert (engine.running, engine.waiting) == (2, 1)
    a, b, c = await asyncio.gather(*tasks)
    assert a.queued_s < 0.01 and b.queued_s < 0.01
    assert c.queued_s >= 0.09 and c.total_s >= 0.19
    assert (engine.running, engine.waiting) == (0, 0)


async def test_a_request_waits_until_its_kv_reservation_fits_and_blocks_those_behind() -> None:
    engine = ReplicaEngine(_profile(kv_capacity_tokens=1000, prefill_s_per_token=0.0, decode_s_per_token=0.02))
    big_a = asyncio.create_task(engine.generate("a", 500, 100))  # 600 tokens for 100 ms
    await asyncio.sleep(0)
    big_b = asyncio.create_task(engine.generate("b", 500, 100))  # cannot fit next to a
    small = asyncio.create_task(engine.generate("c", 10, 10))  # would fit, but must not overtake b
    await asyncio.sleep(0.02)
    assert (engine.running, engine.waiting) == (1, 2)
    a, b, c = await asyncio.gather(big_a, big_b, small)
    # Both were admitted when a ended; each queued from its own (slightly later) arrival.
    assert b.queued_s >= a.total_s - 0.005 and c.queued_s >= a.total_s - 0.005
    assert engine.counters.evictions == 1  # b evicted the idle a


async def test_cancelled_waiting_request_leaves_the_queue() -> None:
    engine = ReplicaEngine(_profile(max_running=1, prefill_s_per_token=0.0, decode_s_per_token=0.02))
    running = asyncio.create_task(engine.generate("a", 10, 50))
    waiting = asyncio.create_task(engine.generate("b", 10, 50))
    await asyncio.sleep(0.01)
    assert engine.waiting == 1
    waiting.cancel()
    running.cancel()
    await asyncio.gather(running, waiting, return_exceptions=True)
    assert (engine.running, engine.waiting, engine.cache.used_tokens) == (0, 0, 60)
    assert not engine.cache.in_flight("a")


async def test_a_request_larger_than_the_cache_is_refused() -> None:
    engine = ReplicaEngine(_profile(kv_capacity_tokens=100))
    with pytest.raises(RequestTooLarge):
        await engine.generate("s", 90, 20)
