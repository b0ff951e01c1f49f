"""The core shared by the I/O workers (model invoker, tool executor): a ledger of calls.

Per partition it remembers every requested call that has no recorded result yet (`pending/`),
every call whose result is in the journal (`done/`), and which runs are over (`closed/`). A call is
performed only if it is pending, its run is open, and no result is recorded: so a request read
twice, or re-read after a crash, never runs again once its result has been journaled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from agentstream.events import EVENT_TYPES, TERMINAL_TYPES, CancelRequested, Event, RunEvent
from agentstream.kafka.core import Outcome, WorkItem
from agentstream.kafka.state import PartitionStore

R = TypeVar("R", bound=RunEvent)


class CallLedgerCore(Generic[R]):
    def __init__(
        self,
        name: str,
        request_type: type[R],
        is_result: Callable[[Event], str | None],
        perform: Callable[[R], Awaitable[list[RunEvent]]],
        result_types: frozenset[str],
        *,
        barrier: Callable[[R], bool] = lambda _request: False,
        admit: Callable[[R], bool] = lambda _request: True,
    ) -> None:
        self.name = name
        self._request_type = request_type
        self._is_result = is_result
        self._perform = perform
        self._barrier = barrier
        self._admit = admit  # requests it refuses are not recorded at all (e.g. a forged authorization)
        self._accepted = frozenset(
            {
                request_type.type_name,
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
            if store.get(f"done/{call_id}") or store.get(f"closed/{event.run_id}") or store.get(f"pending/{call_id}"):
                return Outcome()
            store.put(f"pending/{call_id}", {"type": event.type_name, "record": event.to_record()})
            return Outcome(work=[self._work(event)]) if live else Outcome()
        result_of = self._is_result(event)
        if result_of is not None:
            store.delete(f"pending/{result_of}")
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
            value = store.get(key)
            if value is None:
                continue
            request = EVENT_TYPES[value["type"]](**value["record"])
            if isinstance(request, self._request_type):
                out.work.append(self._work(request))
        return out

    def _work(self, request: R) -> WorkItem:
        call_id: str = request.call_id  # type: ignore[attr-defined]
        return WorkItem(key=call_id, run=lambda: self._perform(request), barrier=self._barrier(request))

    def still_wanted(self, store: PartitionStore, key: str) -> bool:
        return store.get(f"pending/{key}") is not None

    @staticmethod
    def _close_run(store: PartitionStore, run_id: str, *, keep_done: bool) -> None:
        store.put(f"closed/{run_id}", 1)
        for key in list(store.keys_with_prefix(f"pending/{run_id}/")):
            store.delete(key)
        if not keep_done:
            for key in list(store.keys_with_prefix(f"done/{run_id}/")):
                store.delete(key)
