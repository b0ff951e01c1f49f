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


# What a refused record keeps of its value in the dead-letter topic: enough to see what it was.
REFUSED_VALUE_KEPT = 64 * 1024


def refused_record(topic: str, record: Record, processor: str, reason: str) -> Record:
    """A record the broker refused for good (too large), dead-lettered in its place with the reason,
    its target and the start of its value: the writer must not retry it forever."""
    headers: list[tuple[str, bytes]] = [
        ("reason", reason.encode()[:4000]),
        ("processor", processor.encode()),
        ("target-topic", record.topic.encode()),
        ("value-bytes", str(len(record.value or b"")).encode()),
    ]
    headers += [(f"original-{name}", value) for name, value in record.headers]
    return Record(topic=topic, key=record.key, value=(record.value or b"")[:REFUSED_VALUE_KEPT], partition=None,
                  headers=headers)  # fmt: skip
