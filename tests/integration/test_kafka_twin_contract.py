"""The in-memory twin of the broker (tests/kafka_twin.py) keeps the broker's contract where the
processor shell relies on it: the same checks run against the twin and against the real broker.
The unit test of the commit order (tests/unit/test_commit_order.py) is only as good as this."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_STORED, Consumer, Message, TopicPartition

from agentstream.config import Settings
from agentstream.kafka.consumer import ConsumerFactory, consumer_config, fetch_batch, watermarks
from agentstream.kafka.journal import Record
from agentstream.kafka.producer import AsyncProducer, DeliveryError, RecordProducer, producer_config
from agentstream.topics import JOURNAL, load_topics
from tests.kafka_twin import TwinBroker


@dataclass
class Side:
    producer: RecordProducer
    consumers: ConsumerFactory
    config: Callable[[str], dict[str, Any]]  # a consumer's configuration for a group id
    topic: str
    partitions: int


@pytest.fixture(params=["twin", "broker"])
async def side(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Side]:
    if request.param == "twin":
        broker = TwinBroker({"t.journal": 3})
        yield Side(broker.producer(), broker.consumer, lambda group: {"group.id": group}, "t.journal", 3)
        return
    journal = load_topics(settings.topic_prefix)[JOURNAL]
    producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))

    def config(group: str) -> dict[str, Any]:
        return consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": group})

    try:
        yield Side(producer, Consumer, config, journal.name, journal.partitions)
    finally:
        await producer.aclose()


def _records(topic: str, partition: int, count: int, tag: str) -> list[Record]:
    return [Record(topic, f"{tag}{i}".encode(), f"v{i}".encode(), partition, [("type", b"T")]) for i in range(count)]


def _read(consumer: Consumer, want: int, timeout_s: float = 20.0) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got += [m for m in fetch_batch(consumer, 100, 0.2) if m.error() is None]
    return got


async def test_a_batch_lands_in_order_and_reads_back_from_any_offset(side: Side) -> None:
    records = _records(side.topic, 1, 5, "a") + _records(side.topic, 2, 2, "b")
    acks = await side.producer.send_batch(records)
    assert not any(isinstance(a, DeliveryError) for a in acks)
    by_partition = {p: [a.offset() for a in acks if not isinstance(a, DeliveryError) and a.partition() == p]
                    for p in (1, 2)}  # fmt: skip
    assert by_partition == {1: [0, 1, 2, 3, 4], 2: [0, 1]}  # consecutive offsets, in the order sent

    consumer = side.consumers(side.config("twin-contract-read"))
    try:
        assert watermarks(consumer, TopicPartition(side.topic, 1)) == (0, 5)
        assert watermarks(consumer, TopicPartition(side.topic, 0)) == (0, 0)
        metadata = consumer.list_topics(side.topic, timeout=10).topics[side.topic]
        assert sorted(metadata.partitions) == list(range(side.partitions))
        consumer.assign([TopicPartition(side.topic, 1, 3), TopicPartition(side.topic, 2, OFFSET_BEGINNING)])
        got = _read(consumer, 4)
        seen = sorted((m.partition(), m.offset(), m.key(), m.value(), m.headers()) for m in got)
        assert seen == [
            (1, 3, b"a3", b"v3", [("type", b"T")]), (1, 4, b"a4", b"v4", [("type", b"T")]),
            (2, 0, b"b0", b"v0", [("type", b"T")]), (2, 1, b"b1", b"v1", [("type", b"T")]),
        ]  # fmt: skip
        assert [tp.offset for tp in consumer.position([TopicPartition(side.topic, 1)])] == [5]
    finally:
        consumer.close()


async def test_a_committed_group_offset_is_where_a_stored_position_starts(side: Side) -> None:
    await side.producer.send_batch(_records(side.topic, 0, 4, "c"))
    first = side.consumers(side.config("twin-contract-group"))
    try:
        first.assign([TopicPartition(side.topic, 0, OFFSET_BEGINNING)])
        assert len(_read(first, 4)) == 4
        first.commit(offsets=[TopicPartition(side.topic, 0, 2)], asynchronous=False)
    finally:
        first.close()
    second = side.consumers(side.config("twin-contract-group"))
    try:
        second.assign([TopicPartition(side.topic, 0, OFFSET_STORED)])
        assert [m.key() for m in _read(second, 2)] == [b"c2", b"c3"]
    finally:
        second.close()
