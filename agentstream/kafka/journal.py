"""How an event becomes a Kafka record: topic, key, partition and headers, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message

from agentstream.codec import AvroCodec
from agentstream.events import Event, RunEvent, event_key
from agentstream.kafka.partitioner import partition_for

TYPE_HEADER = "type"


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    headers: list[tuple[str, bytes]]


class RecordFactory:
    def __init__(self, codec: AvroCodec, journal_topic: str, journal_partitions: int) -> None:
        self.codec = codec
        self.journal_topic = journal_topic
        self.journal_partitions = journal_partitions

    def journal_partition(self, run_id: str) -> int:
        return partition_for(run_id, self.journal_partitions)

    def journal(self, event: RunEvent) -> Record:
        return Record(
            topic=self.journal_topic,
            key=event.event_id.encode(),
            value=self.codec.encode(event),
            partition=self.journal_partition(event.run_id),
            # The type header lets processors skip events they do not handle without decoding them;
            # the decoded body, never the header, decides what an event is.
            headers=[(TYPE_HEADER, event.type_name.encode())],
        )

    def keyed(self, topic: str, event: Event) -> Record:
        return Record(
            topic=topic,
            key=event_key(event).encode(),
            value=self.codec.encode(event),
            partition=None,
            headers=[(TYPE_HEADER, event.type_name.encode())],
        )


def header_pairs(msg: Message) -> list[tuple[str, bytes]]:
    raw = msg.headers()
    if not isinstance(raw, list):
        return []
    return [(str(k), v) for k, v in raw if isinstance(v, bytes)]
