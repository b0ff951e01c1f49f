"""Reading the whole journal once, from the start to its current end: for reports and audits."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from confluent_kafka import Consumer

from agentstream.client.journal import JournalEntry, type_of
from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.events import RunEvent
from agentstream.kafka.consumer import consumer_config, positions_since
from agentstream.security.journal_trust import JournalVerifier, journal_auth_enabled
from agentstream.topics import JOURNAL, load_topics


async def read_journal(settings: Settings, since_ms: int | None = None) -> dict[str, list[JournalEntry]]:
    """The whole journal, decoded, grouped by run, duplicates removed, in journal order; with
    `since_ms`, only what was appended at or after that time (each partition is sought to it by
    the broker's time index, so the read costs what is newer, not all history).
    Undecodable records are skipped: the processors have dead-lettered them already."""
    topic = load_topics(settings.topic_prefix)[JOURNAL].name
    # The operator's reader holds every writer's key: a record whose writer is not proven is no
    # part of any run (and must not shadow a genuine event's id).
    verifier = JournalVerifier(component_keyring(settings, "admin")) if journal_auth_enabled() else None

    def run() -> dict[str, list[JournalEntry]]:
        codec = AvroCodec()
        consumer = Consumer(
            consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "agentstream-reader"})
        )
        try:
            tps, ends = positions_since(consumer, topic, since_ms)
            consumer.assign(tps)
            runs: dict[str, list[JournalEntry]] = defaultdict(list)
            seen: set[str] = set()
            done: set[int] = {p for p, end in ends.items() if end == 0}
            done |= {tp.partition for tp in tps if tp.offset >= ends[tp.partition]}
            while len(done) < len(ends):
                for msg in consumer.consume(2000, 0.5):
                    if msg.error() is not None:
                        continue
                    offset, partition = msg.offset() or 0, msg.partition() or 0
                    if offset + 1 >= ends[partition]:
                        done.add(partition)
                    if verifier is not None and verifier.problem(msg, type_of(msg)) is not None:
                        continue
                    try:
                        event = codec.decode(msg.value())
                    except DecodeError:
                        continue
                    if isinstance(event, RunEvent) and event.event_id not in seen:
                        seen.add(event.event_id)
                        runs[event.run_id].append(JournalEntry(event, offset, msg.timestamp()[1]))
            return dict(runs)
        finally:
            consumer.close()

    return await asyncio.to_thread(run)
