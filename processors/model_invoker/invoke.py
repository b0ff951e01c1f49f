"""Performs one LlmCallRequested: the only code path that talks to a model."""

from __future__ import annotations

import orjson

from agentstream import ids
from agentstream.chaos import crash_point
from agentstream.events import LlmCallCompleted, LlmCallFailed, LlmCallRequested, LlmCallRouted, RunEvent
from agentstream.journal_limits import model_output_limit, utf8_size_over
from agentstream.kafka.progress import journal_progress
from agentstream.llm import ProviderError
from agentstream.processors.model_invoker.providers._http import response_too_large
from agentstream.processors.model_invoker.router import AttemptFailure, ModelRouter, is_plain_first_choice


class ModelInvoker:
    """Routes each call through the `ModelRouter` (tiers, fallbacks, breakers, bulkheads) and
    journals the routing decisions followed by the call's failed attempts and its outcome. A call
    the route table's first choice answered at its first attempt journals its outcome alone."""

    def __init__(self, router: ModelRouter) -> None:
        self.router = router

    async def perform(self, request: LlmCallRequested, pinned_url: str | None = None) -> list[RunEvent]:
        journaled = [0, 0]  # routing decisions and failures already journaled before a retry

        async def on_retry(routed: tuple[LlmCallRouted, ...], failures: tuple[AttemptFailure, ...]) -> None:
            # A retry is certain, so every failure so far is not the call's last (final=False).
            events: list[RunEvent] = [*routed[journaled[0] :], *self._failures(request, failures, journaled[1])]
            if await journal_progress(events):
                journaled[:] = [len(routed), len(failures)]

        routed = await self.router.complete(request, request.tier, pinned_url=pinned_url, on_retry=on_retry)
        events: list[RunEvent] = list(routed.routed[journaled[0] :])
        failures = routed.failures
        result = routed.result
        if result is None:
            return events + self._failures(request, failures, journaled[1], last_final=True)
        # A context compaction's summarization call has its own point, so a crash bench can aim
        # at it (and count it) apart from the far more numerous step calls.
        crash_point("summary_after_reply" if request.purpose == "compaction" else "model_after_reply")
        if len(routed.routed) == 1 and not failures and is_plain_first_choice(routed.routed[0]):
            # The common case journals no routing decision: one event less on every step.
            events = []
        events += self._failures(request, failures, journaled[1])
        tool_calls_json = orjson.dumps([c.to_dict() for c in result.tool_calls]).decode()
        # What the answer carries can outgrow its body (a streamed answer, tool input escaped once
        # more): checked exactly here, since an event the journal refuses would stall the invoker.
        size = utf8_size_over(limit := model_output_limit(), result.text, tool_calls_json)
        if size is not None:
            error = response_too_large(routed.provider, f"an answer of {size} bytes", limit)
            events.append(self._failed(request, routed.provider, error, len(failures) + 1, final=True))
            return events
        events.append(
            LlmCallCompleted(
                event_id=ids.completed_event_id(request.call_id),
                run_id=request.run_id,
                tenant_id=request.tenant_id,
                step=request.step,
                call_id=request.call_id,
                provider=routed.provider,
                model=result.model or routed.model,
                text=result.text,
                tool_calls_json=tool_calls_json,
                finish_reason=result.finish_reason,
                input_tokens=result.usage.input_tokens,
                output_tokens=result.usage.output_tokens,
                cached_input_tokens=result.usage.cached_input_tokens,
                latency_ms=routed.latency_ms,
                attempts=routed.attempts,
            )
        )
        return events

    @classmethod
    def _failures(
        cls,
        request: LlmCallRequested,
        failures: tuple[AttemptFailure, ...],
        journaled: int,
        *,
        last_final: bool = False,
    ) -> list[RunEvent]:
        """An LlmCallFailed per failed attempt after the first `journaled` (a retry journaled those
        already); `last_final`: the last attempt ended the call."""
        return [
            cls._failed(request, f.provider, f.error, n, final=last_final and n == len(failures))
            for n, f in enumerate(failures, start=1)
            if n > journaled
        ]

    @staticmethod
    def _failed(
        request: LlmCallRequested, provider: str, error: ProviderError, attempt: int, *, final: bool
    ) -> LlmCallFailed:
        return LlmCallFailed(
            event_id=ids.failed_event_id(request.call_id, attempt),
            run_id=request.run_id,
            tenant_id=request.tenant_id,
            step=request.step,
            call_id=request.call_id,
            provider=provider,
            error_type=error.error_type,
            message=str(error)[:2000],
            status=error.status,
            retryable=error.retryable,
            attempt=attempt,
            final=final,
        )
