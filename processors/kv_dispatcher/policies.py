"""Which replica serves a model call: five policies over one `DispatchState`.

  round_robin    the next healthy replica in turn: the baseline every load balancer has
  least_loaded   the healthy replica with the fewest calls in flight
  session_hash   plain consistent hashing of the session: affinity, but no TTL, no admission
                 control and no load bound, so hot replicas overfill and thrash their caches
  agentstream    a session goes back to its pinned replica while the pin lives (TTL after each turn,
                 held while a tool runs); a new session goes to the replica with the most free KV
                 (bounded-load consistent hashing when replicas do not report their capacity) and
                 is admitted only while that replica's estimated KV (each pinned session's context
                 plus its projected growth over its next turn) stays under the high watermark and
                 its sessions, at the learned mean session size, under the session watermark;
                 otherwise it waits in a FIFO queue instead of evicting sessions mid-conversation.
                 Under pressure, idle pins are dropped coldest first (expired, then least recently
                 used; never one with a call in flight or a tool running)
  oracle         agentstream's routing; the bench runs it against replicas with unlimited KV

Pure: `now_ms` is always an argument. Every decision carries a reason a person can read.
"""

from __future__ import annotations

from agentstream.processors.kv_dispatcher.state import (
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
        walk = [r for r in st.ring.walk(session) if r in healthy]
        need = max(prompt_tokens, st.new_session_need(prompt_tokens))
        if any(st.replicas[r].capacity <= 0 for r in healthy):
            # Without every replica's capacity, free KV cannot be compared: the bounded-load hash
            # spreads sessions by count, the rest of the ring clockwise after it.
            first = st.ring.pick(session, st.sessions_by_replica(), healthy, st.config.load_c)
            order = [first] + [r for r in walk if r != first] if first is not None else walk
            how = "bounded-load hash"
        else:
            # The most free KV first: sessions grow, so the replica with the most room left is the one
            # where this one (and its neighbours) can grow longest without anyone being evicted. The
            # ring order breaks ties, so equal replicas still split sessions by hash.
            free = {r: st.headroom(r, need) for r in walk}
            order = sorted(walk, key=lambda r: -free[r])
            first, how = order[0], "most free KV"
        for replica in order:
            if st.headroom(replica, need) >= 0:
                detail = how if replica == first else f"spill ({first} full)"
                return replica, f"new session on {replica} by {detail}"
        for replica in order:  # make room by dropping idle pins, coldest first
            dropped = self._drop_idle_for(replica, need, now_ms)
            if dropped is not None:
                return replica, f"new session on {replica} after dropping {dropped} idle pins"
        if not any(st.could_ever_fit(r, need) for r in healthy):
            # It can never fit anywhere: waiting would be forever, so it goes where the order says.
            assert first is not None
            return first, f"new session on {first}: larger than any replica's KV"
        return f"KV full on every replica ({len(healthy)} healthy)"

    def _overcommit(self, prompt_tokens: int) -> tuple[str, str] | str:
        """A session that waited `max_queue_wait_ms` goes where the most headroom is, over the
        estimate: past that wait, queueing costs it more than the re-prefill the replica's LRU may
        impose on an idle session, and a queue that only grows (load above what the estimates admit)
        would otherwise delay every new session behind it without bound."""
        st = self.state
        healthy = st.healthy()
        if not healthy:
            return "no healthy replica"
        need = st.new_session_need(prompt_tokens)
        replica = max(healthy, key=lambda r: (st.headroom(r, need), r))
        st.counters.overcommitted += 1
        return replica, f"new session on {replica} over its KV estimate"

    def _drop_idle_for(self, replica: str, need: int, now_ms: int) -> int | None:
        st = self.state
        near, far = st.free_kv(replica) - need, st.session_free(replica) - int(st.mean_session())
        victims: list[str] = []
        for session in st.coldest_idle(replica, now_ms):
            if min(near, far) >= 0:
                break
            victims.append(session)
            near += st.footprint(st.pins[session])
            far += int(st.mean_session())
        if min(near, far) < 0:
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
            overdue = 0 < st.config.max_queue_wait_ms <= now_ms - head.since_ms
            if isinstance(placed, str) and overdue:
                placed = self._overcommit(head.prompt_tokens)
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
