"""A rebalance callback that fails halfway (the broker gone mid-assign, as in the chaos bench's
broker kills) must leave no partition store open: the fetcher replaces the consumer, and the next
assign of the same partitions has to open the same RocksDB stores again."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.events import Event
from agentstream.kafka.consumer import consumer_config
from agentstream.kafka.core import Outcome
from agentstream.kafka.hosting import HostedCore, store_path
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.kafka.runtime import ProcessorRuntime
from agentstream.kafka.runtime_config import RuntimeConfig
from agentstream.kafka.state import PartitionStore
from agentstream.topics import DEADLETTER, JOURNAL, STATUS, load_topics


class _Idle:
    """A core that acts on nothing: only the shell's partition handling is under test."""

    name = "idle"

    def accepts(self, type_name: str) -> bool:
        return False

    def apply(self, store: PartitionStore, event: Event, *, live: bool) -> Outcome:
        return Outcome()

    def still_wanted(self, store: PartitionStore, key: str) -> bool:
        return False

    def resume(self, store: PartitionStore) -> Outcome:
        return Outcome()


@pytest.mark.timeout(60)
async def test_an_assign_that_fails_halfway_closes_its_stores_and_the_next_assign_opens_them(
    settings: Settings, tmp_path: Path
) -> None:
    topics = load_topics(settings.topic_prefix)
    journal = topics[JOURNAL]
    producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    config = RuntimeConfig(bootstrap=settings.bootstrap_servers, input_topic=journal.name,
                           deadletter_topic=topics[DEADLETTER].name, status_topic=topics[STATUS].name,
                           state_dir=tmp_path / "state", instance="0", kafka_extra=settings.kafka_extra)  # fmt: skip
    runtime = ProcessorRuntime([HostedCore(_Idle(), RecordFactory(AvroCodec(), journal.name, journal.partitions))],
                               producer, config, "idle")  # fmt: skip
    consumer = Consumer(consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "assign-probe"}))
    try:
        # Partition 0 is taken before the callback fails on one the broker does not know.
        missing = TopicPartition(journal.name, journal.partitions + 5)
        with pytest.raises(KafkaException):
            runtime._on_assign(consumer, [TopicPartition(journal.name, 0), TopicPartition(journal.name, 1), missing])
        assert sorted(runtime.partitions()) == [] and runtime.applied_offsets() == {}
        for p in (0, 1, missing.partition):  # none of them still locked by this process
            PartitionStore(store_path(config.state_dir, "idle", "0", p)).close()

        runtime._on_assign(consumer, [TopicPartition(journal.name, 0), TopicPartition(journal.name, 1)])
        assert sorted(runtime.partitions()) == [0, 1]
        runtime._on_revoke(consumer, [TopicPartition(journal.name, 0), TopicPartition(journal.name, 1)])
    finally:
        consumer.close()
        runtime.fetcher.close()
        await producer.aclose()
