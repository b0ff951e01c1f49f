"""The journal's sink: runs.journal into ONE Iceberg events table, read by the platform's own
converter (connectors/, Avro single-object encoding), each row stamped with the journal's append
time, partitioned by day and tenant, with the run's credentials dropped before they reach a file.
Records the converter cannot read go to the connector's dead-letter topic with the reason in
their headers, and the records after them keep flowing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition

from agentstream.config import Settings
from agentstream.connect.jars import build_converter
from agentstream.connect.sink import IcebergSink, converter_config, dead_letter_config
from agentstream.kafka.consumer import consumer_config, watermarks
from agentstream.resources import resource_path

JOURNAL_CONNECTOR = "journal"
EVENTS_TABLE = "audit.events"
# Connect's own SMT: the record's timestamp, the journal's LogAppendTime, as a timestamp column.
TIME_FIELD = "journal_time"
PARTITION_BY = f"day({TIME_FIELD}),tenant_id"
# What never leaves the journal (the converter's `drop.fields`): capability tokens and secret
# delegations (ToolCallAuthorized) and approvals' HMACs. The journal carries no secret values;
# the sealed ones (SecretStored) live on the secrets topic, which is not sunk.
DROPPED_FIELDS = ("capability", "delegation", "ApprovalDecided.signature")


def dlq_topic(topic_prefix: str) -> str:
    return f"{topic_prefix}.connect.journal-dlq"


def journal_sink(
    topic_prefix: str, warehouse: Path, commit_interval_s: float, extra: dict[str, str] | None = None
) -> IcebergSink:
    config = {
        **converter_config(DROPPED_FIELDS),
        "transforms": "time",
        "transforms.time.type": "org.apache.kafka.connect.transforms.InsertField$Value",
        "transforms.time.timestamp.field": TIME_FIELD,
        # Where the event lies in the journal: a run's exact order, and the SSE id a reader resumes from.
        "transforms.time.partition.field": "journal_partition",
        "transforms.time.offset.field": "journal_offset",
        # One sparse table for every event type: a field another type lacks is null there.
        "iceberg.tables.schema-force-optional": "true",
        "iceberg.tables.default-partition-by": PARTITION_BY,
        **dead_letter_config(dlq_topic(topic_prefix)),
    }
    topics = (f"{topic_prefix}.runs.journal",)
    return IcebergSink(
        JOURNAL_CONNECTOR, topics, EVENTS_TABLE, warehouse, commit_interval_s, {**config, **(extra or {})}
    )


async def converter_plugins(plugin_root: Path) -> Path:
    """The converter's plugin folder under `plugin_root`, built by Maven (tests included) when its
    jar is missing or older than its sources."""
    source = resource_path("connectors")
    target = plugin_root / "agentstream-converter"
    jars = list(target.glob("agentstream-connectors-*.jar"))
    newest = max(p.stat().st_mtime for p in (source / "src").rglob("*") if p.is_file())
    if jars and jars[0].stat().st_mtime >= newest:
        return plugin_root
    return await build_converter(source, plugin_root)


class TopicReadError(RuntimeError):
    """A topic could not be read to its end in time."""


def read_topic(bootstrap: str, extra: Mapping[str, str], topic: str, timeout_s: float = 60.0) -> list[Message]:
    """Every record of the topic from its beginning to its end when asked, duplicates included
    (what a warehouse must hold once each). Blocking: call it in a thread from async code."""
    consumer = Consumer(consumer_config(bootstrap, extra, {"group.id": f"{topic}.reader"}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: watermarks(consumer, TopicPartition(topic, p)) for p in parts}
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, hi) in ends.items() if hi > lo])
        remaining = {p for p, (lo, hi) in ends.items() if hi > lo}
        records: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            records.append(msg)
            if (msg.offset() or 0) >= ends[msg.partition()][1] - 1:
                remaining.discard(msg.partition())
        if remaining:
            raise TopicReadError(f"could not read {topic} to its end within {timeout_s:.0f}s")
        return records
    finally:
        consumer.close()


def _count_dead_letters(settings: Settings, topic: str) -> int:
    consumer = Consumer(consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": topic}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(hi - lo for lo, hi in (watermarks(consumer, TopicPartition(topic, p)) for p in parts))
    finally:
        consumer.close()


async def dead_letters(settings: Settings, topic: str | None = None) -> int:
    """How many records a sink set aside (its dead-letter topic's records, by default the
    journal's; kept a month): each with its reason in the `__connect.errors.*` headers."""
    return await asyncio.to_thread(_count_dead_letters, settings, topic or dlq_topic(settings.topic_prefix))
