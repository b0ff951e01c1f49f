"""The span exporting process of one agentstream process (export_process.py starts it): reads
batches from stdin, as its parent flattened them, and posts each to the collector over OTLP/HTTP.

    python -m agentstream.observability.export_worker SERVICE INSTANCE
"""

from __future__ import annotations

import logging
import marshal
import sys
import time
from typing import BinaryIO

from agentstream.observability.export_process import FRAME_HEADER
from agentstream.observability.sinks import http_sink
from agentstream.settings import TracingSettings, load

log = logging.getLogger("agentstream.tracing")


def _read(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main(argv: list[str]) -> int:
    # Its parent's log format, into its parent's log (the same stderr).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s")
    service, instance = [*argv, "", ""][:2]
    sink = http_sink(service, instance, load(TracingSettings))
    stdin = sys.stdin.buffer
    spans = 0
    try:
        while (header := _read(stdin, FRAME_HEADER)) is not None:
            body = _read(stdin, int.from_bytes(header, "big"))
            if body is None:
                break
            rows = marshal.loads(body)  # FinishedSpan's fields in order, as its parent flattened them
            spans += len(rows)
            sink.export(rows)
    finally:
        sink.close()
        log.info("exporting process of %s: %d spans, %.1f µs of CPU a span", service, spans,
                 time.process_time() * 1e6 / max(1, spans))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
