"""The contract between a pure processor core and the Kafka shell that runs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from agentstream.events import Event, RunEvent
from agentstream.kafka.state import PartitionStore


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A side effect to run outside the consume loop (a model or tool call). `key` is the call id:
    the shell never runs two items with the same key at once."""

    key: str
    run: Callable[[], Awaitable[list[RunEvent]]]
    # Before running, read the partition up to its current end and ask the core again: a cancel
    # journaled after the request but not yet read then still stops the side effect.
    barrier: bool = False


@dataclass(slots=True)
class Outcome:
    emit: list[RunEvent] = field(default_factory=list)
    work: list[WorkItem] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.emit.extend(other.emit)
        self.work.extend(other.work)


class ProcessorCore(Protocol):
    name: str

    def accepts(self, type_name: str) -> bool:
        """Cheap pre-filter on the type header: events of other types are skipped undecoded."""
        ...

    def apply(self, store: PartitionStore, event: Event, *, live: bool) -> Outcome:
        """Evolves partition state with one event. `live` is False while the partition is being
        recovered (replayed up to where it was): then the core must only evolve, never act."""
        ...

    def still_wanted(self, store: PartitionStore, key: str) -> bool:
        """Asked after a read barrier, right before a barrier work item runs."""
        ...

    def resume(self, store: PartitionStore) -> Outcome:
        """Called once a partition has caught up: act on everything the state says is pending."""
        ...
