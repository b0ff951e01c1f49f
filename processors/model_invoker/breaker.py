"""A circuit breaker per model provider.

closed: calls flow; `failure_threshold` failures within `window_s` with no success in between
open the circuit. open: calls are refused until `cooldown_s` has passed, then the breaker is
half_open. half_open: one trial call is let through; its success closes the circuit, its failure
re-opens it for another cooldown. A trial that never reports back (its caller was cancelled)
stops blocking after `cooldown_s`, when another trial is allowed.

Not thread-safe; meant for one asyncio event loop, where no await separates a check from its update.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failure_threshold: int, window_s: float, cooldown_s: float, clock: Callable[[], float]) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if window_s <= 0 or cooldown_s < 0:
            raise ValueError("window_s must be positive and cooldown_s non-negative")
        self.failure_threshold = failure_threshold
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._trial_at: float | None = None  # when the half-open trial call was let through

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            self._state = "half_open"
            self._trial_at = None
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to the provider now; in half_open this grants the one trial."""
        state = self.state
        if state == "closed":
            return True
        if state == "open":
            return False
        now = self._clock()
        if self._trial_at is not None and now - self._trial_at < self.cooldown_s:
            return False
        self._trial_at = now
        return True

    def record_success(self) -> None:
        if self.state != "open":  # a late success from before the circuit opened proves little
            self._state = "closed"
            self._trial_at = None
        self._failures.clear()

    def record_failure(self) -> None:
        state = self.state
        now = self._clock()
        if state == "half_open":
            self._open(now)
            return
        if state == "open":
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self.window_s:
            self._failures.popleft()
        if len(self._failures) >= self.failure_threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self._state = "open"
        self._opened_at = now
        self._trial_at = None
        self._failures.clear()
