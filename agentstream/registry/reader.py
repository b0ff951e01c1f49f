"""Keeps a ToolCatalog current from the tools.catalog and control topics."""

from __future__ import annotations

import logging

from confluent_kafka import Message

from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.kafka.consumer import TableReader
from agentstream.registry.catalog import ToolCatalog
from agentstream.topics import CATALOG, CONTROL, load_topics

log = logging.getLogger(__name__)


class CatalogReader:
    def __init__(self, settings: Settings, catalog: ToolCatalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else ToolCatalog()
        self._codec = AvroCodec()
        topics = load_topics(settings.topic_prefix)
        self._readers = [
            TableReader(settings.bootstrap_servers, topics[name].name, self._apply, settings.kafka_extra)
            for name in (CATALOG, CONTROL)
        ]

    def _apply(self, msg: Message) -> None:
        value = msg.value()
        if value is None:
            return
        try:
            self.catalog.apply(self._codec.decode(value))
        except DecodeError as exc:
            # A side input: a bad record is not offered, and must not stop the processor.
            log.warning("skipping an undecodable registry record at offset %s: %s", msg.offset(), exc)

    async def catch_up(self) -> None:
        for reader in self._readers:
            await reader.catch_up()

    def poll_nowait(self) -> int:
        return sum(reader.poll_nowait() for reader in self._readers)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
