"""Which sessions' KV blocks a replica still holds: pure bookkeeping, no I/O, no clock.

A session (one conversation) is the unit of residency: a later turn of a conversation re-sends the
earlier turns as its prompt prefix, so the tokens a session left resident are the tokens the next
turn need not prefill. Idle sessions are evicted least-recently-used first, as vLLM's prefix cache
frees the blocks of the least recently used finished requests first; sessions with a request in
flight are never evicted, as vLLM never frees a running request's blocks to admit another.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

from agentstream.doubles.replica_emulator.profile import UNLIMITED_KV_TOKENS


@dataclass(slots=True)
class CacheCounters:
    requests: int = 0
    hits: int = 0  # requests that found some of their prompt cached
    misses: int = 0
    cached_tokens: int = 0
    prefilled_tokens: int = 0
    # Prefilled tokens this replica had computed before and lost to eviction: the price of capacity.
    recomputed_tokens: int = 0
    evictions: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class KvCache:
    def __init__(self, capacity_tokens: int = UNLIMITED_KV_TOKENS) -> None:
        if capacity_tokens <= 0:
            raise ValueError("capacity_tokens must be positive")
        self._capacity = capacity_tokens
        # Iteration order is recency order: the first key is the least recently used session.
        self._resident: OrderedDict[str, int] = OrderedDict()
        # Requests in flight per session; a count because one session may have parallel requests.
        self._in_flight: dict[str, int] = {}
        # How many tokens each evicted session held, so a later miss can be told apart from a cold one.
        self._lost: dict[str, int] = {}
        self._used = 0
        self.counters = CacheCounters()

    # -- state ------------------------------------------------------------------------------

    @property
    def capacity_tokens(self) -> int:
        return self._capacity

    @property
    def unlimited(self) -> bool:
        return self._capacity >= UNLIMITED_KV_TOKENS

    @property
    def used_tokens(self) -> int:
        return self._used

    @property
    def sessions(self) -> tuple[str, ...]:
        """Resident sessions, least recently used first."""
        return tuple(self._resident)

    def resident_tokens(self, session: str) -> int:
        return self._resident.get(session, 0)

    def in_flight(self, session: str) -> bool:
        return session in self._in_flight

    def cached_tokens(self, session: str, prompt_tokens: int) -> int:
        return min(self._resident.get(session, 0), max(0, prompt_tokens))

    # -- transitions ------------------------------------------------------------------------

    def reserve(self, session: str, tokens: int) -> bool:
        """Makes `session` resident with `tokens` tokens and in flight, evicting idle sessions (least
        recently used first) until it fits. Changes nothing and answers False when it cannot fit even
        with every idle session gone."""
        if tokens < 0:
            raise ValueError("tokens must not be negative")
        held = self._resident.get(session, 0)
        # A parallel request of an in-flight session must not shrink what the first one still needs.
        target = max(held, tokens) if session in self._in_flight else tokens
        need = self._used - held + target - self._capacity
        if need > 0:
            # Checked up front so a reservation that cannot succeed evicts nobody.
            evictable = sum(n for s, n in self._resident.items() if s != session and s not in self._in_flight)
            if evictable < need:
                return False
            for victim in [s for s in self._resident if s != session and s not in self._in_flight]:
                if need <= 0:
                    break
                need -= self._resident[victim]
                self._drop(victim)
        self._used += target - held
        self._resident[session] = target
        self._resident.move_to_end(session)
        self._in_flight[session] = self._in_flight.get(session, 0) + 1
        self._lost.pop(session, None)
        return True

    def admit(self, session: str, prompt_tokens: int, reserve_tokens: int) -> int | None:
        """`reserve`, plus the request's counters: the cached prefix length, or None (nothing counted,
        nothing changed) when the reservation does not fit."""
        cached = self.cached_tokens(session, prompt_tokens)
        lost = self._lost.get(session, 0)
        if not self.reserve(session, reserve_tokens):
            return None
        c = self.counters
        c.requests += 1
        c.hits += cached > 0
        c.misses += cached == 0
        c.cached_tokens += cached
        c.prefilled_tokens += prompt_tokens - cached
        c.recomputed_tokens += max(0, min(lost, prompt_tokens) - cached)
        return cached

    def release(self, session: str, tokens: int) -> None:
        """A request of `session` ended: it stays resident with `tokens` tokens (at most what it had
        reserved), becomes the most recently used session, and is evictable once no request of it is
        in flight."""
        count = self._in_flight.get(session)
        if count is None:
            raise KeyError(f"session {session!r} has no request in flight")
        if count > 1:
            self._in_flight[session] = count - 1
        else:
            del self._in_flight[session]
            held = self._resident[session]
            # Never more than was reserved, so releasing can never overfill the cache.
            kept = min(max(0, tokens), held)
            self._used -= held - kept
            self._resident[session] = kept
        self._resident.move_to_end(session)

    def evict(self, session: str) -> bool:
        """Drops an idle session; False when it is absent or has a request in flight."""
        if session not in self._resident or session in self._in_flight:
            return False
        self._drop(session)
        return True

    def reset(self) -> None:
        """Forgets every idle session and zeroes the counters. In-flight sessions stay resident: their
        requests still hold (and will release) their blocks."""
        for session in [s for s in self._resident if s not in self._in_flight]:
            self._used -= self._resident.pop(session)
        self._lost.clear()
        self.counters = CacheCounters()

    def _drop(self, session: str) -> None:
        held = self._resident.pop(session)
        self._used -= held
        self._lost[session] = held
        self.counters.evictions += 1
