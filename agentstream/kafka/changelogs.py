"""The hosted cores' state changelogs, as the runtime uses them: restore lost stores on assignment,
and write the coalesced changes every few seconds (see agentstream/kafka/changelog.py for the
record format and agentstream/kafka/recovery.py for the restore).

Writing per batch would cost several changelog records per journal event (a run's state key is
rewritten at nearly every event of a step); coalescing over an interval keeps the latest value per
key, so the changelog costs follow the number of live keys touched per second. The store itself
still commits every batch; the changelog trails it by at most the interval, and each flush ends
with the journal offset its state reflects, so a restore is consistent and replays the journal
from there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from confluent_kafka import Consumer

from agentstream.kafka.changelog import ChangelogWriter
from agentstream.kafka.consumer import ConsumerFactory
from agentstream.kafka.journal import Record
from agentstream.kafka.recovery import RestoreError, restore_topics
from agentstream.kafka.state import PartitionStore

log = logging.getLogger("agentstream.runtime")


class StateChangelogs:
    def __init__(
        self,
        topics: Mapping[str, str],
        bootstrap: str,
        kafka_extra: Mapping[str, str],
        interval_s: float,
        *,
        consumers: ConsumerFactory = Consumer,
        open_store: Callable[[Path], PartitionStore] = PartitionStore,
    ) -> None:
        self._writers = {core: ChangelogWriter(topic) for core, topic in topics.items()}
        self._bootstrap = bootstrap
        self._extra = dict(kafka_extra)
        self._interval_s = interval_s
        self._next_flush = time.monotonic() + interval_s
        self._consumers = consumers
        self._open_store = open_store
        self._seeds: list[Record] = []  # whole stores older than their changelog, for the next flush

    def open_stores(
        self, partitions: list[int], cores: list[str], path: Callable[[str, int], Path]
    ) -> dict[tuple[str, int], PartitionStore]:
        """Every core's store of every partition; a store without an offset is restored from its
        core's changelog first (one consumer for all of them)."""
        stores = {(core, p): self._open_store(path(core, p)) for p in partitions for core in cores}
        wanted: dict[str, dict[int, PartitionStore]] = {}
        for (core, p), store in stores.items():
            if core in self._writers:
                wanted.setdefault(self._writers[core].topic, {})[p] = store
        if not wanted:
            return stores
        try:
            restored = restore_topics(self._bootstrap, self._extra, wanted, consumers=self._consumers)
        except RestoreError as exc:  # the stores stay without offsets: they are replayed from the journal
            log.warning("state restore failed: %s; replaying the journal instead", exc)
            return stores
        for core, writer in self._writers.items():
            for p, result in restored.get(writer.topic, {}).items():
                if result.seed:
                    self._seeds.extend(writer.seed_records(p, stores[(core, p)]))
        return stores

    def stage(self, core: str, partition: int, store: PartitionStore, next_offset: int | None) -> None:
        writer = self._writers.get(core)
        if writer is not None:
            writer.stage(partition, store, next_offset)

    def due(self) -> bool:
        return bool(self._writers) and time.monotonic() >= self._next_flush

    def flush(self) -> list[Record]:
        self._next_flush = time.monotonic() + self._interval_s
        out, self._seeds = self._seeds, []
        for writer in self._writers.values():
            out += writer.flush()
        return out

    def forget(self, partition: int) -> None:
        for writer in self._writers.values():
            writer.forget(partition)
