"""Keeps a ToolCatalog current from the tools.catalog and control topics."""

from __future__ import annotations

from agentstream.config import Settings
from agentstream.events import Event
from agentstream.kafka.table import TopicTable
from agentstream.registry.catalog import ToolCatalog
from agentstream.topics import CATALOG, CONTROL, load_topics


class CatalogReader(TopicTable):
    def __init__(self, settings: Settings, catalog: ToolCatalog | None = None) -> None:
        topics = load_topics(settings.topic_prefix)
        super().__init__(settings, [topics[CATALOG].name, topics[CONTROL].name])
        self.catalog = catalog if catalog is not None else ToolCatalog()

    def _on_event(self, event: Event) -> None:
        self.catalog.apply(event)
