"""Fills a journal with finished runs, fast, through the real produce path.

A template run (one real run, read back from the journal) is cloned under fresh run ids: every
event is re-encoded as Avro and signed as the writer that journaled the original (the admin's
keyring holds every writer's key; a RunRequested also gets its run proof), so the clones are
indistinguishable from runs the processors made, and every reader verifies them as such. Clones
are interleaved `concurrency` at a time, as concurrent runs interleave in the journal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from agentstream.client.journal import type_of
from agentstream.client.locate import read_span
from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.events import RunEvent
from agentstream.kafka.consumer import consumer_config, watermarks
from agentstream.kafka.journal import RecordFactory, header_pairs
from agentstream.kafka.partitioner import partition_for
from agentstream.kafka.producer import producer_config
from agentstream.security.journal_trust import WRITER_HEADER, JournalSigner
from agentstream.topics import JOURNAL, load_topics


@dataclass(frozen=True)
class TemplateEvent:
    event: RunEvent
    writer: str


async def capture_template(settings: Settings, run_id: str) -> list[TemplateEvent]:
    """A finished run's events with the writer of each, in journal order."""
    topic = load_topics(settings.topic_prefix)[JOURNAL].name

    def read() -> list[TemplateEvent]:
        codec = AvroCodec()
        consumer = Consumer(
            consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "agentstream-reader"})
        )
        try:
            partitions = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            tp = TopicPartition(topic, partition_for(run_id, partitions), 0)
            found: list[TemplateEvent] = []
            seen: set[str] = set()
            prefix = f"{run_id}/".encode()

            def take(msg: Message) -> bool:
                if (msg.key() or b"").startswith(prefix) and type_of(msg) is not None:
                    event = codec.decode(msg.value())
                    writer = dict(header_pairs(msg)).get(WRITER_HEADER, b"admin").decode()
                    if isinstance(event, RunEvent) and event.event_id not in seen:
                        seen.add(event.event_id)
                        found.append(TemplateEvent(event, writer))
                return False

            read_span(consumer, tp, watermarks(consumer, tp)[1], take)
            return found
        finally:
            consumer.close()

    return await asyncio.to_thread(read)


def clone(event: RunEvent, old: str, new: str) -> RunEvent:
    """The event with every mention of run id `old` (ids, call ids, arguments) made `new`."""

    def swap(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(old, new)
        if isinstance(value, list):
            return [swap(v) for v in value]
        if isinstance(value, dict):
            return {swap(k): swap(v) for k, v in value.items()}
        return value

    changes = {f.name: swap(getattr(event, f.name)) for f in dataclasses.fields(event)}
    return dataclasses.replace(event, **changes)


def clone_ids(count: int, tag: str) -> list[str]:
    """Run ids shaped like the gateway's (run_ + 24 hex), distinct per fill."""
    return [f"run_{tag[:8]:0>8}{i:016x}" for i in range(count)]


def fill_journal(
    settings: Settings, template: list[TemplateEvent], events: int, tag: str, concurrency: int = 20
) -> tuple[list[str], float]:
    """Journals at least `events` events of cloned runs; returns their run ids (in journal order)
    and the seconds it took. Blocking: call it in a thread."""
    topic = load_topics(settings.topic_prefix)[JOURNAL].name
    source = template[0].event.run_id
    codec = AvroCodec()
    signer = JournalSigner("admin", component_keyring(settings, "admin"))
    consumer = Consumer(
        consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "agentstream-reader"})
    )
    partitions = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.close()
    records = RecordFactory(codec, topic, partitions, signer)
    producer = Producer(
        producer_config(
            settings.bootstrap_servers,
            settings.kafka_extra,
            {"linger.ms": 20, "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000},
        )
    )
    runs = clone_ids(-(-events // len(template)), tag)
    started = time.monotonic()
    for first in range(0, len(runs), concurrency):
        group = runs[first : first + concurrency]
        # Concurrent runs interleave in the journal: event i of each run, then event i + 1.
        for item in template:
            for run_id in group:
                record = records.journal(clone(item.event, source, run_id), as_writer=item.writer)
                while True:
                    try:
                        # The partition is the journal's murmur2 of the run id, as every writer's.
                        kwargs: dict[str, Any] = {"key": record.key, "headers": record.headers}
                        if record.partition is not None:
                            kwargs["partition"] = record.partition
                        producer.produce(record.topic, record.value, **kwargs)
                        break
                    except BufferError:
                        producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} journal records were not delivered")
    return runs, time.monotonic() - started
