"""Partition-local state in RocksDB, written atomically with the input offset it reflects.

One database per (processor, topic partition), so a rebalance moves or drops whole stores. Reads
go through an in-memory cache of the batch being built; `commit` writes the batch's changes and
the next input offset in one RocksDB WriteBatch: after a crash the store and the offset agree.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from rocksdict import Options, Rdict, WriteBatch

_OFFSET_KEY = b"\x00offset"
CACHE_ENTRIES = 20_000
_DELETED = object()


class PartitionStore:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options=options)
        self._staged: dict[bytes, Any] = {}
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
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        raw = self._db.get(k)
        if raw is None:
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

    def delete(self, key: str) -> None:
        self._staged[key.encode()] = _DELETED

    def keys_with_prefix(self, prefix: str) -> Iterator[str]:
        """Committed and staged keys under `prefix` (staged deletions excluded)."""
        p = prefix.encode()
        seen: set[bytes] = set()
        for k, value in self._staged.items():
            if k.startswith(p):
                seen.add(k)
                if value is not _DELETED:
                    yield k.decode()
        for raw in self._db.keys(from_key=p):
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
        batch = WriteBatch(raw_mode=True)
        for k, value in self._staged.items():
            if value is _DELETED:
                batch.delete(k)
                self._cache.pop(k, None)
            else:
                batch.put(k, orjson.dumps(value))
                self._remember(k, value)
        if next_offset is not None:
            batch.put(_OFFSET_KEY, str(next_offset).encode())
        self._db.write(batch)
        self._staged.clear()

    def discard_staged(self) -> None:
        self._staged.clear()

    def close(self) -> None:
        self._cache.clear()
        self._db.close()
