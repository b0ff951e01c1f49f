"""The orchestrator process: the pure core plus a live view of the tool registry."""

from __future__ import annotations

from agentstream.config import Settings
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.process import Built
from agentstream.processors.orchestrator.core import OrchestratorCore
from agentstream.registry.reader import CatalogReader


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    reader = CatalogReader(settings)
    await reader.start()

    async def close() -> None:
        reader.close()

    return Built(
        core=OrchestratorCore(reader.catalog.visible, policy_for=reader.catalog.policy),
        before_batch=[reader.poll],
        cleanup=[close],
    )
