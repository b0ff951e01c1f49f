"""Logging that follows state changes, not retries.

During a broker outage librdkafka retries several connections many times a second and logs every
attempt (measured: about 80 lines a second per processor, 12 MB in 3.5 minutes). An operator needs
one line when something goes wrong and one when it recovers. `StateLog` logs a component's state
only when it changes; `kafka_logger` is the logger handed to librdkafka (`logger` in the client
config), which keeps the first line of each kind and then at most one summary a minute.
"""

from __future__ import annotations

import logging
import re
import threading
import time


class StateLog:
    """One line per change of a named state ("ok", "degraded", ...), never one per retry."""

    def __init__(self, logger: logging.Logger, name: str, initial: str = "ok") -> None:
        self._logger = logger
        self._name = name
        self._state = initial
        self._since = time.monotonic()
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return self._state

    def set(self, state: str, message: str) -> bool:
        with self._lock:
            if state == self._state:
                return False
            lasted = time.monotonic() - self._since
            self._state, self._since = state, time.monotonic()
        level = logging.INFO if state == "ok" else logging.WARNING
        self._logger.log(level, "%s: %s (%.1fs since the last change)", self._name, message, lasted)
        return True


# Broker addresses, node ids and counters vary between otherwise identical lines.
_VARIABLE = re.compile(r"\d+(\.\d+)*(ms)?|\[thrd:[^\]]*\]|[0-9a-f]{8,}")


class _Throttle(logging.Filter):
    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        shape = _VARIABLE.sub("#", record.getMessage())
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._seen.get(shape, (0.0, 0))
            if now - last < self._interval_s:
                self._seen[shape] = (last, suppressed + 1)
                return False
            self._seen[shape] = (now, 0)
            if len(self._seen) > 1000:  # shapes are few; this only bounds a pathological stream
                self._seen.clear()
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} similar lines in the last {self._interval_s:.0f}s not shown)"
        return True


_kafka_logger: logging.Logger | None = None


def kafka_logger(interval_s: float = 60.0) -> logging.Logger:
    """The one logger every librdkafka client of the process writes through, throttled."""
    global _kafka_logger
    if _kafka_logger is None:
        logger = logging.getLogger("agentstream.librdkafka")
        logger.addFilter(_Throttle(interval_s))
        _kafka_logger = logger
    return _kafka_logger
