"""High watermarks asked of the partition leader, through a handle that is replaced when it goes bad.

The read barrier (agentstream/kafka/runtime_work.py) and the lag in each status ask through a
librdkafka handle of their own that never subscribes or fetches. After the journal leader of a
replicated cluster was SIGKILLed, such a handle was seen to answer every later query with
`_UNKNOWN_PARTITION` ("Local: Unknown partition") for minutes, without asking any broker: its
topic metadata had lost the partition, and a handle that fetches nothing does not refresh it (the
cache lives `metadata.max.age.ms`, 15 minutes). The barrier took that for "the broker is down" and
asked the same handle again and again, so the runs whose irreversible tool calls it guarded stayed
stuck (tests/e2e/test_local_cluster.py). A fresh handle looks the partition up again and answers.

librdkafka also does not always honour the query's timeout while the leader it looked up is down
(it re-sends to that broker on every broker state change; librdkafka issues #2588, #4460). So each
handle makes its calls on a thread of its own and a caller waits only until its deadline; a call
still blocked then also retires the handle, which is closed once that call returns.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from agentstream.kafka.consumer import watermarks
from agentstream.kafka.logs import StateLog

log = logging.getLogger("agentstream.watermarks")

# Past the caller's timeout, what librdkafka gets to answer before its handle counts as stuck.
GRACE_S = 5.0

# Local answers from the handle's own metadata: never true of a journal partition, and not cured by
# asking the same handle again.
_STALE = frozenset({KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC})


class WatermarkTimeout(TimeoutError):
    """The broker's answer did not come in time (its handle was stuck and has been replaced)."""


def _stale(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.code() in _STALE


class _Handle:
    """One librdkafka handle and the thread that makes its calls, one at a time."""

    def __init__(self, consumer: Consumer, topic: str, name: str) -> None:
        self.consumer = consumer
        self._topic = topic
        self._calls: queue.SimpleQueue[tuple[int, float, Future[int]] | None] = queue.SimpleQueue()
        self.closed = threading.Event()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def ask(self, partition: int, timeout_s: float) -> Future[int]:
        answer: Future[int] = Future()
        self._calls.put((partition, timeout_s, answer))
        return answer

    def retire(self) -> None:
        self._calls.put(None)  # closed after the call it is in, if it ever returns

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            partition, timeout_s, answer = call
            if not answer.set_running_or_notify_cancel():
                continue  # its caller gave up while it waited in line
            try:
                answer.set_result(watermarks(self.consumer, TopicPartition(self._topic, partition), timeout_s)[1])
            except BaseException as exc:  # delivered to the caller, who decides
                answer.set_exception(exc)
        try:
            self.consumer.close()
        except Exception as exc:
            log.debug("closing a retired watermark reader: %r", exc)
        self.closed.set()


class WatermarkReader:
    """`high(partition)`: the partition's end as its leader reports it now (blocking, for worker
    threads). Raises `WatermarkTimeout` rather than block past `timeout_s` plus a grace, and the
    librdkafka error when the broker cannot answer; a caller such as the barrier asks again."""

    def __init__(self, make_consumer: Callable[[], Consumer], topic: str, name: str) -> None:
        self._make = make_consumer
        self._topic = topic
        self._name = name
        self._lock = threading.Lock()
        self._handle = _Handle(make_consumer(), topic, f"{name} watermarks")
        self._state = StateLog(log, f"{name} watermark queries")
        self.replaced = 0

    def high(self, partition: int, timeout_s: float = 10.0) -> int:
        try:
            high = self._ask(partition, timeout_s, retry_stale=True)
        except Exception as exc:
            # One line per change, at WARNING: a barrier that keeps failing holds runs back.
            self._state.set("failing", f"no answer for p{partition}: {exc!r}; asking again")
            raise
        self._state.set("ok", "answered again")
        return high

    def _ask(self, partition: int, timeout_s: float, *, retry_stale: bool) -> int:
        grace_s = GRACE_S
        with self._lock:
            handle = self._handle
        answer = handle.ask(partition, timeout_s)
        try:
            return answer.result(timeout_s + grace_s)
        except FutureTimeout:
            answer.cancel()  # running or waiting behind one that is: this handle does not answer
            self._replace(handle, f"a query for p{partition} got no answer in {timeout_s + grace_s:.0f}s")
            raise WatermarkTimeout(f"no watermark for p{partition} within {timeout_s + grace_s:.0f}s") from None
        except KafkaException as exc:
            if not _stale(exc):
                raise
            self._replace(handle, f"the handle's metadata lost p{partition} ({exc.args[0].str()})")
            if not retry_stale:
                raise
        return self._ask(partition, timeout_s, retry_stale=False)

    def _replace(self, bad: _Handle, why: str) -> None:
        with self._lock:
            if self._handle is not bad:
                return  # another caller already did
            self._handle = _Handle(self._make(), self._topic, f"{self._name} watermarks")
            self.replaced += 1
        bad.retire()
        log.warning("%s: %s; asking through a fresh handle", self._name, why)

    def close(self, wait_s: float = 2.0) -> None:
        with self._lock:
            handle = self._handle
        handle.retire()
        handle.closed.wait(wait_s)  # a handle stuck in a call is left to close itself
