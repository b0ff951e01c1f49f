"""Partition-local state in RocksDB, written atomically with the input offset it reflects.

One database per (processor, topic partition), so a rebalance moves or drops whole stores. Reads
go through an in-memory cache of the batch being built; `commit` writes the batch's changes and
the next input offset in one RocksDB WriteBatch: after a crash the store and the offset agree.

`staged_changes` serialises a batch once, for the changelog (agentstream/kafka/changelog.py) and
for `commit` alike; `write_raw` and `clear` serve a restore from that changelog (recovery.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Options, Rdict, ReadOptions, WriteBatch

_OFFSET_KEY = b"\x00offset"
OFFSET_KEY = _OFFSET_KEY  # also the changelog's key for the offset a partition's state reflects
CACHE_ENTRIES = 20_000
_DELETED = object()
_UNKNOWN = object()  # not in the cache
_ABSENT = object()  # cached: not in the store


class PartitionStore:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options=options)
        self._closed = False
        self._staged: dict[bytes, Any] = {}
        # The staged batch as bytes (None for a deletion), once asked for; any later write drops it.
        self._serialized: dict[bytes, bytes | None] | None = None
        # Committed values as the core last wrote them, so the hot path skips re-parsing JSON.
        # Bounded (least recently used out): a partition's keys grow with every run it ever saw.
        self._cache: OrderedDict[bytes, Any] = OrderedDict()

    def offset(self) -> int | None:
        """The next input offset to consume, or None for a new (or lost) store."""
        raw = self._db.get(_OFFSET_KEY)
        return None if raw is None else int(raw)

    def get(self, key: str) -> Any | None:
        k = key.encode()
        if k in self._staged:
            value = self._staged[k]
            return None if value is _DELETED else value
        cached = self._cache.get(k, _UNKNOWN)
        if cached is not _UNKNOWN:
            self._cache.move_to_end(k)
            return None if cached is _ABSENT else cached
        raw = self._db.get(k)
        if raw is None:
            # Absences are cached too: most lookups of a step ask whether something already
            # happened (a call done, a run ended), and the answer is mostly no.
            self._remember(k, _ABSENT)
            return None
        value = orjson.loads(raw)
        self._remember(k, value)
        return value

    def _remember(self, k: bytes, value: Any) -> None:
        self._cache[k] = value
        self._cache.move_to_end(k)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    def put(self, key: str, value: Any) -> None:
        self._staged[key.encode()] = value
        self._serialized = None

    def delete(self, key: str) -> None:
        self._staged[key.encode()] = _DELETED
        self._serialized = None

    def staged_changes(self) -> dict[bytes, bytes | None]:
        """The batch `commit` will write: each staged key with its stored bytes, None for a
        deletion. The changelog carries exactly these bytes, so a restore equals the store."""
        if self._serialized is None:
            self._serialized = {
                k: None if value is _DELETED else orjson.dumps(value) for k, value in self._staged.items()
            }
        return self._serialized

    def keys_with_prefix(self, prefix: str) -> Iterator[str]:
        """Committed and staged keys under `prefix` (staged deletions excluded)."""
        p = prefix.encode()
        seen: set[bytes] = set()
        for k, value in self._staged.items():
            if k.startswith(p):
                seen.add(k)
                if value is not _DELETED:
                    yield k.decode()
        # Bounded to the prefix: unbounded, the iterator steps over every deleted key (a RocksDB
        # tombstone, kept until compaction) past the prefix until it meets a live one, and the
        # deleted keys of every finished run lie there: ~130 µs a scan after 3,000 runs, ~3 bounded.
        bounded = ReadOptions()
        if (end := _prefix_end(p)) is not None:
            bounded.set_iterate_upper_bound(end)
        for raw in self._db.keys(from_key=p, read_opt=bounded):
            if not isinstance(raw, bytes) or not raw.startswith(p):
                break
            if raw not in seen:
                yield raw.decode()

    @property
    def cached_entries(self) -> int:
        return len(self._cache)

    @property
    def dirty(self) -> bool:
        return bool(self._staged)

    def commit(self, next_offset: int | None) -> None:
        serialized = self.staged_changes()
        batch = WriteBatch(raw_mode=True)
        for k, value in self._staged.items():
            raw = serialized[k]
            if raw is None:
                batch.delete(k)
                self._remember(k, _ABSENT)
            else:
                batch.put(k, raw)
                self._remember(k, value)
        if next_offset is not None:
            batch.put(_OFFSET_KEY, str(next_offset).encode())
        self._db.write(batch)
        self._staged.clear()
        self._serialized = None

    def discard_staged(self) -> None:
        self._staged.clear()
        self._serialized = None

    def write_raw(self, changes: Mapping[bytes, bytes | None], next_offset: int | None = None) -> None:
        """Writes stored bytes as they are (None deletes), with the offset when given: a restore
        writes its chunks without one and the offset last, so a restore cut short leaves a store
        with no offset, which is restored again from scratch."""
        if self._staged:
            raise RuntimeError("write_raw on a store with staged changes: commit or discard them first")
        batch = WriteBatch(raw_mode=True)
        for k, raw in changes.items():
            self._cache.pop(k, None)
            if raw is None:
                batch.delete(k)
            else:
                batch.put(k, raw)
        if next_offset is not None:
            batch.put(_OFFSET_KEY, str(next_offset).encode())
        self._db.write(batch)

    def clear(self) -> None:
        """Deletes every key, the offset included (a store about to be restored)."""
        self.discard_staged()
        self._cache.clear()
        # Every key sorts below 0xff...; the offset key (0x00...) is the lowest of all.
        self._db.delete_range(b"", b"\xff" * 64)

    def committed(self) -> dict[bytes, bytes]:
        """Every committed key with its stored bytes, the offset excluded (for checks and sizing;
        it reads the whole store)."""
        return {k: v for k, v in self._db.items() if isinstance(k, bytes) and k != _OFFSET_KEY}

    def has_committed(self, key: bytes) -> bool:
        """Whether `key` was in the store before the staged batch (a raw key, as staged_changes gives)."""
        cached = self._cache.get(key, _UNKNOWN)
        if cached is not _UNKNOWN:
            return cached is not _ABSENT
        return self._db.get(key) is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._cache.clear()
        self._db.close()


def _prefix_end(prefix: bytes) -> bytes | None:
    """The least key above every key that starts with `prefix` (None: no such key, all 0xff)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


class EndedRuns:
    """Markers of the runs that ended in a partition, for cores that must still recognise a late
    duplicate of a run's event (a re-sent request, a request re-emitted after a crash) once the
    run's own state is deleted. Only the last `keep` ended runs of the partition keep a marker:
    marking one removes the marker of the run that ended `keep` runs before it, so the markers
    are bounded by the partition's rate of ending runs, never by its history, and need no clock
    (a replay drops exactly what the live core dropped).

    Keys under `prefix`: `<prefix><run_id>` -> the run's sequence number (>= 1, so the lookup is
    truthy), `<prefix>#/<seq>` -> run id (the eviction order) and `<prefix>#next`.
    """

    def __init__(self, prefix: str, keep: int) -> None:
        if not prefix.endswith("/") or keep < 1:
            raise ValueError("EndedRuns needs a prefix ending in '/' and keep >= 1")
        self.prefix = prefix
        self.keep = keep
        self._next = f"{prefix}#next"

    def ended(self, store: PartitionStore, run_id: str) -> bool:
        return store.get(self.prefix + run_id) is not None

    def mark(self, store: PartitionStore, run_id: str) -> None:
        if self.ended(store, run_id):
            return
        seq = int(store.get(self._next) or 1)
        store.put(self.prefix + run_id, seq)
        store.put(f"{self.prefix}#/{seq:012d}", run_id)
        store.put(self._next, seq + 1)
        evicted = seq - self.keep
        if evicted >= 1:
            old = store.get(f"{self.prefix}#/{evicted:012d}")
            store.delete(f"{self.prefix}#/{evicted:012d}")
            if old is not None and store.get(self.prefix + str(old)) == evicted:
                store.delete(self.prefix + str(old))
