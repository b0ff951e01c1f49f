"""State changelogs: every change a processor commits to a partition store, also written to a
compacted topic, so a lost store is restored from what is live instead of replaying the journal.

One topic per processor (`<prefix>.changelog.<processor>`, topics.yaml), with as many partitions
as the journal: journal partition p's store is changelog partition p. A record's key is the state
key and its value the exact bytes the store holds (a tombstone for a deletion), so compaction keeps
one record per live key and drops deleted ones. Each batch ends with a marker, key `\\x00offset`
(the store's own offset key), whose value is the next journal offset the state reflects.

Commit order in the runtime (agentstream/kafka/runtime.py): the batch's outputs and its changelog
records are produced together and acknowledged, then the store commits. So the changelog is never
behind a committed store; it can be ahead by one whole batch (a crash after the acks), which a
restore then yields together with that batch's offset, as a store that committed would. A crash
while the changelog records were being written leaves a torn batch with no marker after it:
`recovery.restore` drops records after the last marker, and the batch is replayed from the
journal. That drop is exact because the one writer of changelog partition p is the owner of journal
partition p, which restores before writing: a torn tail is still in the active segment, which the
log cleaner never touches, so the values it overwrote are still there.

Ordering: the records of one batch must land in the order given (marker last). The idempotent
producer keeps a partition's order across its own retries; a caller that re-sends after a failed
acknowledgement must re-send the partition's whole list from `records`, not only the failed ones.

Modelled on Kafka Streams' changelog topics and quix-streams' (quixstreams/state/recovery.py),
which likewise skip changelog records past the source offset that was committed.
"""

from __future__ import annotations

from collections.abc import Mapping

from agentstream.kafka.journal import Record
from agentstream.kafka.state import OFFSET_KEY, PartitionStore

MARKER_KEY = OFFSET_KEY
# A batch that changed nothing writes no marker, except when the last marker is this many journal
# offsets behind: a restore then replays at most this many events that changed nothing.
IDLE_MARKER_EVERY = 10_000


def changelog_short_name(processor: str) -> str:
    """The topic's name in topics.yaml (before the deployment's prefix)."""
    return f"changelog.{processor}"


def changelog_topic(prefix: str, processor: str) -> str:
    return f"{prefix}.{changelog_short_name(processor)}"


def encode_marker(next_offset: int) -> bytes:
    return str(next_offset).encode()


def decode_marker(value: bytes) -> int:
    return int(value)


class ChangelogWriter:
    """Turns a partition store's staged batch into the changelog records to produce with the
    batch's outputs. One per processor runtime; it remembers, per partition, the last marker it
    wrote, only to space out markers for batches that changed nothing."""

    def __init__(self, topic: str, *, idle_marker_every: int = IDLE_MARKER_EVERY) -> None:
        self.topic = topic
        self.idle_marker_every = idle_marker_every
        self._last_marker: dict[int, int] = {}
        self._pending: dict[int, dict[bytes, bytes | None]] = {}
        self._pending_offset: dict[int, int] = {}
        # Keys first written since the last flush: deleted again before it (a call's ledger entries,
        # a step's clearances), they need neither their value nor a tombstone in the changelog.
        self._born: dict[int, set[bytes]] = {}

    def records(self, partition: int, changes: Mapping[bytes, bytes | None], next_offset: int | None) -> list[Record]:
        """The records for one batch of `partition`: its `changes` (PartitionStore.staged_changes())
        and a marker holding `next_offset`, the journal offset the store commits with. Pass the
        store's current offset when the batch consumed nothing (a timer's changes): the marker
        then repeats it. With no offset known at all the changes go without a marker, and a
        restore drops them until a later batch's marker covers them."""
        out = [Record(self.topic, k, v, partition, []) for k, v in changes.items()]
        if next_offset is None:
            return out
        last = self._last_marker.get(partition)
        if out or last is None or next_offset - last >= self.idle_marker_every:
            out.append(Record(self.topic, MARKER_KEY, encode_marker(next_offset), partition, []))
            self._last_marker[partition] = next_offset
        return out

    def batch_records(self, partition: int, store: PartitionStore, next_offset: int | None) -> list[Record]:
        """`records` for the batch `store` has staged, which it will commit with `next_offset`
        (None: a batch that consumed nothing, which keeps the store's offset)."""
        return self.records(
            partition, store.staged_changes(), next_offset if next_offset is not None else store.offset()
        )

    def seed_records(self, partition: int, store: PartitionStore) -> list[Record]:
        """The whole committed store and its offset, for a changelog partition that is empty while
        the store is not (recovery's `Restored.seed`): a store older than its changelog."""
        offset = store.offset()
        out = [Record(self.topic, k, v, partition, []) for k, v in store.committed().items()]
        if offset is not None:
            out.append(Record(self.topic, MARKER_KEY, encode_marker(offset), partition, []))
            self._last_marker[partition] = offset
        return out

    def stage(self, partition: int, store: PartitionStore, next_offset: int | None) -> None:
        """Notes what `store` is about to commit (call it before `store.commit`). Changes are
        coalesced until `flush`: a run's state key is rewritten at every event of a step, and the
        changelog needs only its latest value, with the offset it goes with."""
        pending = self._pending.setdefault(partition, {})
        born = self._born.setdefault(partition, set())
        for key, value in store.staged_changes().items():
            if value is None:
                if key in born:  # created and deleted since the last flush: the changelog never saw it
                    pending.pop(key, None)
                    born.discard(key)
                    continue
                if key not in pending and not store.has_committed(key):
                    # Deleting what never was (an idempotent clean-up, or a key put and deleted
                    # within this batch): the changelog has no value to cover.
                    continue
            elif key not in pending and key not in born and not store.has_committed(key):
                born.add(key)
            pending[key] = value
        offset = next_offset if next_offset is not None else store.offset()
        if offset is not None:
            self._pending_offset[partition] = offset

    def flush(self) -> list[Record]:
        """Every change staged since the last flush, latest value per key, each partition's
        marker last: the records to write, in this order, as one unit (see the module's note)."""
        out: list[Record] = []
        for partition, changes in self._pending.items():
            out += self.records(partition, changes, self._pending_offset.get(partition))
        self._pending.clear()
        self._pending_offset.clear()
        self._born.clear()
        return out

    def forget(self, partition: int) -> None:
        """The partition was revoked: a later owner's markers are not this writer's, and what was
        not flushed yet is left to the journal (the next owner replays it from the last marker)."""
        self._last_marker.pop(partition, None)
        self._pending.pop(partition, None)
        self._pending_offset.pop(partition, None)
        self._born.pop(partition, None)
