"""Events a side effect journals while it is still running (a model call's failed attempt before
its retry), so the journal shows a slow call's history as it happens, not when the call ends.

The runtime installs a sink for the task that performs a work item (`progress_to`); the side
effect calls `journal_progress`, which returns once the events are journaled and handed to the
hosted cores, exactly like the item's final events. A context variable rather than a parameter:
work items of every core keep one signature, and only the side effects that report progress ask.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from agentstream.events import RunEvent

Sink = Callable[[list[RunEvent]], Awaitable[None]]
_SINK: ContextVar[Sink | None] = ContextVar("agentstream_work_progress", default=None)


async def journal_progress(events: list[RunEvent]) -> bool:
    """Journals `events` now when run inside a work item; False (nothing done) elsewhere, e.g. in
    a unit test of the side effect alone: the caller then returns them with its final events."""
    sink = _SINK.get()
    if sink is None or not events:
        return False
    await sink(events)
    return True


@contextmanager
def progress_to(sink: Sink) -> Iterator[None]:
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)
