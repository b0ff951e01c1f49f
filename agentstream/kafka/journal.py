"""How an event becomes a Kafka record: topic, key, partition and headers, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import Message

from agentstream.codec import AvroCodec
from agentstream.events import Event, RunEvent, event_key
from agentstream.kafka.partitioner import partition_for

if TYPE_CHECKING:
    from agentstream.security.journal_trust import JournalSigner

TYPE_HEADER = "type"


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (a changelog deletion)
    partition: int | None
    headers: list[tuple[str, bytes]]


class RecordFactory:
    def __init__(
        self, codec: AvroCodec, journal_topic: str, journal_partitions: int, signer: JournalSigner | None = None
    ) -> None:
        self.codec = codec
        self.journal_topic = journal_topic
        self.journal_partitions = journal_partitions
        # Signs every journal record with the writer's own key (see agentstream.security.journal_trust).
        self.signer = signer

    def journal_partition(self, run_id: str) -> int:
        return partition_for(run_id, self.journal_partitions)

    def journal(self, event: RunEvent, *, as_writer: str | None = None) -> Record:
        key, value = event.event_id.encode(), self.codec.encode(event)
        # The type header lets processors skip events they do not handle without decoding them;
        # it is signed with the body, and the decoded body must agree with it.
        headers = [(TYPE_HEADER, event.type_name.encode())]
        if self.signer is not None:
            headers += self.signer.headers(self.journal_topic, key, event.type_name, value, as_writer=as_writer)
            if event.type_name == "RunRequested" and self.signer.proves_runs:
                headers.append(self.signer.run_proof(event.tenant_id, event.run_id, value))
        return Record(self.journal_topic, key, value, self.journal_partition(event.run_id), headers)

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
