"""The step's hot-path batch writes against the real broker: a batch send reports every record's own
outcome, and a record the broker refuses for good is dead-lettered (the memos and caches, which
need no broker: tests/unit/test_hot_path_memos.py)."""

from __future__ import annotations

import asyncio

from agentstream.config import Settings
from agentstream.kafka.changelog import changelog_topic
from agentstream.kafka.journal import Record, header_pairs
from agentstream.kafka.producer import AsyncProducer, DeliveryError, producer_config
from tests.kafkahelpers import read_topic


async def test_a_batch_send_reports_each_records_own_outcome(settings: Settings) -> None:
    producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    topic = changelog_topic(settings.topic_prefix, "model-invoker")  # this test's own topics
    try:
        records = [Record(topic, f"hot-{i}".encode(), f"v{i}".encode(), 0, [("type", b"Nothing")]) for i in range(50)]
        records.insert(7, Record("no.such.topic.for.this.test", b"k", b"v", 0, []))
        outcomes = await producer.send_batch(records)
        assert len(outcomes) == len(records)
        assert isinstance(outcomes[7], DeliveryError)
        offsets = [o.offset() or 0 for i, o in enumerate(outcomes) if i != 7 and not isinstance(o, DeliveryError)]
        assert len(offsets) == 50 and offsets == sorted(offsets)  # one partition, in the order given
        assert await producer.send_batch([]) == []
    finally:
        await producer.aclose()
    seen = [r for r in await read_topic(settings.bootstrap_servers, topic, min_count=50)
            if (r.key() or b"").startswith(b"hot-")]  # fmt: skip
    assert [r.key() for r in seen if r.partition() == 0] == [f"hot-{i}".encode() for i in range(50)]


async def test_a_record_the_broker_refuses_for_good_is_dead_lettered_not_retried_forever(settings: Settings) -> None:
    from agentstream.kafka.runtime_io import JournalWriter
    from agentstream.topics import DEADLETTER, load_topics

    producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    target = changelog_topic(settings.topic_prefix, "model-invoker")
    deadletter = load_topics(settings.topic_prefix)[DEADLETTER].name
    writer = JournalWriter(producer, "hot-path-test", deadletter)
    too_large = b"x" * (9 * 1024 * 1024)  # over the producer's and the topics' 8 MiB
    try:
        acks = await asyncio.wait_for(
            writer.produce_all(
                [
                    Record(target, b"before", b"1", 0, []),
                    Record(target, b"huge", too_large, 0, []),
                    Record(target, b"after", b"2", 0, []),
                ]
            ),
            timeout=60,
        )
    finally:
        await producer.aclose()
    assert acks[0] is not None and acks[2] is not None and acks[1] is None
    assert writer.refused == 1
    refused = (await read_topic(settings.bootstrap_servers, deadletter))[0]
    headers = dict(header_pairs(refused))
    assert refused.key() == b"huge" and len(refused.value() or b"") == 64 * 1024
    assert headers["value-bytes"] == str(len(too_large)).encode() and b"refused" in headers["reason"]
