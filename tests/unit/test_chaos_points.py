"""Injected crash points (agentstream.chaos): off by default, a SIGKILL at the named point when
AGENTSTREAM_CHAOS says so, and one log line naming the point first (what bench/chaos.py counts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from agentstream.chaos import CRASH_LINE

PROGRAM = """
from agentstream.chaos import crash_point
crash_point("model_after_reply")
print("past model_after_reply", flush=True)
crash_point("summary_after_reply")
print("past summary_after_reply", flush=True)
"""


def _run(chaos: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTSTREAM_CHAOS"}
    if chaos is not None:
        env["AGENTSTREAM_CHAOS"] = chaos
    return subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60)


def test_a_point_kills_its_process_after_naming_itself() -> None:
    crashed = _run("model_after_reply=0,summary_after_reply=1")
    assert crashed.returncode == -signal.SIGKILL
    assert crashed.stdout == "past model_after_reply\n"
    assert crashed.stderr == f"{CRASH_LINE}summary_after_reply\n"
    calm = _run(None)
    assert calm.returncode == 0 and calm.stderr == ""
    assert calm.stdout == "past model_after_reply\npast summary_after_reply\n"
