"""Restoring lost partition stores from their changelog (agentstream/kafka/changelog.py).

A processor that finds no offset in a partition's store calls `restore` before it consumes the
journal: it reads the changelog partition from its start to its end, writes into the store what
every complete batch left (drops what a torn last batch wrote: the records after the last marker)
and returns the journal offset that state reflects. The runtime then consumes the journal from
that offset (with `live=False` up to the end it saw at assignment, as after any restart). `None`
means the changelog holds no marker for the partition (a new deployment, or one that never wrote a
changelog): the runtime falls back to replaying the journal from its beginning.

What a restore reads is the compacted changelog: about one record per live key (plus the records
the log cleaner has not reached yet, and tombstones younger than `delete.retention.ms`), so its
time follows the state that is live, not the journal's history. A restore must end within
`delete.retention.ms` (topics.yaml: 5 min): the cleaner removes a deleted key's value in one pass
and its tombstone in a later one, at least that long after, so only a read spanning both passes
could keep the value and miss the tombstone. Nothing else writes the partition meanwhile: its one
writer is the processor that is restoring it. `restore_topics` reads every
lost partition of every hosted core with one consumer, so their fetches overlap.

A store that has an offset but whose changelog partition is empty (a store older than its
changelog) must first be copied to it whole, or a later restore would miss every key written
before: `Restored.seed` says so, `ChangelogWriter.seed_records` makes the copy.

Blocking (librdkafka calls); the runtime's rebalance callback already runs off the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from agentstream.kafka.changelog import MARKER_KEY, decode_marker
from agentstream.kafka.consumer import ConsumerFactory, consumer_config, fetch_batch, watermarks
from agentstream.kafka.state import PartitionStore

log = logging.getLogger("agentstream.recovery")

# Keys written to RocksDB per write batch while restoring; bounds the memory a restore holds.
CHUNK_KEYS = 50_000
# The shared assign-only group id the ACLs grant every processor (acls.ASSIGN_ONLY_GROUPS): these
# readers never join a group or commit.
_GROUP = "agentstream-table-reader"


class RestoreError(RuntimeError):
    """A changelog could not be read to its end (the broker stopped answering, or refused). The
    stores are left empty and without an offset: a retry restores them from scratch, and a
    replay of the journal from its beginning rebuilds them."""


@dataclass(frozen=True)
class Restored:
    offset: int | None  # the journal offset the restored state reflects; None: no changelog
    records: int  # changelog records read
    written: int  # keys written (or deleted) in the store
    dropped: int  # keys written after the last marker: a torn batch, replayed from the journal instead
    seconds: float
    # The store has an offset but its changelog partition is empty (a store older than its
    # changelog): produce ChangelogWriter.seed_records before the partition's next changes.
    seed: bool = False


@dataclass
class _Progress:
    store: PartitionStore
    high: int
    confirmed: dict[bytes, bytes | None] = field(default_factory=dict)  # complete batches, not yet written
    pending: dict[bytes, bytes | None] = field(default_factory=dict)  # the batch since the last marker
    offset: int | None = None
    records: int = 0
    written: int = 0
    position: int = -1  # the last changelog offset read

    @property
    def done(self) -> bool:
        return self.position >= self.high - 1

    def take(self, msg: Message) -> None:
        self.position = msg.offset() or 0
        self.records += 1
        key = msg.key()
        if key is None:
            return
        if key != MARKER_KEY:
            self.pending[key] = msg.value()
            return
        value = msg.value()
        if value is None:
            return
        self.offset = decode_marker(value)
        self.confirmed.update(self.pending)
        self.pending.clear()
        if len(self.confirmed) >= CHUNK_KEYS:
            self.store.write_raw(self.confirmed)  # no offset yet: a restore cut short is redone whole
            self.written += len(self.confirmed)
            self.confirmed.clear()

    def finish(self) -> None:
        if self.offset is None:
            self.store.clear()
            return
        self.store.write_raw(self.confirmed, self.offset)
        self.written += len(self.confirmed)
        self.confirmed.clear()


def restore(
    bootstrap: str,
    kafka_extra: Mapping[str, str] | None,
    topic: str,
    partition: int,
    store: PartitionStore,
    *,
    stall_s: float = 30.0,
) -> int | None:
    """Restores `store` from changelog `topic`'s `partition`; returns the journal offset to resume
    from, or None to replay the journal from its beginning. See `restore_all`."""
    return restore_partition(bootstrap, kafka_extra, topic, partition, store, stall_s=stall_s).offset


def restore_partition(
    bootstrap: str,
    kafka_extra: Mapping[str, str] | None,
    topic: str,
    partition: int,
    store: PartitionStore,
    *,
    stall_s: float = 30.0,
) -> Restored:
    return restore_all(bootstrap, kafka_extra, topic, {partition: store}, stall_s=stall_s)[partition]


def restore_all(
    bootstrap: str,
    kafka_extra: Mapping[str, str] | None,
    topic: str,
    stores: Mapping[int, PartitionStore],
    *,
    stall_s: float = 30.0,
) -> dict[int, Restored]:
    """Reads changelog partition p into `stores[p]` for every p, with one consumer. See
    `restore_topics`."""
    return restore_topics(bootstrap, kafka_extra, {topic: stores}, stall_s=stall_s)[topic]


def restore_topics(
    bootstrap: str,
    kafka_extra: Mapping[str, str] | None,
    stores: Mapping[str, Mapping[int, PartitionStore]],
    *,
    stall_s: float = 30.0,
    consumers: ConsumerFactory = Consumer,
) -> dict[str, dict[int, Restored]]:
    """Restores `stores[topic][p]` from partition p of changelog `topic`, for every topic and p,
    with one consumer (a process hosting several cores restores them all at once). A store that
    has an offset is left alone and its offset returned (with `seed` set when its changelog
    partition is empty); one without is cleared first (keys without an offset are what a restore
    or replay cut short left). Raises RestoreError when the read makes no progress for `stall_s`
    seconds."""
    started = time.monotonic()
    out: dict[str, dict[int, Restored]] = {topic: {} for topic in stores}
    lost: dict[tuple[str, int], PartitionStore] = {}
    kept: dict[tuple[str, int], int] = {}
    for topic, by_partition in stores.items():
        for partition, store in by_partition.items():
            existing = store.offset()
            if existing is not None:
                kept[(topic, partition)] = existing
            else:
                store.clear()
                lost[(topic, partition)] = store
    progress: dict[tuple[str, int], _Progress] = {}
    consumer = consumers(consumer_config(bootstrap, kafka_extra, {"group.id": _GROUP, "fetch.wait.max.ms": 100}))
    try:
        present = {topic: _partitions(consumer, topic, min(15.0, stall_s)) for topic in stores}
        for (topic, partition), existing in kept.items():
            empty = partition in present[topic] and _empty(consumer, topic, partition)
            out[topic][partition] = Restored(existing, 0, 0, 0, 0.0, seed=empty)
        for (topic, partition), store in lost.items():
            if partition not in present[topic]:
                log.warning("no changelog %s[%d]: the journal is replayed from its beginning", topic, partition)
                continue
            low, high = watermarks(consumer, TopicPartition(topic, partition))
            if high > low:
                progress[(topic, partition)] = _Progress(store, high)
        if progress:
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in progress])
            _read(consumer, progress, stall_s)
    except BaseException as exc:
        # What a restore cut short wrote must not meet a replay from the journal's beginning.
        for store in lost.values():
            store.clear()
        if isinstance(exc, KafkaException):
            raise RestoreError(f"changelogs not read: {exc.args[0].str()}") from None
        raise
    finally:
        consumer.close()
    seconds = time.monotonic() - started
    for topic, partition in lost:
        p = progress.get((topic, partition))
        r = Restored(None, 0, 0, 0, seconds) if p is None else Restored(p.offset, p.records, p.written,
                                                                        len(p.pending), seconds)  # fmt: skip
        out[topic][partition] = r
        log.debug(
            "restored %s[%d]: %d records, %d keys written, %d dropped (torn batch), offset %s, %.2fs",
            topic, partition, r.records, r.written, r.dropped, r.offset, r.seconds,
        )  # fmt: skip
    if lost:  # one line per restore, however many stores it covered
        done = [r for parts in out.values() for r in parts.values()]
        log.info("restored %d stores from %d changelog topics: %d records, %d keys, %d dropped (torn), %.2fs",
                 len(lost), len(out), sum(r.records for r in done), sum(r.written for r in done),
                 sum(r.dropped for r in done), seconds)  # fmt: skip
    return out


def _empty(consumer: Consumer, topic: str, partition: int) -> bool:
    low, high = watermarks(consumer, TopicPartition(topic, partition))
    return high <= low


def _partitions(consumer: Consumer, topic: str, timeout_s: float) -> set[int]:
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return set()
    return set(metadata.partitions)


def _read(consumer: Consumer, progress: dict[tuple[str, int], _Progress], stall_s: float) -> None:
    last_progress = time.monotonic()
    while not all(p.done for p in progress.values()):
        msgs = fetch_batch(consumer, 10_000, 0.5)
        if not msgs:
            # The last records can be gone (a tombstone the cleaner removed): the position says
            # whether the end was passed.
            open_ = [TopicPartition(t, n) for (t, n), p in progress.items() if not p.done]
            for tp in consumer.position(open_):
                p = progress[(tp.topic, tp.partition)]
                p.position = max(p.position, tp.offset - 1)
            if all(p.done for p in progress.values()):
                break
            if time.monotonic() - last_progress > stall_s:
                where = ", ".join(f"{t}[{n}] {p.position + 1} of {p.high}" for (t, n), p in progress.items()
                                  if not p.done)  # fmt: skip
                raise RestoreError(f"changelogs not read to their end in {stall_s}s: {where}")
            continue
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("changelog %s read error: %s", msg.topic(), err)
                continue
            taker = progress.get((msg.topic() or "", msg.partition() or 0))
            if taker is not None:
                taker.take(msg)
        last_progress = time.monotonic()
    for p in progress.values():
        p.finish()
