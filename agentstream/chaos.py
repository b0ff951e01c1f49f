"""Fault injection for crash tests: a processor kills itself at a named point, with a probability
taken from AGENTSTREAM_CHAOS (e.g. "tool_after_effect=0.05,model_after_reply=0.02").

Points: `tool_after_effect` (tool executor), `model_after_reply` and `summary_after_reply` (model
invoker: a step call's reply, a context compaction's summary). Off unless that variable is set. It exists so `bench/chaos.py` can hit the narrowest windows (a
side effect done, its result not yet journaled) far more often than random external kills would.
"""

from __future__ import annotations

import os
import random
import signal

from agentstream.settings import ProcessSettings, once

CRASH_LINE = "agentstream chaos: crashing at "
_rates: dict[str, float] | None = None
_rng = random.Random()


def _load() -> dict[str, float]:
    return dict(once(ProcessSettings).chaos)


def crash_point(name: str) -> None:
    global _rates
    if _rates is None:
        _rates = _load()
    rate = _rates.get(name, 0.0)
    if rate > 0 and _rng.random() < rate:
        # One unbuffered line in the process's log first: a bench counts the crashes per point.
        os.write(2, f"{CRASH_LINE}{name}\n".encode())
        os.kill(os.getpid(), signal.SIGKILL)
