"""Which replica serves a model call: five policies over one `DispatchState`.

  round_robin    the next healthy replica in turn: the baseline every load balancer has
  least_loaded   the healthy replica with the fewest calls in flight
  session_hash   plain consistent hashing of the session: affinity, but no TTL, no admission
                 control and no load bound, so hot replicas overfill and thrash their caches
  agentstream    a session goes back to its pinned replica while the pin lives (TTL after each turn,
                 held while a tool runs); a new session is placed by bounded-load consistent hashing
                 and admitted only while the replica's estimated KV stays under the high watermark;
                 otherwise it waits in a FIFO queue instead of evicting sessions mid-conversation.
                 Under pressure, idle pins are dropped coldest first (expired, then least recently
                 used; never one with a call in flight or a tool running)
  oracle         agentstream's routing; the bench runs it against replicas with unlimited KV

Pure: `now_ms` is always an argument. Every decision carries a reason a person can read.
"""

from __future__ import annotations

from processors.kv_dispatcher.state import (
    NEVER,
    Decision,
    Dispatch,
    DispatchState,
    Pin,
    Queued,
    Rejected,
    Waiting,
)

POLICIES = ("round_robin", "least_loaded", "session_hash", "agentstream", "oracle")
AFFINITY = frozenset({"agentstream", "oracle"})


class Dispatcher:
    def __init__(self, policy: str, state: DispatchState | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown dispatch policy {policy!r}: choose one of {', '.join(POLICIES)}")
        self.policy = policy
        self.state = state if state is not None else DispatchState()

    # -- a new call --------------------------------------------------------------------------------

    def request(self, call_id: str, session: str, prompt_tokens: int, now_ms: int) -> Decision:
        st = self.state
        if call_id in st.calls:  # asked again (a replayed request): the same answer
            session, replica = st.calls[call_id]
            return Dispatch(call_id, session, replica, st.replicas[replica].url, f"already dispatched to {replica}")
        if any(w.call_id == call_id for w in st.queue):
            return Queued(call_id, session, "still queued")
        healthy = st.healthy()
        if not healthy:
            return self._wait(Waiting(call_id, session, prompt_tokens, now_ms), "no healthy replica")
        if self.policy in AFFINITY:
            return self._affinity(call_id, session, prompt_tokens, now_ms)
        if self.policy == "round_robin":
            replica = healthy[st.rr_next % len(healthy)]
            st.rr_next += 1
            reason = f"round robin: {replica}"
        elif self.policy == "least_loaded":
            flights = st.in_flight_by_replica()
            replica = min(healthy, key=lambda r: (flights.get(r, 0), r))
            reason = f"least loaded: {replica} had {flights.get(replica, 0)} calls in flight"
        else:
            replica = st.ring.owner(session, healthy) or healthy[0]
            reason = f"session hash: {replica} owns the session"
        return self._dispatch(call_id, session, replica, prompt_tokens, now_ms, reason)

    def _affinity(self, call_id: str, session: str, prompt_tokens: int, now_ms: int) -> Decision:
        st = self.state
        pin = st.pins.get(session)
        note = ""
        if pin is not None:
            if st.replicas.get(pin.replica) is not None and st.replicas[pin.replica].healthy:
                reason = f"pinned to {pin.replica} ({_pin_age(pin, now_ms)})"
                return self._dispatch(call_id, session, pin.replica, prompt_tokens, now_ms, reason)
            st.counters.replaced += 1
            note = f"{pin.replica} unhealthy, re-placed: "
            if pin.in_flight == 0:
                st.drop_pin(session)
        waiting = Waiting(call_id, session, prompt_tokens, now_ms)
        if st.queue:  # first come, first served: a new session never overtakes one already waiting
            return self._wait(waiting, f"{note}behind {len(st.queue)} waiting sessions")
        placed = self._place(session, prompt_tokens, now_ms)
        if isinstance(placed, str):
            return self._wait(waiting, note + placed)
        replica, reason = placed
        return self._dispatch(call_id, session, replica, prompt_tokens, now_ms, note + reason)

    def _place(self, session: str, prompt_tokens: int, now_ms: int) -> tuple[str, str] | str:
        """A replica for a session with no live pin, or why there is none."""
        st = self.state
        healthy = st.healthy()
        if not healthy:
            return "no healthy replica"
        loads = st.sessions_by_replica()
        first = st.ring.pick(session, loads, healthy, st.config.load_c)
        walk = [r for r in st.ring.walk(session) if r in healthy]
        # The bounded-load choice first, then the rest clockwise: KV room decides, the hash prefers.
        order = [first] + [r for r in walk if r != first] if first is not None else walk
        need = max(prompt_tokens, st.footprint(Pin("", prompt_tokens, now_ms, NEVER)))
        for replica in order:
            if self._room(replica) - st.kv_estimate(replica) >= need:
                how = "bounded-load hash" if replica == first else f"spill ({first} full)"
                return replica, f"new session on {replica} by {how}"
        for replica in order:  # make room by dropping idle pins, coldest first
            dropped = self._drop_idle_for(replica, need, now_ms)
            if dropped is not None:
                return replica, f"new session on {replica} after dropping {dropped} idle pins"
        if all(self._room(r) < need for r in healthy):
            # It can never fit anywhere: waiting would be forever, so it goes where the hash says.
            assert first is not None
            return first, f"new session on {first}: larger than any replica's KV"
        return f"KV full on every replica ({len(healthy)} healthy)"

    def _room(self, replica: str) -> int:
        capacity = self.state.replicas[replica].capacity
        return NEVER if capacity <= 0 else int(capacity * self.state.config.high_watermark)

    def _drop_idle_for(self, replica: str, need: int, now_ms: int) -> int | None:
        st = self.state
        free = self._room(replica) - st.kv_estimate(replica)
        victims: list[str] = []
        for session in st.coldest_idle(replica, now_ms):
            if free >= need:
                break
            victims.append(session)
            free += st.footprint(st.pins[session])
        if free < need:
            return None  # dropping would not be enough: drop nothing
        for session in victims:
            st.drop_pin(session)
        st.counters.evicted += len(victims)
        return len(victims)

    def _dispatch(
        self, call_id: str, session: str, replica: str, prompt_tokens: int, now_ms: int, reason: str
    ) -> Dispatch:
        self.state.assign(call_id, session, replica, prompt_tokens, now_ms)
        return Dispatch(call_id, session, replica, self.state.replicas[replica].url, reason)

    def _wait(self, waiting: Waiting, why: str) -> Queued | Rejected:
        if self.state.enqueue(waiting):
            self.state.counters.queued += 1
            return Queued(waiting.call_id, waiting.session, f"queued: {why}")
        self.state.counters.rejected += 1
        return Rejected(waiting.call_id, waiting.session, f"rejected: {why}, and the queue is full")

    # -- time passing ------------------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Dispatch]:
        """Expires pins, lets go of sessions on unhealthy replicas, admits what now fits."""
        st = self.state
        st.expire(now_ms)
        for session, pin in list(st.pins.items()):
            replica = st.replicas.get(pin.replica)
            if (replica is None or not replica.healthy) and pin.in_flight == 0:
                st.drop_pin(session)
                st.counters.replaced += 1
        return self.admit(now_ms)

    def admit(self, now_ms: int) -> list[Dispatch]:
        """Dispatches queued calls, oldest first, for as long as the oldest one fits."""
        st = self.state
        out: list[Dispatch] = []
        while st.queue:
            head = st.queue[0]
            waited = f"after {(now_ms - head.since_ms) / 1000:.1f}s queued"
            if self.policy not in AFFINITY:
                healthy = st.healthy()
                if not healthy:
                    break
                st.queue.popleft()
                decision = self.request(head.call_id, head.session, head.prompt_tokens, now_ms)
                if isinstance(decision, Dispatch):
                    out.append(Dispatch(head.call_id, head.session, decision.replica, decision.url,
                                        f"{decision.reason} ({waited})"))  # fmt: skip
                continue
            pin = st.pins.get(head.session)
            if pin is not None and pin.replica in st.healthy():
                placed: tuple[str, str] | str = (pin.replica, f"pinned to {pin.replica}")
            else:
                placed = self._place(head.session, head.prompt_tokens, now_ms)
            if isinstance(placed, str):
                break
            st.queue.popleft()
            replica, reason = placed
            out.append(self._dispatch(head.call_id, head.session, replica, head.prompt_tokens, now_ms,
                                      f"{reason} ({waited})"))  # fmt: skip
        return out


def _pin_age(pin: Pin, now_ms: int) -> str:
    if pin.tool_running:
        return "tool running"
    if pin.in_flight or pin.expires_ms >= NEVER:
        return "call in flight"
    return f"ttl {max(0, pin.expires_ms - now_ms) / 1000:.0f}s left"
