"""Per-tenant rate limits: a token bucket per tenant. Pure: time comes from an injectable clock."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the type: this module stays free of Kafka imports
    from agentstream.tenancy.directory import Tenant


class TokenBucket:
    """Holds up to `burst` tokens, refilled continuously at `rate_per_s`; starts full."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        _check_limits(rate_per_s, burst)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        # max(): a clock that steps back must not drain the bucket.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate_per_s)
        self._updated = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def try_acquire(self, n: int = 1) -> float:
        """Takes `n` tokens and returns 0.0, or takes none and returns the seconds until `n` are there."""
        if n < 1 or n > self.burst:
            raise ValueError(f"can take 1 to {self.burst} tokens at once, not {n}")
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return 0.0
        return (n - self._tokens) / self.rate_per_s

    def reconfigure(self, rate_per_s: float, burst: int) -> None:
        """New limits from now on; tokens already earned are kept, up to the new burst."""
        _check_limits(rate_per_s, burst)
        self._refill()
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = min(self._tokens, float(burst))


class RateLimiter:
    """One bucket per tenant, created on first use and following changes to the tenant's limits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def try_acquire(self, tenant: Tenant, n: int = 1) -> float:
        """0.0 if the tenant may proceed, else the seconds to wait (for `Retry-After`)."""
        bucket = self._buckets.get(tenant.tenant_id)
        if bucket is None:
            bucket = self._buckets[tenant.tenant_id] = TokenBucket(tenant.rate_per_s, tenant.burst, self._clock)
        elif (bucket.rate_per_s, bucket.burst) != (tenant.rate_per_s, tenant.burst):
            bucket.reconfigure(tenant.rate_per_s, tenant.burst)
        return bucket.try_acquire(n)

    def forget(self, tenant_id: str) -> None:
        self._buckets.pop(tenant_id, None)


def retry_after_seconds(delay_s: float) -> int:
    """`Retry-After` takes whole seconds; rounding up keeps a client that obeys it from being refused again."""
    return max(1, math.ceil(delay_s))


def _check_limits(rate_per_s: float, burst: int) -> None:
    if not (math.isfinite(rate_per_s) and rate_per_s > 0):
        raise ValueError(f"rate_per_s must be a positive number, not {rate_per_s}")
    if burst < 1:
        raise ValueError(f"burst must be at least 1, not {burst}")
