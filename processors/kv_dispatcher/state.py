"""The dispatcher's state: replicas, session pins, calls in flight and the admission queue.

Pure bookkeeping: no I/O and no clock (every time is a `now_ms` argument), so the same sequence of
events always yields the same state, which is what lets a restarted dispatcher rebuild it by replay.
Which replica a call goes to is decided in `policies.py`; this module only records the outcome.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agentstream.processors.kv_dispatcher.hashring import HashRing

# The expiry of a pin with a call in flight: it lasts until the call is over.
NEVER = 2**62


@dataclass(frozen=True)
class DispatchConfig:
    # An idle pin expires this long after its turn (or its tool) ended; a running tool holds it, but
    # a tool that never reports back lets it go after `tool_hold_ms`.
    pin_ttl_ms: int = 30_000
    tool_hold_ms: int = 600_000
    # A new session is admitted to a replica only if both checks pass (each limit times the replica's
    # learned `room_factor`):
    #  near term: every pinned session's context now plus its growth over its next `lookahead_turns`
    #    turns (what its next turn will ask the replica to hold) stays under `high_watermark`; the rest
    #    covers in-flight output reservations and estimation error;
    #  long run: its sessions, each counted at the learned mean context of a whole session, stay under
    #    `session_watermark`. That guards what young sessions grow into: with the near term alone, the
    #    room one finished 30k session leaves admits six new 2k sessions at once, all six grow to 30k,
    #    and the replica thrashes (bench, 4 replicas: 1,312 evictions, mean JCT 294 s; 99 s with it).
    # Counting every session at max(context, mean session size), as before, overcounts a steady mix of
    # ages by ~20% and queues new sessions while KV is free; the mean alone is unbiased over such a mix
    # and the near-term check catches a replica whose sessions happen to be mostly old.
    # The long-run check's margin is wider: it is an average, and the sum of ~25 sessions' contexts
    # swings around it by ~10% of a replica (sessions admitted together also grow together), where a
    # replica that overflows evicts a session mid-run whose re-prefill then holds up every prefill
    # queued behind it. Bench, 4 replicas, KV load 0.8 (the oracle's peak demand 1.10 of capacity),
    # scale 0.1, mean JCT: 93.9 s at 0.95 (2.85M tokens recomputed), 81.7 at 0.85, 77.6 at 0.8
    # (0.2M), 79.5 at 0.75 (the queue's wait grows); the oracle 68.9.
    high_watermark: float = 0.95
    session_watermark: float = 0.8  # 0 turns the long-run check off
    load_c: float = 1.25  # bounded-load factor: no replica holds more than c x the mean of sessions
    max_queue: int = 10_000
    # 0: a new session waits until there is room, however long (the rule: queue rather than
    # evict running sessions). Else, after this long it is placed over the estimate (see
    # `Dispatcher._overcommit`). Off by default: under overload, placing over the estimate made the
    # replicas' LRU evict running sessions, each re-prefill held KV longer, and the pool thrashed
    # (bench, 2 replicas at KV load 0.6, same time scale: mean JCT 691 s with 10 s, 526 with 30 s,
    # 189 with 60 s, 133 never; the oracle 75).
    max_queue_wait_ms: int = 0
    # Growth per turn is learned per session from its own turns, shrunk towards the pool-wide mean
    # (prior `growth_prior_tokens`, worth `growth_prior_weight` turns).
    lookahead_turns: float = 1.0
    growth_prior_tokens: int = 1_024
    growth_prior_weight: int = 2
    growth_learn_rate: float = 0.02  # the pool-wide mean growth: a running mean over every turn
    # The mean session size, until finished sessions say (worth `prior_weight` of them; then a running
    # mean at `learn_rate`).
    session_reserve_tokens: int = 16_384
    prior_weight: int = 4
    learn_rate: float = 0.05
    # The guard on both estimates: a pinned session's turn that finds much less of its context cached
    # than its last turn left (`miss_fraction`) means the replica evicted a session it was counted to
    # hold, so its room shrinks by `miss_backoff` (never under `min_room_factor`); every turn that
    # hits gives back `hit_recovery`. Additive both ways, so the equilibrium is a miss rate of about
    # hit_recovery / miss_backoff (4%). A floor, because not every miss is the estimate's fault: LRU
    # may evict an idle live session before a just-finished run's blocks, which nobody can free early.
    miss_fraction: float = 0.5
    miss_backoff: float = 0.01
    hit_recovery: float = 0.0004
    min_room_factor: float = 0.85
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
    first_context: int = 0  # after its first finished turn here: its growth is measured from it
    # After its last finished turn here: what its next turn should find cached on this replica.
    last_context: int = 0

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or self.tool_running > 0

    def to_json(self) -> dict[str, Any]:
        return {"r": self.replica, "ctx": self.context_tokens, "last": self.last_used_ms, "exp": self.expires_ms,
                "fl": self.in_flight, "tool": self.tool_running, "n": self.turns, "sum": self.context_sum,
                "first": self.first_context, "lctx": self.last_context}  # fmt: skip

    @staticmethod
    def from_json(raw: dict[str, Any]) -> Pin:
        # Records written before growth was learned lack "first" and "lctx": such a pin learns anew.
        return Pin(raw["r"], raw["ctx"], raw["last"], raw["exp"], raw["fl"], raw["tool"], raw["n"], raw["sum"],
                   int(raw.get("first", 0)), int(raw.get("lctx", 0)))  # fmt: skip


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
    cache_misses: int = 0  # turns of a pinned session that found their context evicted by the replica
    cache_hits: int = 0  # turns of a pinned session that found their context cached (the hit rate's other half)
    overcommitted: int = 0  # new sessions placed over the estimate after waiting max_queue_wait_ms
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
    growth_per_turn: float = 0.0  # learned pool-wide mean context growth per turn (0: the prior)
    typical_context: float = 0.0  # learned mean context of a finished session over its turns
    finished_sessions: int = 0
    # Per replica, 1.0 down to `min_room_factor`: the eviction guard (see DispatchConfig). Kept here,
    # not on `Replica`, because every status report replaces the replica's record.
    room_factor: dict[str, float] = field(default_factory=dict)
    # Replicas that have reported a cached prompt token: only their zeros mean a miss (a server that
    # does not report prefix-cache hits answers 0 every time).
    reports_cache: set[str] = field(default_factory=set)
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

    def mean_growth(self) -> float:
        # Never negative: a run that trims its context shrinks, but admission must not count it as
        # giving KV back before it has.
        return max(0.0, self.growth_per_turn or float(self.config.growth_prior_tokens))

    def session_growth(self, pin: Pin) -> float:
        """Tokens per turn this session's context grows by: its own turns so far, shrunk towards the
        pool-wide mean while it has had few (a young session's one step says little)."""
        c, deltas = self.config, max(0, pin.turns - 1)
        own = max(0, pin.last_context - pin.first_context) if pin.turns > 0 else 0
        return (own + c.growth_prior_weight * self.mean_growth()) / (deltas + c.growth_prior_weight)

    def footprint(self, pin: Pin) -> int:
        """The KV a pinned session is counted for: its context now plus its growth over its next
        `lookahead_turns` turns."""
        return pin.context_tokens + int(self.config.lookahead_turns * self.session_growth(pin))

    def new_session_need(self, prompt_tokens: int) -> int:
        return prompt_tokens + int(self.config.lookahead_turns * self.mean_growth())

    def room(self, replica: str) -> int:
        """The KV that admission may fill on `replica`: NEVER when it does not report its capacity."""
        capacity = self.replicas[replica].capacity
        if capacity <= 0:
            return NEVER
        return int(capacity * self.config.high_watermark * self.room_factor.get(replica, 1.0))

    def free_kv(self, replica: str) -> int:
        return self.room(replica) - self.kv_estimate(replica)

    def mean_session(self) -> float:
        return self.typical_context or float(self.config.session_reserve_tokens)

    def session_free(self, replica: str) -> int:
        """Room for sessions at the mean session size under the long-run check (NEVER when off)."""
        c, capacity = self.config, self.replicas[replica].capacity
        if capacity <= 0 or c.session_watermark <= 0:
            return NEVER
        room = capacity * c.session_watermark * self.room_factor.get(replica, 1.0)
        return int(room - self.mean_session() * sum(1 for p in self.pins.values() if p.replica == replica))

    def could_ever_fit(self, replica: str, need: int) -> bool:
        """Whether a new session needing `need` tokens would fit on `replica` with nothing else there."""
        alone = self.session_free(replica) + int(self.mean_session()) * self.sessions_by_replica().get(replica, 0)
        return self.room(replica) >= need and alone >= int(self.mean_session())

    def headroom(self, replica: str, need: int) -> int:
        """How far `replica` stays under both limits with one more session that needs `need` tokens
        in the near term; negative when it does not fit."""
        return min(self.free_kv(replica) - need, self.session_free(replica) - int(self.mean_session()))

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

    def finish(
        self, call_id: str, session: str, context_tokens: int | None, now_ms: int, cached_tokens: int | None = None
    ) -> None:
        """A call's turn is over (completed, or failed for good): its pin's TTL starts. A completed
        turn teaches the session's growth and, from `cached_tokens`, whether the replica kept it."""
        self.unqueue(call_id)
        if self.calls.pop(call_id, None) is None:
            return
        pin = self.pins.get(session)
        if pin is None:
            return
        pin.in_flight = max(0, pin.in_flight - 1)
        if context_tokens is not None:
            if pin.turns > 0:
                # The pin has lived on this replica since its last turn, counted as resident: this
                # turn should have found that context cached.
                g = self.mean_growth()
                self.growth_per_turn = g + self.config.growth_learn_rate * (context_tokens - pin.last_context - g)
                if cached_tokens is not None and pin.last_context > 0:
                    hit = cached_tokens > 0 and cached_tokens >= self.config.miss_fraction * pin.last_context
                    self._cache_feedback(pin.replica, hit)
            else:
                pin.first_context = context_tokens
            pin.context_tokens = pin.last_context = context_tokens
            pin.turns += 1
            pin.context_sum += context_tokens
        pin.last_used_ms = now_ms
        self._restart_ttl(pin, now_ms)

    def _cache_feedback(self, replica: str, hit: bool) -> None:
        c = self.config
        if hit:
            self.reports_cache.add(replica)
        elif replica not in self.reports_cache:
            return
        factor = self.room_factor.get(replica, 1.0)
        if hit:
            factor = min(1.0, factor + c.hit_recovery)
            self.counters.cache_hits += 1
        else:
            factor = max(c.min_room_factor, factor - c.miss_backoff)
            self.counters.cache_misses += 1
        self.room_factor[replica] = factor

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
            typical = self.mean_session()
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
