"""What the shell keeps per hosted core and per assigned partition.

A process hosts one or more cores (see agentstream/kafka/runtime.py). Each core keeps its own
RocksDB store per journal partition, with the next journal offset that store reflects: stores are
committed one after another, so after a crash each core resumes from its own offset and skips what
it already applied, instead of all cores trusting the slowest one's offset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agentstream.events import Event
from agentstream.kafka.consumer import watermarks
from agentstream.kafka.core import Outcome, ProcessorCore
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.state import PartitionStore

Tick = Callable[[PartitionStore, int], Outcome]
log = logging.getLogger("agentstream.runtime")


@dataclass
class HostedCore:
    core: ProcessorCore
    # Signs what this core emits with its own writer key: the journal says which core wrote what.
    records: RecordFactory
    # Checks on a decoded, writer-verified event: a reason keeps it from this core (dead-lettered).
    vet: list[Callable[[Event], str | None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def tick(self) -> Tick | None:
        # Cores with timers (the approval timer) expose `tick(store, now_ms)`; the shell calls it on
        # every live partition, so deadlines fire from rebuilt state after any restart.
        found: Tick | None = getattr(self.core, "tick", None)
        return found

    def applied_when_emitted(self, event: Event) -> bool:
        """Whether the core already applied `event` to its state when it emitted it, so handing it
        back in-process would be a no-op (`applied_when_emitted(event)` on the core; the journal's
        copy is still applied on a replay)."""
        check: Callable[[Event], bool] | None = getattr(self.core, "applied_when_emitted", None)
        return check is not None and check(event)

    def problem(self, event: Event) -> str | None:
        for check in self.vet:
            if (problem := check(event)) is not None:
                return problem
        return None


@dataclass
class CoreSlot:
    """One core's store for one partition, and the offset the store reflects.

    `written_offset` is the offset the store holds on disk. It may lag `next_offset` when the
    events between changed nothing in this core's state: a write per core per batch only to move
    an offset was a sixth of the engine's CPU, so such an offset waits for the core's next state
    change, for `write_offset_if_clean` (at most once a second, and when the partition closes).
    A crash in between replays those events, which change nothing again, as a crash before a
    batch's commit replays that batch."""

    store: PartitionStore
    next_offset: int  # events below it are already in the store
    written_offset: int = -1

    def commit(self) -> None:
        """The staged state, with the offset it reflects."""
        self.store.commit(self.next_offset)
        self.written_offset = self.next_offset

    @property
    def offset_behind(self) -> bool:
        return self.next_offset > self.written_offset

    def write_offset_if_clean(self) -> None:
        if self.offset_behind and not self.store.dirty and not self.store.closed:
            self.commit()


@dataclass
class Partition:
    slots: dict[str, CoreSlot]
    recovery_target: int
    recovering: bool
    needs_resume: bool = True
    # Offsets of records this process journaled and already applied in-process: skipped undecoded
    # when the fetch brings them back.
    own: set[int] = field(default_factory=set)

    def close(self) -> None:
        for slot in self.slots.values():
            # Staged changes are an input not yet journaled: dropped, and its offset not written.
            slot.store.discard_staged()
            slot.write_offset_if_clean()
            slot.store.close()


def commit_stores(
    partitions: dict[int, Partition], last_offsets: dict[int, int],
    stage: Callable[[str, int, PartitionStore, int | None], None], *, offsets_due: bool,
) -> None:  # fmt: skip
    """Step 3 of the commit order (agentstream/kafka/runtime.py): every store with staged changes
    is written with the offset it reflects, each noted first for its changelog (`stage`); a store
    the batch left unchanged only moves its offset in memory, written when `offsets_due`."""
    for partition, part in partitions.items():
        advanced = last_offsets.get(partition)
        for name, slot in part.slots.items():
            if advanced is not None and advanced + 1 > slot.next_offset:
                slot.next_offset = advanced + 1
            if slot.store.dirty or (offsets_due and slot.offset_behind):
                stage(name, partition, slot.store, slot.next_offset)
                slot.commit()


def store_path(state_dir: Path, core: str, instance: str, partition: int) -> Path:
    return state_dir / f"{core}-{instance}" / f"p{partition:03d}"


@dataclass
class Assigned:
    """A partition just assigned: its slots, and the offset reading starts from (the lowest of its
    cores' offsets)."""

    partition: Partition
    begin: int


def assign_partitions(
    consumer: Consumer,
    partitions: list[TopicPartition],
    cores: list[str],
    stores: dict[tuple[str, int], PartitionStore],
) -> tuple[dict[int, Assigned], int]:
    """Each assigned partition's slots from its cores' opened stores and the broker's watermarks,
    with `tp.offset` set where the consumer starts; and how many events are to read before acting.
    A watermark query that fails (the broker gone mid-assign) closes every store given and
    re-raises: the consumer that is then replaced gives up only what was assigned before, so stores
    left open would fail every later assign of their partitions on RocksDB's lock, for good."""
    assigned: dict[int, Assigned] = {}
    behind = 0
    try:
        for tp in partitions:
            low, high = watermarks(consumer, tp)
            slots: dict[str, CoreSlot] = {}
            for core in cores:
                store = stores[(core, tp.partition)]
                stored = store.offset()
                slots[core] = CoreSlot(
                    store, stored if stored is not None else low, stored if stored is not None else -1
                )
                log.debug("%s assigned p%d from %s (end %d)", core, tp.partition,
                          "beginning (rebuild)" if stored is None else stored, high)  # fmt: skip
            begin = min(slot.next_offset for slot in slots.values())
            behind += max(0, high - begin)
            tp.offset = begin if begin > low else OFFSET_BEGINNING
            assigned[tp.partition] = Assigned(Partition(slots, high, recovering=begin < high), begin)
    except BaseException:
        for store in stores.values():
            store.close()
        raise
    return assigned, behind
