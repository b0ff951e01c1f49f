"""Step 3 of the commit order (agentstream/kafka/hosting.py: commit_stores, CoreSlot) on real
RocksDB stores: a store with staged changes is written with the offset it reflects, every time; a
store the batch left unchanged moves its offset only in memory until an offset write is due or its
partition closes, so a batch costs one write per core whose state it changed, not one per core."""

from __future__ import annotations

from pathlib import Path

from agentstream.kafka.hosting import CoreSlot, Partition, commit_stores
from agentstream.kafka.state import PartitionStore


class Staged:
    """What commit_stores notes for the changelogs: (core, partition, next offset, staged keys)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int | None, list[bytes]]] = []

    def __call__(self, core: str, partition: int, store: PartitionStore, next_offset: int | None) -> None:
        self.calls.append((core, partition, next_offset, sorted(store.staged_changes())))


def _partition(root: Path, written: int = 10) -> Partition:
    slots = {}
    for core in ("busy", "idle"):
        store = PartitionStore(root / core)
        store.commit(written)
        slots[core] = CoreSlot(store, written, written)
    return Partition(slots, recovery_target=written, recovering=False)


def test_only_the_store_a_batch_changed_is_written_and_it_carries_its_offset(tmp_path: Path) -> None:
    part = _partition(tmp_path)
    busy, idle = part.slots["busy"], part.slots["idle"]
    staged = Staged()
    busy.store.put("run/a", {"step": 1})
    commit_stores({0: part}, {0: 14}, staged, offsets_due=False)
    assert staged.calls == [("busy", 0, 15, [b"run/a"])]
    assert busy.store.offset() == 15 and busy.written_offset == 15
    # The idle core applied (or skipped) offsets 10..14 without a change: its offset waits.
    assert idle.next_offset == 15 and idle.store.offset() == 10 and idle.offset_behind
    commit_stores({0: part}, {0: 20}, staged, offsets_due=False)
    assert len(staged.calls) == 1 and busy.store.offset() == 15 and idle.store.offset() == 10

    # Due: every lagging offset is written (and noted for the changelog), with no state change.
    commit_stores({0: part}, {}, staged, offsets_due=True)
    assert staged.calls[1:] == [("busy", 0, 21, []), ("idle", 0, 21, [])]
    assert busy.store.offset() == idle.store.offset() == 21 and not idle.offset_behind
    commit_stores({0: part}, {}, staged, offsets_due=True)
    assert len(staged.calls) == 3  # nothing behind: nothing written


def test_a_change_made_without_new_input_is_written_with_the_offset_already_reached(tmp_path: Path) -> None:
    part = _partition(tmp_path)
    commit_stores({0: part}, {0: 11}, Staged(), offsets_due=False)
    idle = part.slots["idle"]
    idle.store.put("timer/x", 1)  # a tick or a hand-off, no fetched input in this batch
    commit_stores({0: part}, {}, Staged(), offsets_due=False)
    assert idle.store.offset() == 12 and idle.store.get("timer/x") == 1


def test_closing_a_partition_writes_what_its_stores_reflect_and_drops_a_half_done_input(tmp_path: Path) -> None:
    part = _partition(tmp_path)
    commit_stores({0: part}, {0: 30}, Staged(), offsets_due=False)
    busy = part.slots["busy"]
    busy.store.put("run/b", 1)  # staged by an input whose events were never journaled
    part.close()
    reopened = {core: PartitionStore(tmp_path / core) for core in ("busy", "idle")}
    assert reopened["idle"].offset() == 31  # clean: its lag written on the way out
    # The half-done input is dropped: it comes again from the journal, after offset 31.
    assert reopened["busy"].offset() == 31 and reopened["busy"].get("run/b") is None
    for store in reopened.values():
        store.close()


def test_a_store_restored_with_no_offset_writes_its_first_one_when_due(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "new")
    slot = CoreSlot(store, 0)  # assigned with nothing stored: read from the log's start
    part = Partition({"core": slot}, recovery_target=0, recovering=False)
    assert slot.offset_behind
    commit_stores({0: part}, {}, Staged(), offsets_due=True)
    assert store.offset() == 0
    store.close()
