"""The orchestrator process: the pure core plus a live view of the tool registry."""

from __future__ import annotations

from agentstream.config import Settings
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.process import Built, catalog_topic, wait_for_kafka
from agentstream.registry.reader import CatalogReader
from processors.orchestrator.core import OrchestratorCore


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    await wait_for_kafka(settings, catalog_topic(settings))
    reader = CatalogReader(settings)
    await reader.catch_up()

    async def close() -> None:
        reader.close()

    return Built(core=OrchestratorCore(reader.catalog.visible), before_batch=[reader.poll_nowait], cleanup=[close])
