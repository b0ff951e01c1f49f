"""The orchestrator's context step: before a model call, compact the prompt when the run's
settings say so. Pure: what it decides is journaled (a summarization `LlmCallRequested`, then
`ContextCompacted`), and evolve applies only what the journal holds."""

from __future__ import annotations

from functools import lru_cache

import orjson

from agentstream import ids
from agentstream.context.compaction import apply, plan, summary_request
from agentstream.context.settings import ContextSettings, parse_settings
from agentstream.context.tokens import prompt_tokens
from agentstream.events import ContextCompacted, LlmCallRequested, RunEvent
from agentstream.llm import messages_to_json
from agentstream.processors.orchestrator.state import RunState


@lru_cache(maxsize=256)
def pinned_settings(context_json: str) -> ContextSettings:
    """The settings a run pinned at start (checked then, so they parse)."""
    return parse_settings(context_json)


def compaction_events(state: RunState, max_tokens: int) -> list[RunEvent] | None:
    """None: the prompt goes out as it is. Otherwise what compaction journals now (nothing while
    its summarization call is in flight)."""
    settings = pinned_settings(state.context_json)
    if not settings.on or state.compacted_step == state.step:
        return None
    if state.compact_pending is not None:
        return []
    compaction = plan(state.messages, settings, summarize=not state.compact_failed)
    if compaction is None:
        return None
    run, tenant, n = state.run_id, state.tenant_id, state.compactions + 1
    if compaction.summarize and state.compact_summary is None:
        call_id = ids.compaction_call_id(run, state.step, n)
        return [
            LlmCallRequested(
                event_id=ids.requested_event_id(call_id),
                run_id=run,
                tenant_id=tenant,
                step=state.step,
                call_id=call_id,
                model=state.model,
                messages_json=messages_to_json(summary_request(state.messages, compaction)),
                tools_json="[]",
                max_tokens=max_tokens,
                tier=settings.summary_tier,
                tier_reason=f"context compaction {n}: {compaction.reason}",
                purpose="compaction",
            )
        ]
    summary = state.compact_summary if compaction.summarize else None
    after = apply(state.messages, compaction.boundary, compaction.cleared, summary)
    reason = compaction.reason
    if state.compact_failed:
        reason += "; the summarization call failed, so old results were cleared only"
    return [
        ContextCompacted(
            event_id=ids.compacted_id(run, state.step, n),
            run_id=run,
            tenant_id=tenant,
            step=state.step,
            compaction=n,
            kind="summarize" if summary is not None else "clear",
            boundary=compaction.boundary,
            cleared_json=orjson.dumps(list(compaction.cleared)).decode(),
            summary=summary or "",
            summary_call_id=ids.compaction_call_id(run, state.step, n) if summary is not None else "",
            tokens_before=compaction.tokens_before,
            tokens_after=prompt_tokens(after),
            reason=reason,
        )
    ]
