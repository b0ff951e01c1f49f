"""Compacted topics used as tables: a projection every process keeps whole (tenants, secrets, the
tool registry and controls), and the one-record writes that administer them.

`TopicTable` owns the reading: it waits for the broker, reads its topics from the beginning, then
keeps current through `poll()` (before a processor's batch), `refresh()` (throttled, per request)
or `run()` (in the background). Subclasses say only what a record means (`_on_event`) and what a
tombstone removes (`_on_tombstone`); an undecodable record is skipped, loudly, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Self

from confluent_kafka import KafkaException, Message

from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.events import Event
from agentstream.kafka.consumer import TableReader
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer, producer_config

log = logging.getLogger(__name__)

# Throttles `refresh()`: one non-blocking fetch per 10 ms at most bounds the cost at any request
# rate, and 10 ms is far below how long a new record takes to reach this consumer anyway.
_REFRESH_INTERVAL_S = 0.01


class TopicTable:
    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self._settings = settings
        self._topics = list(topics)
        self._codec = AvroCodec()
        self._readers: list[TableReader] = []
        self._last_poll = float("-inf")

    async def start(self, timeout_s: float = 30.0) -> None:
        """Waits for the broker and the topics (saying clearly what is missing), then reads them
        whole. A broker that goes away meanwhile is waited out, with one line per attempt."""
        from agentstream.process import wait_for_kafka  # the process module imports the Kafka shell

        for topic in self._topics:
            await wait_for_kafka(self._settings, topic)
        self._readers = [
            TableReader(self._settings.bootstrap_servers, topic, self._apply, self._settings.kafka_extra)
            for topic in self._topics
        ]
        while True:
            try:
                await self.catch_up(timeout_s)
                return
            except (TimeoutError, KafkaException) as exc:
                log.warning("tables %s not read yet (%s); waiting for the broker", ", ".join(self._topics), exc)
                for topic in self._topics:
                    await wait_for_kafka(self._settings, topic, quiet=True)

    async def catch_up(self, timeout_s: float = 30.0) -> None:
        """Reads up to the topics' current ends: sees every write acknowledged before this call."""
        for reader in self._started():
            await reader.catch_up(timeout_s)

    def poll(self) -> int:
        """Applies the records already fetched, without blocking; returns how many."""
        self._last_poll = time.monotonic()
        total = 0
        for reader in self._started():
            while count := reader.poll_nowait():
                total += count
        return total

    def refresh(self) -> None:
        """`poll()` cheap enough to call on every request."""
        if self._readers and time.monotonic() - self._last_poll >= _REFRESH_INTERVAL_S:
            self.poll()

    async def run(self, stop: asyncio.Event, interval_s: float = 0.1) -> None:
        """Polls every `interval_s` until `stop` is set: the background alternative to `refresh()`."""
        while not stop.is_set():
            self.poll()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    def close(self) -> None:
        readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _started(self) -> list[TableReader]:
        if not self._readers:
            raise RuntimeError(f"{type(self).__name__}.start() was not called")
        return self._readers

    def _apply(self, msg: Message) -> None:
        # Runs on the reader's thread; subclasses keep each update to one dict operation, which
        # readers on the event loop see either entirely or not at all.
        record_key = (msg.key() or b"").decode(errors="replace")
        value = msg.value()
        if value is None:  # a tombstone, written by an operator
            self._on_tombstone(record_key)
            return
        try:
            event = self._codec.decode(value)
        except DecodeError as exc:
            log.error("skipping record %r on %s at offset %s: %s", record_key, msg.topic(), msg.offset(), exc)
            return
        self._on_event(event)

    def _on_event(self, event: Event) -> None:
        raise NotImplementedError

    def _on_tombstone(self, record_key: str) -> None:
        """Records are removed by later events by default; tables whose keys name an entry drop it."""


async def put_record(settings: Settings, topic: str, event: Event, producer: AsyncProducer | None = None) -> None:
    """Writes one event to a table topic, keyed by its `event_id`, and waits for the ack; with
    `producer`, through it (a caller writing many records opens one), else through one of its own."""
    record = RecordFactory(AvroCodec(), topic, 1).keyed(topic, event)
    own = producer is None
    producer = producer or AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    try:
        await producer.send(record.topic, record.value, key=record.key, headers=record.headers)
    finally:
        if own:
            await producer.aclose()
