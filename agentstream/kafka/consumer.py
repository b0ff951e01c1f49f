"""Consumer configuration and a non-group reader for small compacted tables (e.g. the tool catalog)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from agentstream.kafka.logs import kafka_logger

# Makes a consumer from its configuration: `Consumer` itself, or the in-memory twin that drives the
# same shell code without a broker in the unit test of the commit order (tests/kafka_twin.py).
ConsumerFactory = Callable[[dict[str, Any]], Consumer]


def consumer_config(
    bootstrap: str, extra: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 20,
        "socket.nagle.disable": True,
        "fetch.min.bytes": 1,
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "max.poll.interval.ms": 300000,
        # librdkafka logs every reconnect attempt; this logger keeps one line per kind a minute.
        "logger": kafka_logger(),
        **(extra or {}),
        **(overrides or {}),
    }


def watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float = 10.0) -> tuple[int, int]:
    """(low, high) offsets of a partition, asked of the broker. Retries the transient refusals a
    broker gives while a new topic's leaders are still being elected, up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=max(1.0, deadline - time.monotonic()), cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() >= deadline or not _transient(exc.args[0]):
                raise
            time.sleep(0.1)


def positions_since(
    consumer: Consumer, topic: str, since_ms: int | None = None
) -> tuple[list[TopicPartition], dict[int, int]]:
    """Where a bulk read of every partition of `topic` starts (its beginning, or with `since_ms`
    its first record appended at or after that time, found by the broker's time index; its end
    when there is none) and each partition's end."""
    md = consumer.list_topics(topic, timeout=10)
    starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions]
    ends = {tp.partition: watermarks(consumer, tp)[1] for tp in starts}
    if since_ms is not None:
        found = consumer.offsets_for_times([TopicPartition(topic, p, max(0, since_ms)) for p in ends], 10)
        starts = [TopicPartition(topic, t.partition, ends[t.partition] if t.offset < 0 else t.offset) for t in found]
    return starts, ends


def _transient(error: KafkaError) -> bool:
    return bool(error.retriable()) or error.code() in (
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._DESTROY_BROKER,
    )


def fetch_batch(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Up to `max_messages` that are ready, waiting at most `timeout_s` for the first one.

    `Consumer.consume(n, timeout)` waits until it has n messages or the timeout passed, so a
    lightly loaded processor would sit on every event for the whole timeout. This returns as soon
    as anything is there, and still drains a backlog in one batch."""
    batch = consumer.consume(max_messages, 0)
    if batch:
        return batch
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)]


class TableReader:
    """Reads every partition of a topic from the beginning, outside any consumer group, and hands
    each record to `apply`. Used for global tables every processor instance needs whole."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        apply: Callable[[Message], None],
        # Required: the process's SASL principal; a reader without it is refused by the broker.
        extra: Mapping[str, str] | None,
    ):
        self._consumer = Consumer(consumer_config(bootstrap, extra, {"group.id": "agentstream-table-reader"}))
        self._topic = topic
        self._apply = apply
        self._assigned = False
        # A catch-up drains on a worker thread while the loop may poll: one drain at a time, so
        # batches are applied in the order they were fetched (a table is last-write-wins).
        self._draining = threading.Lock()

    def _assign(self) -> list[TopicPartition]:
        md = self._consumer.list_topics(self._topic, timeout=10)
        partitions = [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in md.topics[self._topic].partitions]
        self._consumer.assign(partitions)
        self._assigned = True
        return partitions

    def _drain(self, timeout: float) -> int:
        with self._draining:
            return self._drain_held(timeout)

    def _drain_held(self, timeout: float) -> int:
        count = 0
        for msg in fetch_batch(self._consumer, 500, timeout):
            if msg.error() is None:
                self._apply(msg)
                count += 1
        return count

    async def catch_up(self, timeout_s: float = 30.0) -> None:
        """Reads until every partition reached the end it had when this call started."""

        def run() -> None:
            partitions = self._assign() if not self._assigned else self._consumer.assignment()
            ends = {p.partition: watermarks(self._consumer, p)[1] for p in partitions}
            loop_deadline = timeout_s
            while loop_deadline > 0:
                positions = {p.partition: p.offset for p in self._consumer.position(partitions)}
                if all(positions[p] >= end or end == 0 for p, end in ends.items() if p in positions):
                    return
                self._drain(0.1)
                loop_deadline -= 0.1
            raise TimeoutError(f"table {self._topic} not caught up within {timeout_s}s")

        await asyncio.to_thread(run)

    def poll_nowait(self) -> int:
        # Never waits on a catch-up's drain (the loop must not block): that drain applies what is there.
        if not self._assigned or not self._draining.acquire(blocking=False):
            return 0
        try:
            return self._drain_held(0)
        finally:
            self._draining.release()

    def close(self) -> None:
        self._consumer.close()
