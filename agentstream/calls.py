"""The core shared by the I/O workers (model invoker, tool executor): a ledger of calls.

Per partition it remembers every requested call that has no recorded result yet (`pending/`),
every call whose result is in the journal (`done/`), and which runs are over (`closed/`). A call is
performed only if it is pending, its run is open, and no result is recorded: so a request read
twice, or re-read after a crash, never runs again once its result has been journaled.

A call may also need clearances from other processors before it runs (`requires`: event types
carrying its `call_id`, such as the cost governor's `BudgetReserved` or the KV dispatcher's
`LlmCallDispatched`). They may arrive before or after the request; the call starts once it has
them all, and `perform` receives them (the dispatcher's choice of replica, for one).

A call that must not run twice (`at_most_once`, e.g. a tool not declared idempotent) is marked
`started/` in the same state write that hands it to the shell; the shell writes that state before
it starts any work (see agentstream/kafka/runtime.py's commit order), so the mark is durable before
the side effect can begin. If the process dies before the call's result is journaled, `resume` finds
the mark and ends the call with `interrupted(request)` (an error observation) instead of running
it again: whether it ran is unknown, and running it twice could do its effect twice. Calls safe to
repeat are re-driven with the same idempotency key, as before. (A store restored from its changelog
has the marks; one rebuilt by replaying the journal has none: pending calls are then re-driven,
at-most-once calls included.)

An ended run leaves only its `closed/` marker (EndedRuns): a request re-emitted after the end must
not start. Markers are kept for the last CLOSED_KEEP runs that ended in the partition, so the state
follows live runs: a duplicate request arriving after that many later runs ended in its partition
would run again (see CLOSED_KEEP).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, TypeVar

from agentstream.events import EVENT_TYPES, TERMINAL_TYPES, BudgetReserved, CancelRequested, Event, RunEvent
from agentstream.kafka.core import Outcome, WorkItem
from agentstream.kafka.state import EndedRuns, PartitionStore

R = TypeVar("R", bound=RunEvent)

# Ended runs remembered per partition. A duplicate request comes from a writer re-emitting a batch
# it had not committed when it crashed, so it lands one restart of that writer after the run's end
# (seconds to minutes). 10,000 ended runs per partition is about 5 hours at the reference load
# (40M events a day over 8 partitions, ~100 events a run: ~50,000 runs a partition a day) and
# longer at any lighter one, for ~50 bytes a run, and at most ~20,000 records in a restore.
CLOSED_KEEP = 10_000


def cost_clearance(governed: bool) -> frozenset[str]:
    """A call runs only once the cost governor reserved its budget. Not `governed`
    (AGENTSTREAM_COST_GOVERNOR=0): a deployment that runs no governor and so has no hard caps."""
    return frozenset({"BudgetReserved"}) if governed else frozenset()


def concerns_model_calls(clearance: RunEvent) -> bool:
    """The model invoker's `concerns`: of the cost governor's reservations, only model calls'."""
    return not isinstance(clearance, BudgetReserved) or clearance.kind == "model"


def concerns_tool_calls(clearance: RunEvent) -> bool:
    """The tool executor's `concerns`: every reservation but a model call's."""
    return not isinstance(clearance, BudgetReserved) or clearance.kind != "model"


Clearances = Mapping[str, RunEvent]  # clearance type name -> the event that gave it


class CallLedgerCore(Generic[R]):
    def __init__(
        self,
        name: str,
        request_type: type[R],
        is_result: Callable[[Event], str | None],
        perform: Callable[[R, Clearances], Awaitable[list[RunEvent]]],
        result_types: frozenset[str],
        *,
        barrier: Callable[[R], bool] = lambda _request: False,
        admit: Callable[[R], bool] = lambda _request: True,
        requires: frozenset[str] = frozenset(),
        at_most_once: Callable[[R], bool] = lambda _request: False,
        interrupted: Callable[[R], list[RunEvent]] = lambda _request: [],
        closed_keep: int = CLOSED_KEEP,
        concerns: Callable[[RunEvent], bool] = lambda _clearance: True,
    ) -> None:
        self.name = name
        self._closed = EndedRuns("closed/", closed_keep)
        self._request_type = request_type
        self._is_result = is_result
        self._perform = perform
        self._barrier = barrier
        self._admit = admit  # requests it refuses are not recorded at all (e.g. a forged authorization)
        self._requires = requires
        # Whether a clearance can be for one of this ledger's calls: a model call's reservation is
        # never a tool call's, and recording it would cost a write, a delete and a changelog entry.
        self._concerns = concerns
        self._at_most_once = at_most_once
        # The events that end an at-most-once call a crash interrupted; they must include its result.
        self._interrupted = interrupted
        self._accepted = frozenset(
            {
                request_type.type_name,
                *requires,
                "CancelRequested",
                "RunCompleted",
                "RunFailed",
                "RunCancelled",
                *result_types,
            }
        )

    def accepts(self, type_name: str) -> bool:
        return type_name in self._accepted

    def apply(self, store: PartitionStore, event: Event, *, live: bool) -> Outcome:
        if isinstance(event, self._request_type):
            if not self._admit(event):
                return Outcome()
            call_id: str = event.call_id  # type: ignore[attr-defined]
            if (
                store.get(f"done/{call_id}")
                or self._closed.ended(store, event.run_id)
                or store.get(f"pending/{call_id}")
            ):
                return Outcome()
            store.put(f"pending/{call_id}", {"type": event.type_name, "record": event.to_record()})
            return self._start_if_cleared(store, event, call_id) if live else Outcome()
        if event.type_name in self._requires:
            assert isinstance(event, RunEvent)
            cleared: str = event.call_id  # type: ignore[attr-defined]
            if not self._concerns(event) or store.get(f"done/{cleared}") or self._closed.ended(store, event.run_id):
                return Outcome()
            if store.get(f"clear/{cleared}/{event.type_name}") is not None:
                return Outcome()  # a clearance read twice starts nothing twice
            store.put(f"clear/{cleared}/{event.type_name}", {"type": event.type_name, "record": event.to_record()})
            pending = self._pending(store, cleared)
            return self._start_if_cleared(store, pending, cleared) if live and pending is not None else Outcome()
        result_of = self._is_result(event)
        if result_of is not None:
            store.delete(f"pending/{result_of}")
            store.delete(f"started/{result_of}")
            for type_name in self._requires:
                store.delete(f"clear/{result_of}/{type_name}")
            # A closed run starts nothing again whatever is recorded: a late result (a call that
            # was in flight at a cancel) would otherwise leave its `done/` key behind for good.
            if not (isinstance(event, RunEvent) and self._closed.ended(store, event.run_id)):
                store.put(f"done/{result_of}", 1)
            return Outcome()
        if isinstance(event, CancelRequested) or event.type_name in TERMINAL_TYPES:
            # A cancel or an ending closes the run: nothing pending for it will start from now on.
            assert isinstance(event, RunEvent)
            self._close_run(store, event.run_id, keep_done=isinstance(event, CancelRequested))
        return Outcome()

    def resume(self, store: PartitionStore) -> Outcome:
        out = Outcome()
        for key in list(store.keys_with_prefix("pending/")):
            call_id = key.removeprefix("pending/")
            request = self._pending(store, call_id)
            if request is None:
                continue
            if store.get(f"started/{call_id}") is not None:
                # Handed to a shell that is gone, with no result journaled: it may have run.
                out.emit.extend(self._interrupted(request))
                continue
            out.extend(self._start_if_cleared(store, request, call_id))
        return out

    def _pending(self, store: PartitionStore, call_id: str) -> R | None:
        value = store.get(f"pending/{call_id}")
        if value is None:
            return None
        request = EVENT_TYPES[value["type"]](**value["record"])
        return request if isinstance(request, self._request_type) else None

    def _start_if_cleared(self, store: PartitionStore, request: R, call_id: str) -> Outcome:
        clearances: dict[str, RunEvent] = {}
        for type_name in self._requires:
            value = store.get(f"clear/{call_id}/{type_name}")
            if value is None:
                return Outcome()  # waits for the rest of its clearances
            event = EVENT_TYPES[type_name](**value["record"])
            assert isinstance(event, RunEvent)
            clearances[type_name] = event
        if self._at_most_once(request):
            # Staged with the batch's state, which the shell writes before starting this work.
            store.put(f"started/{call_id}", 1)
        return Outcome(work=[self._work(request, clearances)])

    def _work(self, request: R, clearances: Clearances) -> WorkItem:
        call_id: str = request.call_id  # type: ignore[attr-defined]
        return WorkItem(key=call_id, run=lambda: self._perform(request, clearances), barrier=self._barrier(request))

    def still_wanted(self, store: PartitionStore, key: str) -> bool:
        return store.get(f"pending/{key}") is not None

    def _close_run(self, store: PartitionStore, run_id: str, *, keep_done: bool) -> None:
        self._closed.mark(store, run_id)
        for key in list(store.keys_with_prefix(f"pending/{run_id}/")):
            store.delete(key)
        for key in list(store.keys_with_prefix(f"clear/{run_id}/")):
            store.delete(key)
        for key in list(store.keys_with_prefix(f"started/{run_id}/")):
            store.delete(key)
        if not keep_done:
            for key in list(store.keys_with_prefix(f"done/{run_id}/")):
                store.delete(key)
