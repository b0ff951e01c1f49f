"""Reading a run the gateway no longer holds back from the journal, by its index entry.

A bounded read: the run's own partition from its first offset, up to its last indexed event (plus
a grace for late events) for a settled run, or up to the tail's position for one that came back to
life. The result joins the projection without a gap: the read goes on until it meets the tail's
position, and the run is handed over in the same step of the event loop, so every later event is
the tail's to apply.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from agentstream.client.locate import read_span, span_stop
from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.events import RunEvent, RunRequested
from agentstream.gateway.views import RunView
from agentstream.kafka.consumer import consumer_config

if TYPE_CHECKING:
    from agentstream.gateway.projection import RunIndex

Read = tuple[int, int, RunEvent]  # offset, append time, event


class Recall:
    def __init__(
        self, index: RunIndex, settings: Settings, record_problem: Callable[[Message], str | None] | None
    ) -> None:
        self._index = index
        self._settings = settings
        self._record_problem = record_problem
        self._codec = AvroCodec()  # its own: reads run in a worker thread
        self._consumer: Consumer | None = None
        self._reading = asyncio.Lock()  # one consumer, one read at a time
        self._loads: dict[str, asyncio.Task[RunView | None]] = {}
        # Runs a resume brought back while not held: from which offset they are live again.
        self._revived: dict[str, int] = {}
        self.loaded = 0
        self.events_read = 0

    def revive(self, run_id: str, offset: int) -> None:
        """The tail saw a run it does not hold resumed: read it back whole, to the tail's position."""
        self._revived.setdefault(run_id, offset)
        if run_id not in self._loads:
            self._start(run_id)

    async def load(self, run_id: str) -> RunView | None:
        task = self._loads.get(run_id) or self._start(run_id)
        return await asyncio.shield(task)

    def _start(self, run_id: str) -> asyncio.Task[RunView | None]:
        task = asyncio.create_task(self._load(run_id))
        self._loads[run_id] = task
        task.add_done_callback(lambda _t: self._loads.pop(run_id, None))
        return task

    async def _load(self, run_id: str) -> RunView | None:
        history = self._index.history
        if history is None:
            return None
        location = await history.locate(run_id)
        if location is None or location.partition not in self._index.positions:
            self._revived.pop(run_id, None)
            return None
        stop = span_stop(location.entry(run_id))
        found: list[Read] = []
        position, stopped = location.first_offset, False
        try:
            async with self._reading:
                while True:
                    # Checked and acted on with no await in between: nothing the tail applies
                    # after this point can be missed, nor anything before it applied twice.
                    whole = run_id in self._revived
                    upper = self._index.positions[location.partition]
                    if position >= upper or (stopped and not whole):
                        return self._hand_over(run_id, location.partition, found)
                    position, stopped = await asyncio.to_thread(
                        self._read, run_id, location.partition, position, upper, (lambda _m: False) if whole else stop, found
                    )  # fmt: skip
        except KafkaException as exc:
            print(f"agentstream gateway: could not read run {run_id} back: {exc}", file=sys.stderr)
            return None

    def _read(
        self, run_id: str, partition: int, start: int, end: int, stop: Callable[[Message], bool], found: list[Read]
    ) -> tuple[int, bool]:
        if self._consumer is None:
            self._consumer = Consumer(
                consumer_config(
                    self._settings.bootstrap_servers, self._settings.kafka_extra, {"group.id": "agentstream-gateway"}
                )
            )
        prefix = f"{run_id}/".encode()

        def take(msg: Message) -> bool:
            if stop(msg):
                return True
            self.events_read += 1
            if not (msg.key() or b"").startswith(prefix):
                return False
            if self._record_problem is not None and self._record_problem(msg) is not None:
                return False
            try:
                event = self._codec.decode(msg.value())
            except DecodeError:
                return False
            if isinstance(event, RunEvent) and event.run_id == run_id:
                found.append((int(msg.offset() or 0), msg.timestamp()[1], event))
            return False

        return read_span(self._consumer, TopicPartition(self._index.topic, partition, start), end, take)

    def _hand_over(self, run_id: str, partition: int, found: list[Read]) -> RunView | None:
        revived_at = self._revived.pop(run_id, -1)
        held = self._index.runs.get(run_id)
        if held is not None:
            return held
        if not found or not isinstance(found[0][2], RunRequested):
            return None  # not this journal's run (a stale or foreign index entry)
        from agentstream.gateway.projection import new_view  # a cycle: the projection holds a Recall

        offset, timestamp_ms, first = found[0]
        assert isinstance(first, RunRequested)
        view = new_view(first, partition, offset, timestamp_ms)
        for offset, timestamp_ms, event in found:
            self._index.apply_event(view, offset, timestamp_ms, event)
        if not view.settled and revived_at >= 0:
            view.revived_at = revived_at
        self.loaded += 1
        return self._index.hold(view)

    async def aclose(self) -> None:
        # Not cancelled: a read in a worker thread would go on with a consumer closed under it.
        if self._loads:
            await asyncio.wait(list(self._loads.values()), timeout=30)
        async with self._reading:
            if self._consumer is not None:
                await asyncio.to_thread(self._consumer.close)
                self._consumer = None
