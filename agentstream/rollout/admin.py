"""A rollout's record on the control topic (`RolloutSet`, keyed "rollout/orchestrator": one
rollout at a time, its latest state kept) and the operator's moves: start, promote, roll back."""

from __future__ import annotations

import time

import orjson

from agentstream.config import Settings
from agentstream.events import Event, RolloutSet
from agentstream.kafka.table import TopicTable, put_record
from agentstream.rollout.rings import PROMOTED, RINGS, ROLLED_BACK, ROLLING, Rollout
from agentstream.topics import CONTROL, load_topics

ROLLOUT_KEY = "rollout/orchestrator"


class RolloutError(ValueError):
    """A rollout move that cannot be made: the message says why."""


def rollout_of(event: RolloutSet) -> Rollout:
    return Rollout(event.candidate, event.baseline, event.ring, event.status, tuple(event.internal_tenants),
                   event.reason)  # fmt: skip


class RolloutHolder:
    """The rollout in force, from the control topic's records as a reader applies them (the
    orchestrator's catalog reader feeds one: no extra consumer of the control topic)."""

    def __init__(self) -> None:
        self.rollout: Rollout | None = None

    def apply(self, event: Event) -> None:
        if isinstance(event, RolloutSet):
            self.rollout = rollout_of(event)


class RolloutReader(TopicTable):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, [load_topics(settings.topic_prefix)[CONTROL].name])
        self.holder = RolloutHolder()

    def _on_event(self, event: Event) -> None:
        self.holder.apply(event)


async def read_rollout(settings: Settings) -> Rollout | None:
    async with RolloutReader(settings) as reader:
        return reader.holder.rollout


async def _put(settings: Settings, rollout: Rollout, by: str) -> Rollout:
    event = RolloutSet(ROLLOUT_KEY, rollout.candidate, rollout.baseline, rollout.ring, rollout.status,
                       list(rollout.internal_tenants), rollout.reason, by, int(time.time() * 1000))  # fmt: skip
    await put_record(settings, load_topics(settings.topic_prefix)[CONTROL].name, event)
    return rollout


async def start_rollout(settings: Settings, candidate: str, baseline: str, internal: list[str], by: str) -> Rollout:
    if not candidate or not baseline or candidate == baseline:
        raise RolloutError("a rollout needs a candidate and a different baseline")
    held = await read_rollout(settings)
    if held is not None and held.status == ROLLING:
        raise RolloutError(f"a rollout of {held.candidate} is in progress (ring {held.ring_name}): promote it fully "
                           "or roll it back first")  # fmt: skip
    return await _put(settings, Rollout(candidate, baseline, 1, ROLLING, tuple(internal), "started"), by)


async def promote(settings: Settings, by: str) -> Rollout:
    held = await read_rollout(settings)
    if held is None or held.status != ROLLING:
        raise RolloutError("no rollout in progress to promote")
    if held.ring >= len(RINGS):
        return await _put(settings, Rollout(held.candidate, held.baseline, held.ring, PROMOTED,
                                            held.internal_tenants, "promoted to every ring"), by)  # fmt: skip
    nxt = held.ring + 1
    return await _put(settings, Rollout(held.candidate, held.baseline, nxt, ROLLING, held.internal_tenants,
                                        f"promoted to ring {RINGS[nxt - 1]}"), by)  # fmt: skip


async def roll_back(settings: Settings, reason: str, by: str, *, candidate: str | None = None) -> Rollout | None:
    """New runs back on the baseline. With `candidate`, only if that is what is rolling (an alert
    about another version rolls nothing back); returns None when nothing was rolled back."""
    held = await read_rollout(settings)
    if held is None or held.status == ROLLED_BACK or (candidate is not None and held.candidate != candidate):
        return None
    return await _put(settings, Rollout(held.candidate, held.baseline, held.ring, ROLLED_BACK, held.internal_tenants,
                                        reason), by)  # fmt: skip


def describe(rollout: Rollout | None) -> str:
    if rollout is None:
        return "no rollout"
    return orjson.dumps({"candidate": rollout.candidate, "baseline": rollout.baseline, "ring": rollout.ring_name,
                         "status": rollout.status, "internal_tenants": list(rollout.internal_tenants),
                         "reason": rollout.reason}).decode()  # fmt: skip
