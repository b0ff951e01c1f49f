"""`agentstream status`: the latest ProcessorStatus of every processor instance."""

from __future__ import annotations

import time

from confluent_kafka import Message

from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.events import ProcessorStatus
from agentstream.kafka.consumer import TableReader
from agentstream.topics import STATUS, load_topics


async def show_status(settings: Settings) -> int:
    codec = AvroCodec()
    latest: dict[str, ProcessorStatus] = {}

    def on_msg(msg: Message) -> None:
        if msg.value():
            event = codec.decode(msg.value())
            if isinstance(event, ProcessorStatus):
                latest[event.event_id] = event

    reader = TableReader(
        settings.bootstrap_servers, load_topics(settings.topic_prefix)[STATUS].name, on_msg, settings.kafka_extra
    )
    try:
        await reader.catch_up()
    finally:
        reader.close()
    now = time.time() * 1000
    print(f"{'instance':<22}{'state':<12}{'age_s':>7}{'lag':>8}{'processed':>11}{'errors':>8}{'dead':>6}  partitions")
    for key in sorted(latest):
        s = latest[key]
        print(f"{key:<22}{s.state:<12}{(now - s.ts_ms) / 1000:>7.1f}{s.lag:>8}{s.processed:>11}{s.errors:>8}"
              f"{s.dead_lettered:>6}  {s.partitions}")  # fmt: skip
    return 0
