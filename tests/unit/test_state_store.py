"""The partition store: state and offset land together, survive a reopen, and the cache stays bounded."""

from __future__ import annotations

from pathlib import Path

from agentstream.kafka import state
from agentstream.kafka.state import PartitionStore


def test_state_and_offset_are_written_together_and_survive_reopen(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0")
    assert store.offset() is None  # a new store: the runtime rebuilds from the topic
    store.put("run/a", {"step": 1})
    store.put("active/a", 1)
    assert store.get("run/a") == {"step": 1}  # staged values are visible before the commit
    store.discard_staged()
    assert store.get("run/a") is None and store.offset() is None  # nothing half-written
    store.put("run/a", {"step": 2})
    store.put("active/a", 1)
    store.commit(42)
    store.delete("active/a")
    assert list(store.keys_with_prefix("active/")) == []
    store.commit(43)
    store.close()
    reopened = PartitionStore(tmp_path / "p0")
    assert reopened.offset() == 43
    assert reopened.get("run/a") == {"step": 2}
    assert list(reopened.keys_with_prefix("active/")) == []
    reopened.close()


def test_prefix_scan_stops_at_the_prefix(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p1")
    for key in ("a/1", "a/2", "ab/1", "b/1"):
        store.put(key, 1)
    store.commit(1)
    store.put("a/3", 1)
    assert sorted(store.keys_with_prefix("a/")) == ["a/1", "a/2", "a/3"]
    store.close()


def test_prefix_scan_among_deleted_keys_and_neighbouring_prefixes(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p3")
    for run in range(300):  # finished runs: their keys written, then deleted (tombstones)
        for call in range(5):
            store.put(f"pending/r{run}/c{call}", 1)
        store.commit(run)
        for call in range(5):
            store.delete(f"pending/r{run}/c{call}")
        store.commit(run)
    for key in ("pending/r1/c9", "pending/r10/c1", "pending/r1", "pending/r10", "pending/r1/", "pending/r2/c0"):
        store.put(key, 1)
    store.commit(400)
    store.delete("pending/r2/c0")  # staged, not committed: hidden from the scan
    assert sorted(store.keys_with_prefix("pending/r1/")) == ["pending/r1/", "pending/r1/c9"]
    assert sorted(store.keys_with_prefix("pending/r10/")) == ["pending/r10/c1"]
    assert list(store.keys_with_prefix("pending/r2/")) == []
    assert list(store.keys_with_prefix("pending/r299/")) == []
    assert len(list(store.keys_with_prefix("pending/"))) == 5
    store.close()


def test_read_cache_is_bounded(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p2")
    limit = state.CACHE_ENTRIES
    for i in range(limit + 50):
        store.put(f"k/{i}", i)
    store.commit(1)
    assert len(store._cache) == limit
    assert store.get("k/0") == 0  # evicted entries are read back from RocksDB
    store.close()
