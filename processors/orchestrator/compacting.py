"""evolve for a run's context compactions: the summarization call in flight, and the compaction
itself, applied from what its `ContextCompacted` holds (never recomputed), so the messages after it
are the journal's, whatever the code that decided it."""

from __future__ import annotations

import orjson

from agentstream.context.compaction import apply
from agentstream.events import ContextCompacted, LlmCallRequested
from agentstream.processors.orchestrator.state import RunState, replace


def compaction_requested(event: LlmCallRequested, state: RunState | None) -> RunState | None:
    if state is None or state.status != "running" or state.compact_pending is not None or event.step != state.step:
        return state
    return replace(state, compact_pending=event.call_id, compact_summary=None)


def context_compacted(event: ContextCompacted, state: RunState | None) -> RunState | None:
    if state is None or state.status != "running" or event.compaction != state.compactions + 1:
        return state  # a duplicate, or late after the end
    try:
        cleared = orjson.loads(event.cleared_json)
    except orjson.JSONDecodeError:
        cleared = []
    handles = tuple(h for h in cleared if isinstance(h, str)) if isinstance(cleared, list) else ()
    summary = event.summary if event.kind == "summarize" else None
    return replace(
        state,
        messages=apply(state.messages, event.boundary, handles, summary),
        compactions=event.compaction,
        compacted_step=event.step,
        compact_pending=None,
        compact_summary=None,
        compact_failed=False,
    )
