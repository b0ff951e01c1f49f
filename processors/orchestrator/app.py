"""The orchestrator process: the pure core plus a live view of the tool registry."""

from __future__ import annotations

from agentstream.config import Settings
from agentstream.events import Event
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.process import Built
from agentstream.processors.orchestrator.core import OrchestratorCore
from agentstream.processors.orchestrator.versions import build_registry
from agentstream.registry.reader import CatalogReader
from agentstream.rollout.admin import RolloutHolder
from agentstream.settings import OrchestratorSettings, load


class _Tables(CatalogReader):
    """The tool registry and the control topic, as every processor reads them, plus the canary
    rollout in force from the same control records: which version a new run starts on."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.rollout = RolloutHolder()

    def _on_event(self, event: Event) -> None:
        super()._on_event(event)
        self.rollout.apply(event)


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    # Before anything is read: an unknown default or an operator version that cannot be loaded
    # stops the process here, saying which, rather than starting runs on something else.
    chosen = load(OrchestratorSettings)
    versions = build_registry(chosen.version, chosen.versions)
    reader = _Tables(settings)
    await reader.start()

    async def close() -> None:
        reader.close()

    return Built(
        core=OrchestratorCore(
            reader.catalog.visible,
            policy_for=reader.catalog.policy,
            versions=versions,
            rollout_for=lambda: reader.rollout.rollout,
            workflows_for=reader.catalog.workflows.definition_json,
        ),
        before_batch=[reader.poll],
        cleanup=[close],
    )
