"""The security bench's bookkeeping: each attack attempt, defended or in the control run (the same
attack with its defense switched off), and the summary bench/security.py prints."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

_START = time.monotonic()
ATTACK_TIMEOUT_S = 240.0  # one attempt past this is an error, not a refusal


@dataclass(frozen=True, slots=True)
class Attempt:
    kind: str
    name: str
    control: bool
    succeeded: bool


@dataclass
class Tally:
    attempts: list[Attempt] = field(default_factory=list)
    # An attempt that raised proves nothing either way: listed here, counted in neither column.
    errors: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def record(self, kind: str, name: str, succeeded: bool, *, control: bool = False) -> None:
        self.attempts.append(Attempt(kind, name, control, bool(succeeded)))
        mark = "SUCCEEDED" if succeeded else "refused"
        where = "control" if control else "defended"
        print(f"[{where}] {kind}/{name}: {mark} (t={time.monotonic() - _START:.0f}s)", file=sys.stderr, flush=True)

    async def attempt(
        self, kind: str, name: str, attack: Callable[[], Awaitable[object]], *, control: bool = False
    ) -> None:
        try:
            outcome = await asyncio.wait_for(attack(), ATTACK_TIMEOUT_S)
        except Exception as exc:  # an attack's own failure must not end the bench
            where = "control" if control else "defended"
            self.errors.append(f"{where} {kind}/{name}: {type(exc).__name__}: {str(exc)[:300]}")
            print(f"[{where}] {kind}/{name}: ERROR\n{traceback.format_exc()}", file=sys.stderr, flush=True)
            return
        if isinstance(outcome, tuple):  # (succeeded, details...)
            outcome = outcome[0]
        self.record(kind, name, bool(outcome), control=control)

    async def stage(self, label: str, work: Callable[[], Awaitable[None]]) -> None:
        """Sets up and runs a whole stage of attacks; if the stage itself fails, the attacks it
        did not reach are missing and the failure is a (defended) error."""
        try:
            await work()
        except Exception as exc:
            self.errors.append(f"stage {label}: {type(exc).__name__}: {str(exc)[:300]}")
            print(f"[stage] {label}: ERROR\n{traceback.format_exc()}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def timed(self, label: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[label] = round(time.monotonic() - start, 1)

    def summary(self) -> dict[str, Any]:
        defended = [a for a in self.attempts if not a.control]
        control = [a for a in self.attempts if a.control]
        switched = {(a.kind, a.name) for a in control}
        by_kind: dict[str, dict[str, int]] = {}
        for a in self.attempts:
            row = by_kind.setdefault(
                a.kind, {"attacks": 0, "succeeded": 0, "control_attacks": 0, "control_succeeded": 0}
            )
            prefix = "control_" if a.control else ""
            row[f"{prefix}attacks"] += 1
            row[f"{prefix}succeeded"] += int(a.succeeded)
        return {
            "attacks": len(defended),
            "succeeded": sum(a.succeeded for a in defended),
            "control_attacks": len(control),
            "control_succeeded": sum(a.succeeded for a in control),
            "by_kind": by_kind,
            "succeeded_attacks": [f"{a.kind}/{a.name}" for a in defended if a.succeeded],
            # Defended attempts with no off switch (or none that is safe to throw): not in the control run.
            "no_control": [f"{a.kind}/{a.name}" for a in defended if (a.kind, a.name) not in switched],
            "control_refused": [f"{a.kind}/{a.name}" for a in control if not a.succeeded],
            "errors": self.errors,
            "defended_errors": sum(not e.startswith("control ") for e in self.errors),
            "timings_s": self.timings,
        }


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Sets (or, with None, removes) environment variables for the block."""
    saved = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
