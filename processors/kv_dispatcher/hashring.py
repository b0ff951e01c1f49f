"""Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA 2018).

Each replica owns `vnodes` points on a 64-bit ring. A key starts at its own point and walks
clockwise; plain consistent hashing takes the first replica it meets (`owner`), the bounded-load
variant takes the first one whose load is under ceil(c * (total + 1) / n) (`pick`). With c > 1 a
replica never holds more than c times the mean, and a key still moves only when its owner is full
or gone, so most sessions keep landing where their KV cache already is.

Hashes are blake2b, never Python's `hash()`: that one is salted per process, and every dispatcher
instance (and every restart) must place a session on the same replica.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    def __init__(self, nodes: Iterable[str], vnodes: int = 100) -> None:
        self.nodes = frozenset(nodes)
        points = sorted((stable_hash(f"{node}#{i}"), node) for node in self.nodes for i in range(vnodes))
        self._hashes = [h for h, _ in points]
        self._owners = [n for _, n in points]

    def walk(self, key: str) -> Iterator[str]:
        """Every node once, in clockwise order from the key's point."""
        if not self._owners:
            return
        start = bisect.bisect_left(self._hashes, stable_hash(key))
        seen: set[str] = set()
        size = len(self._owners)
        for i in range(size):
            node = self._owners[(start + i) % size]
            if node not in seen:
                seen.add(node)
                yield node
                if len(seen) == len(self.nodes):
                    return

    def owner(self, key: str, healthy: Iterable[str] | None = None) -> str | None:
        """Plain consistent hashing: the first (healthy) node clockwise, whatever its load."""
        allowed = None if healthy is None else set(healthy)
        return next((n for n in self.walk(key) if allowed is None or n in allowed), None)

    def pick(self, key: str, loads: Mapping[str, int], healthy: Iterable[str], c: float = 1.25) -> str | None:
        """The first healthy node clockwise whose load is under the bound; None without any."""
        allowed = set(healthy) & self.nodes
        if not allowed:
            return None
        total = sum(loads.get(n, 0) for n in allowed)
        bound = math.ceil(c * (total + 1) / len(allowed))
        return next((n for n in self.walk(key) if n in allowed and loads.get(n, 0) < bound), None)
