"""A run's context decisions: what the orchestrator changed in its prompt, and why."""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.events.base import RunEvent, _register

__all__ = ["ContextCompacted"]


@_register
@dataclass(frozen=True, slots=True)
class ContextCompacted(RunEvent):
    """The run's prompt was compacted before the model call of `step + 1`. Its evolve rewrites the
    run's messages from what this event holds, so replay rebuilds every later prompt exactly."""

    step: int
    compaction: int  # 1 for the run's first compaction, and so on
    kind: str  # "clear" (old tool results cleared) or "summarize" (and the old turns summarized)
    boundary: int  # the index of the first kept message: messages[2:boundary] were the old part
    cleared_json: str  # the handles of the tool results cleared, a JSON list
    summary: str  # the summary that replaced the old part ("" for "clear")
    summary_call_id: str  # the summarization model call ("" for "clear")
    tokens_before: int  # the prompt as the provider would have seen it (estimated)
    tokens_after: int
    reason: str
