"""The quarantines on record: the control topic's `ToolQuarantined` records, latest per id."""

from __future__ import annotations

from agentstream.config import Settings
from agentstream.events import Event, ToolQuarantined
from agentstream.kafka.table import TopicTable
from agentstream.topics import CONTROL, load_topics


class QuarantineError(ValueError):
    """A quarantine request that cannot be carried out: the message says why (CLI exit 2)."""


class QuarantineReader(TopicTable):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, [load_topics(settings.topic_prefix)[CONTROL].name])
        self.quarantines: dict[str, ToolQuarantined] = {}

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ToolQuarantined):
            self.quarantines[event.quarantine_id] = event


async def read_quarantines(settings: Settings) -> dict[str, ToolQuarantined]:
    async with QuarantineReader(settings) as reader:
        return dict(reader.quarantines)
