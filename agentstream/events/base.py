"""The base of every event type, and the registry the codec maps Avro records through.

Field names and order mirror the `.avsc` files under `schemas/` exactly (a test checks it), so the
codec maps a dataclass to its record without a second description of the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

__all__ = ["EVENT_TYPES", "Event", "RunEvent", "event_key"]

EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True, slots=True)
class Event:
    type_name: ClassVar[str] = ""

    def to_record(self) -> dict[str, Any]:
        names = _FIELD_NAMES.get(type(self))
        if names is None:  # once per event type: `fields()` rebuilds its tuple at every call
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))
        return {name: getattr(self, name) for name in names}


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _register(cls: type[Event]) -> type[Event]:
    cls.type_name = cls.__name__
    EVENT_TYPES[cls.__name__] = cls
    return cls


@dataclass(frozen=True, slots=True)
class RunEvent(Event):
    """An event in a run's journal; partitioned by `run_id`, keyed by `event_id`."""

    event_id: str
    run_id: str
    tenant_id: str


def event_key(event: Event) -> str:
    key = getattr(event, "event_id", None)
    if not isinstance(key, str):
        raise TypeError(f"{type(event).__name__} has no event_id")
    return key
