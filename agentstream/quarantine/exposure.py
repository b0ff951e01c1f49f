"""Which runs consumed a quarantined tool's output: a pure reading of their journals.

A run was exposed when the tool it pinned under that name is the quarantined owner's, and a call
of it that the policy gate authorized returned a result at or after the quarantine's start. A
refused call (denied, or rejected by a person) also journals a result, but the gate wrote it: the
tool never ran, so nothing of its output reached the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentstream.client.journal import JournalEntry
from agentstream.events import TERMINAL_TYPES, RunStarted, ToolCallAuthorized, ToolCallCompleted
from agentstream.registry.pins import parse_pin


@dataclass(frozen=True, slots=True)
class Exposure:
    run_id: str
    tenant_id: str
    step: int
    call_id: str
    consumed_ms: int  # the journal's append time of the first result consumed in the window
    ended: bool  # the run had ended when its journal was read: it can only be flagged


def pinned_owner(started: RunStarted | None, tool: str) -> str | None:
    """The owner ("" for the platform) of the tool a run pinned under `tool`; None when unknown
    (no RunStarted read, or a bare version pinned before pins carried owners)."""
    if started is None:
        return None
    parsed = parse_pin(started.tool_pins.get(tool, ""))
    return None if parsed is None else parsed[0]


def candidates(window: Mapping[str, Sequence[JournalEntry]], tool: str, since_ms: int) -> set[str]:
    """Runs with a result of a tool named `tool` appended at or after `since_ms`."""
    return {
        run_id
        for run_id, entries in window.items()
        if any(
            isinstance(e.event, ToolCallCompleted) and e.event.tool == tool and e.timestamp_ms >= since_ms
            for e in entries
        )
    }


def exposure_of(entries: Sequence[JournalEntry], owner: str, tool: str, since_ms: int) -> Exposure | None:
    """The run's exposure to `owner`'s `tool` since `since_ms`, read from its whole journal; None
    when it consumed none of that output (another owner's tool of the name, or only refusals)."""
    started = next((e.event for e in entries if isinstance(e.event, RunStarted)), None)
    pinned = pinned_owner(started, tool)
    if started is not None and started.tool_pins and tool not in started.tool_pins:
        return None  # the run pinned its tools, but none under this name
    if pinned is not None and pinned != owner:
        return None
    if pinned is None and owner and entries and entries[0].event.tenant_id != owner:
        return None  # a tenant's tool: only that tenant's runs can have called it
    authorized = {e.event.call_id for e in entries if isinstance(e.event, ToolCallAuthorized)}
    ended = any(e.event.type_name in TERMINAL_TYPES for e in entries)
    for entry in entries:
        event = entry.event
        if (
            isinstance(event, ToolCallCompleted)
            and event.tool == tool
            and entry.timestamp_ms >= since_ms
            and event.call_id in authorized
        ):
            return Exposure(event.run_id, event.tenant_id, event.step, event.call_id, entry.timestamp_ms, ended)
    return None
