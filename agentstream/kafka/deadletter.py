"""Poison events go here with the reason; the processor moves on and nothing is lost."""

from __future__ import annotations

from confluent_kafka import Message

from agentstream.kafka.journal import Record, header_pairs


def dead_letter_record(topic: str, msg: Message, processor: str, reason: str) -> Record:
    headers: list[tuple[str, bytes]] = [
        ("reason", reason.encode()[:4000]),
        ("processor", processor.encode()),
        ("source-topic", str(msg.topic()).encode()),
        ("source-partition", str(msg.partition()).encode()),
        ("source-offset", str(msg.offset()).encode()),
    ]
    for name, value in header_pairs(msg):
        headers.append((f"original-{name}", value))
    return Record(topic=topic, key=msg.key(), value=msg.value() or b"", partition=None, headers=headers)
