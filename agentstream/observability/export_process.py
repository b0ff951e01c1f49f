"""Spans leave each agentstream process through a child process of its own, which encodes them to
OTLP/JSON and posts them (agentstream/observability/export_worker.py).

Why a process and not a thread: a thread of the processor's process holds the interpreter lock
while it encodes (10 to 20 µs a span), time the single-threaded event loop then cannot run: with
tracing on, that alone was the largest part of what tracing took from the step throughput. Here the
exporting thread only flattens a batch with `marshal` (C, ~1 µs a span) and writes it to the child's
stdin; the encoding and the collector's round trips run on another core.

The pipe is the child's only input and its parent its only writer. The child ends when its stdin
closes: at a clean stop, after sending what it holds; when the parent dies, by the same EOF. A child
that died is started again (at most every 5 s); batches in between are dropped and counted.
"""

from __future__ import annotations

import logging
import marshal
import subprocess
import sys
import time
from collections.abc import Sequence

from agentstream.observability.otlp import FinishedSpan

log = logging.getLogger("agentstream.tracing")
RESTART_EVERY_S = 5.0
FRAME_HEADER = 4  # bytes of a frame's big-endian length


def frame(spans: Sequence[FinishedSpan]) -> bytes:
    data = marshal.dumps([tuple(span) for span in spans])
    return len(data).to_bytes(FRAME_HEADER, "big") + data


class ProcessSink:
    def __init__(self, service: str, instance: str, *, close_wait_s: float = 2.0) -> None:
        self.argv = [sys.executable, "-m", "agentstream.observability.export_worker", service, instance]
        self.close_wait_s = close_wait_s
        self._child: subprocess.Popen[bytes] | None = None
        self._next_start = 0.0
        self._failing = False

    def _running(self) -> subprocess.Popen[bytes] | None:
        child = self._child
        if child is not None and child.poll() is None:
            return child
        now = time.monotonic()
        if now < self._next_start:
            return None
        if child is not None:
            log.warning("the span exporting process exited (%s): started again", child.returncode)
        self._next_start = now + RESTART_EVERY_S
        # Its logs go where this process's go (the same stderr, inherited); it writes nothing else.
        self._child = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        return self._child

    def export(self, spans: Sequence[FinishedSpan]) -> bool:
        child = self._running()
        if child is None or child.stdin is None:
            return False
        try:
            child.stdin.write(frame(spans))
            child.stdin.flush()
        except OSError as exc:  # the child died mid-write: this batch is lost, the next starts another
            if not self._failing:
                log.warning("the span exporting process is gone (%s): spans are dropped", type(exc).__name__)
            self._failing = True
            return False
        self._failing = False
        return True

    def close(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(self.close_wait_s)
        except (OSError, subprocess.TimeoutExpired):
            child.kill()
            child.wait()
