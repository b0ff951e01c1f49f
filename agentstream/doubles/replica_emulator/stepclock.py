"""A replica's decode-step counter: how many engine steps have run, as a piecewise-linear function of
time whose slope changes whenever a step's length does (the batch grows or shrinks, a prefill chunk
joins the steps or leaves them).

A decoding request needs one step per output token, so it waits for the counter to advance by its
token count. Waking only when some request's count is reached, and re-timing only when the step
length changes, costs a few timer resets per request instead of one wake-up per emulated step (a
step is ~7 ms, well under a millisecond once a bench compresses time).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

# A waiter whose target is within this many steps of the counter is done: float time never lands
# exactly on the target, and a timer may fire a clock tick early.
_EPSILON_STEPS = 1e-6


class StepClock:
    def __init__(self, step_s: float) -> None:
        if step_s <= 0:
            raise ValueError("step_s must be positive")
        self._step_s = step_s
        self._steps = 0.0
        self._at: float | None = None  # loop time `_steps` was last brought up to date
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def steps(self) -> float:
        """Steps run so far (brought up to the loop's current time)."""
        self._advance()
        return self._steps

    def set_step_s(self, step_s: float) -> None:
        """From now on a step lasts `step_s`; steps already run are kept."""
        if step_s <= 0:
            raise ValueError("step_s must be positive")
        if step_s == self._step_s:
            return
        self._advance()
        self._step_s = step_s
        self._schedule()

    async def wait_steps(self, count: float) -> None:
        """Returns once `count` more steps have run."""
        if count <= 0:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._waiters, (self.steps() + count, next(self._order), done))
        self._schedule()
        await done  # a cancelled waiter stays in the heap until its target passes; `_fire` skips it

    def _advance(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._at is not None:
            self._steps += (now - self._at) / self._step_s
        self._at = now

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        if not self._waiters:
            return
        assert self._at is not None  # every waiter was pushed after an `_advance`
        due = self._at + max(0.0, self._waiters[0][0] - self._steps) * self._step_s
        self._timer = asyncio.get_running_loop().call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._advance()
        while self._waiters and self._waiters[0][0] <= self._steps + _EPSILON_STEPS:
            _target, _n, done = heapq.heappop(self._waiters)
            if not done.done():
                done.set_result(None)
        self._schedule()
