"""A process's finished spans on their way out: queued by the code that made them (an append), sent
in batches by one background thread, so encoding and the collector's round trip never sit on a
step's path.

The queue is bounded: past `queue` spans waiting, new spans are dropped and counted (a collector
that is down or slow costs spans, never steps, never memory). A batch leaves when `batch` spans are
waiting or every `delay_s`, whichever comes first; `shutdown` sends what is left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from agentstream.observability.otlp import FinishedSpan, SpanSink

log = logging.getLogger("agentstream.tracing")


class SpanBatcher:
    def __init__(self, sink: SpanSink, *, queue: int, batch: int, delay_s: float) -> None:
        self.sink = sink
        self.queue_limit = queue
        self.batch = batch
        self.delay_s = delay_s
        self.dropped = 0
        self.exported = 0
        self.failed = 0
        self._spans: deque[FinishedSpan] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="span export", daemon=True)
        self._thread.start()

    def add(self, span: FinishedSpan) -> None:
        # Called on the event loop's thread for every span: an append and two length checks. The
        # exporting thread only pops from the other end (deque's ends are thread-safe).
        spans = self._spans
        if len(spans) >= self.queue_limit:
            if not self.dropped:
                log.warning("span export queue full (%d spans): new spans are dropped", self.queue_limit)
            self.dropped += 1
            return
        spans.append(span)
        if len(spans) >= self.batch:
            self._wake.set()

    def _take(self) -> list[FinishedSpan]:
        spans, out = self._spans, []
        for _ in range(min(self.batch, len(spans))):
            out.append(spans.popleft())
        return out

    def _run(self) -> None:
        began = time.thread_time()
        try:
            self._export_until_stopped()
        finally:
            cpu = time.thread_time() - began
            log.info("span export: %d spans sent, %d dropped, %d batches failed, %.1f µs of CPU a span",
                     self.exported, self.dropped, self.failed, cpu * 1e6 / max(1, self.exported))  # fmt: skip

    def _export_until_stopped(self) -> None:
        while True:
            self._wake.wait(self.delay_s)
            self._wake.clear()
            stopping = self._stopping
            while self._spans:
                batch = self._take()
                try:
                    if self.sink.export(batch):
                        self.exported += len(batch)
                except Exception:  # a sink's bug must not end the exporting thread, nor flood the log
                    self.failed += 1
                    if self.failed == 1:
                        log.exception("span export failed: its batch is dropped (said once)")
            if stopping:
                return

    def shutdown(self, timeout_s: float) -> None:
        """Sends what is waiting, within `timeout_s` (a collector that does not answer must not
        hold up a process's stop), then closes the sink."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.sink.close()
