"""A processor that goes idle still writes its state changelog on time.

The shell coalesces state changes and writes them to the changelogs about once an interval
(agentstream/kafka/runtime.py). What the last inputs before a quiet spell staged must go out while
the process is idle: held until the next input, it went out as one large flush in front of that
input's journal writes (same producer connection), which stalled the first step of the next run by
tens of milliseconds (bench/step_overhead.py --runs 1). Runs the real shell over the broker twin.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentstream.kafka.changelog import MARKER_KEY, decode_marker
from tests.kafka_twin import CrashPlan
from tests.unit.test_commit_order import CHANGELOGS, JOURNAL, PARTITIONS, World

# Long enough that every run is applied before the first flush is due, even on a loaded machine.
INTERVAL_S = 1.0


def _markers(world: World) -> dict[tuple[str, int], int]:
    """The last offset marker of each (core, partition) changelog."""
    out: dict[tuple[str, int], int] = {}
    for core, topic in CHANGELOGS.items():
        for msg in world.broker.records(topic):
            if msg.key() == MARKER_KEY:
                out[(core, msg.partition() or 0)] = decode_marker(msg.value() or b"")
    return out


async def test_changes_staged_before_a_quiet_spell_reach_the_changelog_without_further_input(tmp_path: Path) -> None:
    world = World(tmp_path, changelog_interval_s=INTERVAL_S)
    plan = CrashPlan()  # no crash
    runtime = world.runtime(plan)
    await world.drive(runtime, plan)
    assert _markers(world) == {}  # applied, committed, not yet due for the changelog
    # Idle: no input at all, only the loop's periodic wake-ups once the interval has passed.
    await asyncio.sleep(INTERVAL_S + 0.05)
    await runtime._step()
    assert runtime._flushing is not None
    await asyncio.wait({runtime._flushing})
    ends = {p: len(world.broker.log(JOURNAL, p)) for p in range(PARTITIONS)}
    assert _markers(world) == {(core, p): ends[p] for core in CHANGELOGS for p in range(PARTITIONS)}
    runtime._close_consumer()
