"""Performs one LlmCallRequested: the only code path that talks to a model."""

from __future__ import annotations

import asyncio
import random
import time

import orjson

from agentstream import ids
from agentstream.chaos import crash_point
from agentstream.events import LlmCallCompleted, LlmCallFailed, LlmCallRequested, RunEvent
from agentstream.llm import ChatRequest, ModelProvider, ProviderError, messages_from_json, tools_from_json
from processors.model_invoker.providers.retry import RetryPolicy, complete_with_retries


class ModelInvoker:
    def __init__(self, provider: ModelProvider, policy: RetryPolicy, max_concurrency: int = 32) -> None:
        self.provider = provider
        self.policy = policy
        # A bulkhead per provider: more calls in flight than the endpoint serves at once only
        # queue inside the HTTP client's pool, where bookkeeping grows with every waiting request.
        self._slots = asyncio.Semaphore(max_concurrency)
        # Jitter only spaces retries out; it never reaches the journal or a decision.
        self._rng = random.Random()

    async def perform(self, request: LlmCallRequested) -> list[RunEvent]:
        failures: list[ProviderError] = []

        async def on_attempt_failed(attempt: int, error: ProviderError) -> None:
            failures.append(error)

        chat = ChatRequest(
            model=request.model,
            messages=messages_from_json(request.messages_json),
            tools=tools_from_json(request.tools_json),
            max_tokens=request.max_tokens,
            call_id=request.call_id,
        )
        try:
            async with self._slots:
                started = time.perf_counter()  # provider time only, not the wait for a slot
                result, attempts = await complete_with_retries(
                    self.provider, chat, self.policy, rng=self._rng, on_attempt_failed=on_attempt_failed
                )
        except ProviderError as error:
            if not failures or failures[-1] is not error:
                failures.append(error)
            return [self._failed(request, e, n, final=n == len(failures)) for n, e in enumerate(failures, start=1)]
        crash_point("model_after_reply")
        events: list[RunEvent] = [self._failed(request, e, n, final=False) for n, e in enumerate(failures, start=1)]
        events.append(
            LlmCallCompleted(
                event_id=ids.completed_event_id(request.call_id),
                run_id=request.run_id,
                tenant_id=request.tenant_id,
                step=request.step,
                call_id=request.call_id,
                provider=self.provider.name,
                model=result.model or request.model,
                text=result.text,
                tool_calls_json=orjson.dumps([c.to_dict() for c in result.tool_calls]).decode(),
                finish_reason=result.finish_reason,
                input_tokens=result.usage.input_tokens,
                output_tokens=result.usage.output_tokens,
                cached_input_tokens=result.usage.cached_input_tokens,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                attempts=attempts,
            )
        )
        return events

    def _failed(self, request: LlmCallRequested, error: ProviderError, attempt: int, *, final: bool) -> LlmCallFailed:
        return LlmCallFailed(
            event_id=ids.failed_event_id(request.call_id, attempt),
            run_id=request.run_id,
            tenant_id=request.tenant_id,
            step=request.step,
            call_id=request.call_id,
            provider=self.provider.name,
            error_type=error.error_type,
            message=str(error)[:2000],
            status=error.status,
            retryable=error.retryable,
            attempt=attempt,
            final=final,
        )
