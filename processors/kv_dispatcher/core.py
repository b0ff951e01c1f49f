"""The KV-affinity dispatcher as a processor core over the run journal.

It follows each run's model calls (requested, dispatched, completed or failed for good), its tool
calls (a running tool holds the session's pin) and its ending (the pin goes), and answers every
`LlmCallRequested` with an `LlmCallDispatched` naming the replica, at once or, for a call that had
to wait for KV room, from `tick` once it fits.

State. One `DispatchState` spans every partition this instance owns, because replica KV is shared
by all of them. What must survive a restart is small and kept per run in the partition's store:
`run/<run_id>` (the last turn's tokens, the message count and the pin) and `wait/<call_id>` (a
call not yet dispatched). A store rebuilt by replay gets the same: replay evolves only, and the
journal's own `LlmCallDispatched` events say where each call went. Pins dropped by a TTL or under
pressure are not written back at once; after a restart they come back with their old expiry and
expire again, which costs nothing but a few seconds of a hint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from agentstream.events import (
    SETTLED_TYPES,
    Event,
    LlmCallCompleted,
    LlmCallDispatched,
    LlmCallFailed,
    LlmCallRequested,
    ReplicaStatus,
    RunEvent,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.kafka.core import Outcome
from agentstream.kafka.state import PartitionStore
from agentstream.processors.kv_dispatcher.policies import Dispatcher
from agentstream.processors.kv_dispatcher.state import Dispatch, DispatchState, Pin, Rejected, Replica, Waiting

log = logging.getLogger("agentstream.kv_dispatcher")

HANDLED = frozenset(
    {"LlmCallRequested", "LlmCallDispatched", "LlmCallCompleted", "LlmCallFailed", "ToolCallRequested",
     "ToolCallCompleted", *SETTLED_TYPES}
)  # fmt: skip
# A replica whose prober has not reported for this long is treated as down.
STALE_MS = 10_000
REPORT_MS = 10_000  # how often the summary line is logged


def estimate_prompt(previous_tokens: int, previous_messages: int, messages_json: str) -> tuple[int, int]:
    """(prompt tokens, message count): the last turn's input+output plus the new messages at ~4
    characters a token; a first turn is the whole request at 4 characters a token."""
    try:
        messages = orjson.loads(messages_json)
    except orjson.JSONDecodeError:
        messages = None
    if not isinstance(messages, list):
        return len(messages_json) // 4, 0
    if previous_tokens <= 0:
        return len(messages_json) // 4, len(messages)
    chars = sum(len(_content(m)) for m in messages[previous_messages:])
    return previous_tokens + chars // 4, len(messages)


def _content(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


class KvDispatcherCore:
    name = "kv-dispatcher"

    def __init__(
        self,
        dispatcher: Dispatcher,
        replicas: Callable[[], Mapping[str, ReplicaStatus]],
        clock: Callable[[], int],
    ) -> None:
        self.dispatcher = dispatcher
        self.state: DispatchState = dispatcher.state
        self.replicas = replicas  # the live `replicas.status` table
        self.clock = clock
        self._loaded: set[str] = set()  # runs whose stored record is in memory
        self._meta: dict[str, tuple[str, str, int]] = {}  # waiting call -> (run, tenant, step)
        self._last_tick = -1
        self._next_report = 0

    def accepts(self, type_name: str) -> bool:
        return type_name in HANDLED

    def still_wanted(self, store: PartitionStore, key: str) -> bool:
        return True  # starts no side effects

    # -- evolving -----------------------------------------------------------------------------------

    def apply(self, store: PartitionStore, event: Event, *, live: bool) -> Outcome:
        if not isinstance(event, RunEvent):
            return Outcome()
        now = self.clock()
        self.sync_replicas(now)
        run_id = event.run_id
        self._load(store, run_id)
        st = self.state
        out = Outcome()
        frees = False
        match event:
            case LlmCallRequested():
                return self._requested(store, event, now, live)
            case LlmCallDispatched():
                if event.call_id not in st.calls:
                    waiting = store.get(f"wait/{event.call_id}") or {}
                    if event.replica not in st.replicas:
                        st.set_replica(Replica(event.replica, event.url, healthy=False))
                    st.assign(event.call_id, run_id, event.replica, int(waiting.get("prompt", 0)), now)
                self._meta.pop(event.call_id, None)
                store.delete(f"wait/{event.call_id}")
            case LlmCallCompleted():
                record = self._record(store, run_id)
                record["ctx"] = event.input_tokens + event.output_tokens
                store.put(f"run/{run_id}", record)
                st.finish(event.call_id, run_id, record["ctx"], now, event.cached_input_tokens)
                self._forget_call(store, event.call_id)
                frees = True
            case LlmCallFailed() if event.final:
                st.finish(event.call_id, run_id, None, now)
                self._forget_call(store, event.call_id)
                frees = True
            case ToolCallRequested():
                st.tool_started(run_id, now)
            case ToolCallCompleted():
                st.tool_finished(run_id, now)
            case _ if event.type_name in SETTLED_TYPES:
                self._release(store, run_id)
                return self._admit(now) if live else out
        self._save(store, run_id)
        if frees and live:
            out.extend(self._admit(now))
        return out

    def _requested(self, store: PartitionStore, event: LlmCallRequested, now: int, live: bool) -> Outcome:
        record = self._record(store, event.run_id)
        prompt, count = estimate_prompt(record["ctx"], record["msgs"], event.messages_json)
        record["msgs"] = count
        store.put(f"run/{event.run_id}", record)
        if event.call_id in self.state.calls:
            return Outcome()
        self._meta[event.call_id] = (event.run_id, event.tenant_id, event.step)
        if not live:
            # Replay only records the call; its `LlmCallDispatched`, if journaled, follows. What is
            # still waiting when the partition catches up is queued by `resume`, so no other
            # partition's admission can dispatch a call whose dispatch may yet be replayed.
            _put_waiting(store, event, prompt, now)
            return Outcome()
        decision = self.dispatcher.request(event.call_id, event.run_id, prompt, now)
        if isinstance(decision, Dispatch):
            self._save(store, event.run_id)
            return Outcome(emit=[self._dispatched(decision, now)])
        if isinstance(decision, Rejected):
            self._meta.pop(event.call_id, None)
            log.warning("%s %s", event.call_id, decision.reason)
            return Outcome(emit=[_rejection(event, decision.reason)])
        log.debug("%s %s", event.call_id, decision.reason)
        _put_waiting(store, event, prompt, now)
        return Outcome()

    # -- time, recovery -----------------------------------------------------------------------------

    def tick(self, store: PartitionStore, now_ms: int) -> Outcome:
        # The shell ticks every partition with one `now_ms`; the state spans them all, so once is enough.
        if now_ms == self._last_tick:
            return Outcome()
        self._last_tick = now_ms
        self.sync_replicas(now_ms)
        if now_ms >= self._next_report:
            self._next_report = now_ms + REPORT_MS
            log.info("%s", self.summary())
        return Outcome(emit=[self._dispatched(d, now_ms) for d in self.dispatcher.tick(now_ms)])

    def summary(self) -> str:
        """One line for operators: where sessions are, what KV they are counted for, what waits."""
        st = self.state
        replicas = ", ".join(
            f"{r.id}{'' if r.healthy else ' (down)'}: {n} sessions, ~{st.kv_estimate(r.id) // 1000}k/"
            f"{r.capacity // 1000}k KV (room x{st.room_factor.get(r.id, 1.0):.2f})"
            for r in sorted(st.replicas.values(), key=lambda r: r.id)
            for n in [sum(1 for p in st.pins.values() if p.replica == r.id)]
        )
        return (f"{self.dispatcher.policy}: {replicas}; {len(st.queue)} waiting, {len(st.calls)} in flight; "
                f"growth ~{st.mean_growth():.0f} tokens/turn; {st.counters}")  # fmt: skip

    def resume(self, store: PartitionStore) -> Outcome:
        """Loads the partition's stored pins and waiting calls (a store that outlived the process
        is not replayed), then dispatches what fits."""
        for key in list(store.keys_with_prefix("run/")):
            self._load(store, key.removeprefix("run/"))
        waiting: list[tuple[int, str, dict[str, Any]]] = []
        for key in list(store.keys_with_prefix("wait/")):
            raw = store.get(key)
            if raw is not None:
                waiting.append((int(raw["since"]), key.removeprefix("wait/"), raw))
        for since, call_id, raw in sorted(waiting, key=lambda w: (w[0], w[1])):
            run_id = raw["run"]
            self._meta[call_id] = (run_id, raw["tenant"], raw["step"])
            if call_id not in self.state.calls:
                self.state.enqueue(Waiting(call_id, run_id, int(raw["prompt"]), since))
        now = self.clock()
        self.sync_replicas(now)
        return self._admit(now)

    def sync_replicas(self, now_ms: int) -> None:
        for status in self.replicas().values():
            fresh = now_ms - status.ts_ms < STALE_MS
            self.state.set_replica(
                Replica(status.replica, status.url, status.healthy and fresh, status.kv_capacity_tokens,
                        status.kv_used_tokens, status.running, status.waiting)
            )  # fmt: skip

    # -- helpers ------------------------------------------------------------------------------------

    def _admit(self, now_ms: int) -> Outcome:
        return Outcome(emit=[self._dispatched(d, now_ms) for d in self.dispatcher.admit(now_ms)])

    def _dispatched(self, decision: Dispatch, now_ms: int) -> LlmCallDispatched:
        run_id, tenant, step = self._meta.pop(decision.call_id, (decision.session, "", 0))
        log.debug("%s -> %s: %s", decision.call_id, decision.replica, decision.reason)
        return LlmCallDispatched(
            f"{decision.call_id}/dispatched", run_id, tenant, step, decision.call_id, decision.session,
            decision.replica, decision.url, self.dispatcher.policy, decision.reason, now_ms,
        )  # fmt: skip

    def _record(self, store: PartitionStore, run_id: str) -> dict[str, Any]:
        return store.get(f"run/{run_id}") or {"ctx": 0, "msgs": 0, "pin": None}

    def _load(self, store: PartitionStore, run_id: str) -> None:
        if run_id in self._loaded:
            return
        self._loaded.add(run_id)
        raw = store.get(f"run/{run_id}")
        if raw is not None and raw.get("pin") is not None and run_id not in self.state.pins:
            pin = Pin.from_json(raw["pin"])
            pin.in_flight = 0  # calls in flight are re-learned from the journal, not trusted from disk
            self.state.pins[run_id] = pin

    def _save(self, store: PartitionStore, run_id: str) -> None:
        record = self._record(store, run_id)
        pin = self.state.pins.get(run_id)
        record["pin"] = None if pin is None else pin.to_json()
        store.put(f"run/{run_id}", record)

    def _forget_call(self, store: PartitionStore, call_id: str) -> None:
        self._meta.pop(call_id, None)
        store.delete(f"wait/{call_id}")

    def _release(self, store: PartitionStore, run_id: str) -> None:
        self.state.release(run_id)
        self._loaded.discard(run_id)
        store.delete(f"run/{run_id}")
        for key in list(store.keys_with_prefix("wait/")):  # few: only calls waiting for KV room
            raw = store.get(key)
            if raw is not None and raw["run"] == run_id:
                self._meta.pop(key.removeprefix("wait/"), None)
                store.delete(key)


def _put_waiting(store: PartitionStore, event: LlmCallRequested, prompt: int, now: int) -> None:
    record = {"run": event.run_id, "tenant": event.tenant_id, "step": event.step, "prompt": prompt, "since": now}
    store.put(f"wait/{event.call_id}", record)


def _rejection(event: LlmCallRequested, reason: str) -> LlmCallFailed:
    """A call refused for lack of KV room is journaled as a final failure: the run sees it and the
    record says why, instead of the call waiting unboundedly."""
    return LlmCallFailed(
        f"{event.call_id}/dispatch-rejected", event.run_id, event.tenant_id, event.step, event.call_id,
        "kv-dispatcher", "overloaded", reason, 503, False, 0, True,
    )  # fmt: skip
