"""Which single-use delegations were already exchanged.

A single-use token must be refused the second time even after the broker restarts, so the
production store is RocksDB on local disk; the in-memory one is for tests and one-shot processes.
Entries are only needed until their token expires (an expired token is refused anyway), which is
what `prune` relies on to keep the store small.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from rocksdict import Options, Rdict, WriteOptions

_PREFIX = b"used/"


class UsedTokens(Protocol):
    def claim(self, token_id: str, expires_ms: int) -> bool:
        """Records the token as used: True the first time, False on every later call."""
        ...

    def prune(self, now_ms: int) -> int:
        """Forgets tokens expired by `now_ms`; returns how many."""
        ...

    def close(self) -> None: ...


class MemoryUsedTokens:
    def __init__(self) -> None:
        self._used: dict[str, int] = {}
        # The check and the insert must be one step, or two concurrent exchanges could both win.
        self._lock = threading.Lock()

    def claim(self, token_id: str, expires_ms: int) -> bool:
        with self._lock:
            if token_id in self._used:
                return False
            self._used[token_id] = expires_ms
            return True

    def prune(self, now_ms: int) -> int:
        with self._lock:
            expired = [t for t, exp in self._used.items() if exp <= now_ms]
            for token_id in expired:
                del self._used[token_id]
            return len(expired)

    def close(self) -> None:
        pass


class RocksUsedTokens:
    """Used token ids in RocksDB. RocksDB locks its directory, so one process owns a store."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options=options)
        # Synced writes: a claim acknowledged before a power loss must still be there after it,
        # or the token could be exchanged again. Claims are rare enough for the fsync cost.
        self._write_options = WriteOptions()
        self._write_options.sync = True
        self._lock = threading.Lock()

    def claim(self, token_id: str, expires_ms: int) -> bool:
        key = _PREFIX + token_id.encode()
        with self._lock:
            if self._db.get(key) is not None:
                return False
            self._db.put(key, str(expires_ms).encode(), write_opt=self._write_options)
            return True

    def prune(self, now_ms: int) -> int:
        with self._lock:
            expired = []
            for key, value in self._db.items(from_key=_PREFIX):
                if not isinstance(key, bytes) or not key.startswith(_PREFIX):
                    break
                if int(value) <= now_ms:
                    expired.append(key)
            for key in expired:
                self._db.delete(key)
            return len(expired)

    def close(self) -> None:
        with self._lock:
            self._db.close()
