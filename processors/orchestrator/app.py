"""The orchestrator process: the pure core plus a live view of the tool catalog."""

from __future__ import annotations

import orjson
from confluent_kafka import Message

from agentstream.config import Settings
from agentstream.events import ToolRegistered
from agentstream.kafka.consumer import TableReader
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.llm import ToolSpec
from agentstream.process import Built, catalog_topic, wait_for_kafka
from processors.orchestrator.core import OrchestratorCore


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    catalog: dict[str, ToolSpec] = {}

    def on_catalog(msg: Message) -> None:
        value = msg.value()
        if value is None:  # tombstone: the tool was withdrawn
            catalog.pop((msg.key() or b"").decode(), None)
            return
        try:
            event = records.codec.decode(value)
        except Exception:
            return  # the catalog is a side input; a bad entry is simply not offered
        if isinstance(event, ToolRegistered):
            catalog[event.name] = ToolSpec(event.name, event.description, orjson.loads(event.input_schema_json))

    topic = catalog_topic(settings)
    await wait_for_kafka(settings, topic)
    reader = TableReader(settings.bootstrap_servers, topic, on_catalog, settings.kafka_extra)
    await reader.catch_up()

    async def close() -> None:
        reader.close()

    return Built(core=OrchestratorCore(catalog), before_batch=[reader.poll_nowait], cleanup=[close])
