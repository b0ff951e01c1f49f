"""Retrying model calls: exponential backoff with full jitter, floored by Retry-After."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentstream.llm import ChatRequest, ChatResult, ModelProvider, ProviderError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    # A provider blip lasts seconds: four attempts at these defaults span about 3.5 to 7 s.
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("delays must be non-negative")

    def backoff_s(self, attempt: int, rng: random.Random, retry_after_s: float | None = None) -> float:
        """Delay after failed attempt `attempt` (1-based): between half and all of the doubling
        window. The jitter spreads a burst of clients that failed together; the floor keeps the
        retries from all landing in the first instants of an outage. The provider's Retry-After,
        when given, is never undercut."""
        window = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        delay = rng.uniform(window / 2, window)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        return delay


async def complete_with_retries(
    provider: ModelProvider,
    request: ChatRequest,
    policy: RetryPolicy,
    *,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_attempt_failed: Callable[[int, ProviderError], Awaitable[None]] | None = None,
) -> tuple[ChatResult, int]:
    """Returns the result and the number of attempts it took.

    `on_attempt_failed` sees every failed attempt, the last one included, before the error is
    re-raised or the backoff sleep starts. Every attempt reuses `request.call_id`, so the provider
    (and the scripted model's stats) see one logical call.
    """
    attempt = 1
    while True:
        try:
            return await provider.complete(request), attempt
        except ProviderError as exc:
            if on_attempt_failed is not None:
                await on_attempt_failed(attempt, exc)
            if not exc.retryable or attempt >= policy.max_attempts:
                raise
            await sleep(policy.backoff_s(attempt, rng, exc.retry_after_s))
        attempt += 1
