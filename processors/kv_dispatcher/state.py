"""The dispatcher's state: replicas, session pins, calls in flight and the admission queue.

Pure bookkeeping: no I/O and no clock (every time is a `now_ms` argument), so the same sequence of
events always yields the same state, which is what lets a restarted dispatcher rebuild it by replay.
Which replica a call goes to is decided in `policies.py`; this module only records the outcome.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from processors.kv_dispatcher.hashring import HashRing

# The expiry of a pin with a call in flight: it lasts until the call is over.
NEVER = 2**62


@dataclass(frozen=True)
class DispatchConfig:
    # An idle pin expires this long after its turn (or its tool) ended; a running tool holds it, but
    # a tool that never reports back lets it go after `tool_hold_ms`.
    pin_ttl_ms: int = 30_000
    tool_hold_ms: int = 600_000
    # New sessions are admitted only while the replica's estimated KV stays under this fraction of its
    # capacity: the rest is headroom for the growth of the sessions already pinned there.
    high_watermark: float = 0.9
    load_c: float = 1.25  # bounded-load factor: no replica holds more than c x the mean of sessions
    max_queue: int = 10_000
    # Admission counts a session at least this large: its context grows turn after turn, so sizing it
    # by its first prompt would admit far more sessions than fit once they are a few turns in. The
    # replica holds sessions at every age, so the right size is a session's mean context over its
    # life: this is its prior (half a 32k context window, worth `prior_weight` finished sessions),
    # moved by the mean of every finished session, then by a running mean (`learn_rate`).
    session_reserve_tokens: int = 16_384
    prior_weight: int = 4
    learn_rate: float = 0.05
    # An idle pin younger than this is never dropped to make room: a turn just ended and its next
    # step (a tool call, usually) is on its way.
    min_idle_drop_ms: int = 5_000


@dataclass(slots=True)
class Replica:
    id: str
    url: str
    healthy: bool = True
    capacity: int = 0  # KV tokens; 0 when the replica does not say (then admission cannot check it)
    used: int = 0  # KV tokens in use, as the replica reported
    running: int = 0
    waiting: int = 0


@dataclass(slots=True)
class Pin:
    replica: str
    context_tokens: int
    last_used_ms: int
    expires_ms: int
    in_flight: int = 0
    tool_running: int = 0
    turns: int = 0
    context_sum: int = 0  # over its turns, to learn a session's mean context when it ends

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or self.tool_running > 0

    def to_json(self) -> dict[str, Any]:
        return {"r": self.replica, "ctx": self.context_tokens, "last": self.last_used_ms, "exp": self.expires_ms,
                "fl": self.in_flight, "tool": self.tool_running, "n": self.turns, "sum": self.context_sum}  # fmt: skip

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Pin:
        return Pin(raw["r"], raw["ctx"], raw["last"], raw["exp"], raw["fl"], raw["tool"], raw["n"], raw["sum"])


@dataclass(frozen=True, slots=True)
class Waiting:
    call_id: str
    session: str
    prompt_tokens: int
    since_ms: int


@dataclass(frozen=True, slots=True)
class Dispatch:
    call_id: str
    session: str
    replica: str
    url: str
    reason: str


@dataclass(frozen=True, slots=True)
class Queued:
    call_id: str
    session: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    call_id: str
    session: str
    reason: str


Decision = Dispatch | Queued | Rejected


@dataclass(slots=True)
class Counters:
    dispatched: int = 0
    queued: int = 0
    rejected: int = 0
    evicted: int = 0  # idle pins dropped to make room
    expired: int = 0
    replaced: int = 0  # sessions moved off an unhealthy replica


@dataclass
class DispatchState:
    config: DispatchConfig = field(default_factory=DispatchConfig)
    replicas: dict[str, Replica] = field(default_factory=dict)
    pins: dict[str, Pin] = field(default_factory=dict)
    queue: deque[Waiting] = field(default_factory=deque)
    calls: dict[str, tuple[str, str]] = field(default_factory=dict)  # in flight: call -> (session, replica)
    rr_next: int = 0
    typical_context: float = 0.0  # learned mean context of a finished session over its turns
    finished_sessions: int = 0
    counters: Counters = field(default_factory=Counters)
    _ring: HashRing | None = None

    # -- replicas -----------------------------------------------------------------------------------

    def set_replica(self, replica: Replica) -> None:
        self.replicas[replica.id] = replica
        if self._ring is None or replica.id not in self._ring.nodes:
            self._ring = None

    @property
    def ring(self) -> HashRing:
        if self._ring is None:
            self._ring = HashRing(self.replicas)
        return self._ring

    def healthy(self) -> list[str]:
        return sorted(r.id for r in self.replicas.values() if r.healthy)

    def in_flight_by_replica(self) -> dict[str, int]:
        out = dict.fromkeys(self.replicas, 0)
        for _session, replica in self.calls.values():
            out[replica] = out.get(replica, 0) + 1
        return out

    def sessions_by_replica(self) -> dict[str, int]:
        out = dict.fromkeys(self.replicas, 0)
        for pin in self.pins.values():
            out[pin.replica] = out.get(pin.replica, 0) + 1
        return out

    def footprint(self, pin: Pin) -> int:
        """The KV a pinned session is counted for: its context now, or a typical session's mean
        context if that is larger (a young session still grows)."""
        reserve = self.typical_context or float(self.config.session_reserve_tokens)
        return max(pin.context_tokens, int(reserve))

    def kv_estimate(self, replica: str) -> int:
        # From the pins, not the replica's reported usage: a prefix cache keeps finished sessions'
        # blocks until it needs the room, so "used" reads full on any warm replica and says nothing
        # about what still has to stay resident.
        return sum(self.footprint(p) for p in self.pins.values() if p.replica == replica)

    # -- sessions and calls --------------------------------------------------------------------------

    def assign(self, call_id: str, session: str, replica: str, prompt_tokens: int, now_ms: int) -> None:
        """Records a dispatched call: the session is pinned to the replica with one more call in flight."""
        if call_id in self.calls:
            return  # read back from the journal after being decided here
        pin = self.pins.get(session)
        if pin is None or pin.replica != replica:
            pin = Pin(replica, prompt_tokens, now_ms, NEVER)
            self.pins[session] = pin
        pin.context_tokens = max(pin.context_tokens, prompt_tokens)
        pin.in_flight += 1
        pin.last_used_ms = now_ms
        pin.expires_ms = NEVER
        self.calls[call_id] = (session, replica)
        self.counters.dispatched += 1
        self.unqueue(call_id)

    def finish(self, call_id: str, session: str, context_tokens: int | None, now_ms: int) -> None:
        """A call's turn is over (completed, or failed for good): its pin's TTL starts."""
        self.unqueue(call_id)
        if self.calls.pop(call_id, None) is None:
            return
        pin = self.pins.get(session)
        if pin is None:
            return
        pin.in_flight = max(0, pin.in_flight - 1)
        if context_tokens is not None:
            pin.context_tokens = context_tokens
            pin.turns += 1
            pin.context_sum += context_tokens
        pin.last_used_ms = now_ms
        self._restart_ttl(pin, now_ms)

    def tool_started(self, session: str, now_ms: int) -> None:
        pin = self.pins.get(session)
        if pin is not None:
            pin.tool_running += 1
            pin.expires_ms = now_ms + self.config.tool_hold_ms

    def tool_finished(self, session: str, now_ms: int) -> None:
        pin = self.pins.get(session)
        if pin is not None and pin.tool_running > 0:
            pin.tool_running -= 1
            pin.last_used_ms = now_ms
            self._restart_ttl(pin, now_ms)

    def _restart_ttl(self, pin: Pin, now_ms: int) -> None:
        if pin.in_flight:
            pin.expires_ms = NEVER
        elif pin.tool_running:
            pin.expires_ms = now_ms + self.config.tool_hold_ms
        else:
            pin.expires_ms = now_ms + self.config.pin_ttl_ms

    def release(self, session: str) -> None:
        """The run ended (or halted): its pin goes, and its turns teach how large a session is."""
        pin = self.pins.pop(session, None)
        for call_id in [c for c, (s, _r) in self.calls.items() if s == session]:
            del self.calls[call_id]
        self.queue = deque(w for w in self.queue if w.session != session)
        if pin is not None and pin.turns > 0:
            c = self.config
            typical = self.typical_context or float(c.session_reserve_tokens)
            weight = max(c.learn_rate, 1 / (c.prior_weight + self.finished_sessions + 1))
            self.typical_context = typical + weight * (pin.context_sum / pin.turns - typical)
            self.finished_sessions += 1

    def drop_pin(self, session: str) -> None:
        """Forgets where an idle session lives, so its next turn is placed afresh."""
        self.pins.pop(session, None)

    # -- the queue -----------------------------------------------------------------------------------

    def enqueue(self, waiting: Waiting) -> bool:
        if any(w.call_id == waiting.call_id for w in self.queue):
            return True
        if len(self.queue) >= self.config.max_queue:
            return False
        self.queue.append(waiting)
        return True

    def unqueue(self, call_id: str) -> None:
        if any(w.call_id == call_id for w in self.queue):
            self.queue = deque(w for w in self.queue if w.call_id != call_id)

    # -- time ----------------------------------------------------------------------------------------

    def expire(self, now_ms: int) -> list[str]:
        """Drops pins whose TTL ran out with nothing in flight; returns their sessions."""
        gone = [s for s, p in self.pins.items() if p.in_flight == 0 and p.expires_ms <= now_ms]
        for session in gone:
            del self.pins[session]
        self.counters.expired += len(gone)
        return gone

    def coldest_idle(self, replica: str, now_ms: int) -> list[str]:
        """Idle sessions pinned to `replica`, the first to drop first: expired before live, then least
        recently used. Sessions with a call in flight or a tool running are never listed."""
        grace = self.config.min_idle_drop_ms
        idle = [
            (s, p)
            for s, p in self.pins.items()
            if p.replica == replica and not p.busy and (p.expires_ms <= now_ms or now_ms - p.last_used_ms >= grace)
        ]
        idle.sort(key=lambda sp: (sp[1].expires_ms > now_ms, sp[1].last_used_ms, sp[0]))
        return [s for s, _p in idle]
