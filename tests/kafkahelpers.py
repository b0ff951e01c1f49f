"""Small helpers for tests that read topics directly. Their clients authenticate as this process's
principal (the admin, in tests: see conftest.py), like any Settings built here."""

from __future__ import annotations

import asyncio
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from agentstream.config import process_kafka_extra
from agentstream.kafka.consumer import consumer_config
from agentstream.kafka.producer import producer_config


async def read_topic(bootstrap: str, topic: str, *, min_count: int = 1, timeout_s: float = 30.0) -> list[Message]:
    """Every record of `topic` from the beginning; waits until at least `min_count` arrived."""

    def run() -> list[Message]:
        consumer = Consumer(consumer_config(bootstrap, process_kafka_extra(), {"group.id": "test-reader"}))
        md = consumer.list_topics(topic, timeout=10)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        idle_after_min = 0
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(500, 0.2) if m.error() is None]
            out.extend(batch)
            if len(out) >= min_count:
                idle_after_min = 0 if batch else idle_after_min + 1
                if idle_after_min >= 2:
                    break
        consumer.close()
        return out

    return await asyncio.to_thread(run)


def produce_raw(
    bootstrap: str,
    topic: str,
    value: bytes | None,
    key: bytes,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    partition: int = 0,
) -> None:
    from confluent_kafka import Producer

    producer = Producer(producer_config(bootstrap, process_kafka_extra()))
    producer.produce(topic, value=value, key=key, partition=partition, headers=list(headers or []))
    assert producer.flush(10) == 0


def alter_topic_config(bootstrap: str, topic: str, key: str, value: str) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap, **process_kafka_extra()})
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)],
    )
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result()
