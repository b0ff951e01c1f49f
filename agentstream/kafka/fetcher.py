"""The consumer of a processor process, on its own thread.

The event loop never blocks on a fetch: this thread fetches the next batch while the loop is still
applying the previous one (or a side effect's result), and hands each batch over through a queue,
at most one batch ahead. Rebalance callbacks run on this thread, inside `consume`; they take the
runtime's `guard`, which the loop holds while it touches partition state, so a revoke never closes a
store under a batch being applied.

A consumer that hits a fatal error (a static member fenced by a newer one with its
`group.instance.id`, for one) cannot be used again: librdkafka then fails every call, and a poll
on it has been seen to raise `SystemError`. Such a consumer is closed and a fresh one joins the
group in its place; the process itself never exits because of its consumer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from agentstream.kafka.consumer import fetch_batch
from agentstream.kafka.logs import StateLog
from agentstream.kafka.watermarks import WatermarkReader

log = logging.getLogger("agentstream.fetcher")

Rebalance = Callable[[Consumer, list[TopicPartition]], None]


class Fetcher:
    def __init__(
        self,
        make_consumer: Callable[[], Consumer],
        make_offsets_reader: Callable[[], Consumer],
        topic: str,
        *,
        on_assign: Rebalance,
        on_revoke: Rebalance,
        batch_size: int,
        name: str,
    ) -> None:
        self._make_consumer = make_consumer
        self._topic = topic
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._batch_size = batch_size
        self._stop = threading.Event()
        self._taken = threading.Semaphore(1)  # at most one fetched batch waits for the loop
        self._thread: threading.Thread | None = None
        self._state = StateLog(log, name)
        self._held: set[int] = set()
        self.consumer = self._subscribe(make_consumer())
        self.replaced = 0  # consumers replaced after a fatal error
        # Other threads (read barriers, lag) ask the broker for high watermarks through their own
        # handle: librdkafka calls on the group consumer from a second thread while this one polls
        # it have been seen to deadlock all of them. Replaced when it goes bad (watermarks.py).
        self._offsets = WatermarkReader(make_offsets_reader, topic, name)
        self._to_commit: dict[int, int] = {}
        self._commit_lock = threading.Lock()

    def _subscribe(self, consumer: Consumer) -> Consumer:
        consumer.subscribe([self._topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked)
        return consumer

    # The partitions the process holds, as it was told by the callbacks: a consumer in a fatal
    # state no longer answers `assignment()` truthfully, yet they must all be given up.
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._on_assign(consumer, partitions)
        self._held |= {tp.partition for tp in partitions}

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._on_revoke(consumer, partitions)
        self._held -= {tp.partition for tp in partitions}

    def start(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[Message]], None]) -> None:
        def run() -> None:
            while not self._stop.is_set():
                if not self._taken.acquire(timeout=0.2):
                    continue
                self._commit_queued()
                msgs = self._fetch()
                if self._stop.is_set():
                    self._taken.release()
                    return
                if msgs:
                    loop.call_soon_threadsafe(deliver, msgs)
                else:
                    self._taken.release()

        self._thread = threading.Thread(target=run, name="kafka-fetch", daemon=True)
        self._thread.start()

    def taken(self) -> None:
        """The loop has applied the batch it was handed: the thread may hand over the next."""
        self._taken.release()

    def _fetch(self) -> list[Message]:
        try:
            msgs = fetch_batch(self.consumer, self._batch_size, 0.05)
        except Exception as exc:  # SystemError and KafkaException out of a consumer in a fatal state
            self._replace(f"the consumer failed: {exc!r}")
            return []
        kept: list[Message] = []
        for msg in msgs:
            err = msg.error()
            if err is None:
                kept.append(msg)
            elif err.fatal() or err.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID):
                self._replace(f"fatal consumer error: {err.str()}")
                return []
            elif err.code() != KafkaError._PARTITION_EOF:
                self._state.set("degraded", f"consume error: {err.str()} (retrying)")
        if kept:
            self._state.set("ok", "consuming again")
        return kept

    def _replace(self, why: str) -> None:
        self._state.set("replacing", f"{why}; replacing the consumer")
        old = self.consumer
        # Give up every partition first (running calls finish and are journaled, stores close): the
        # new member may not get them back.
        self._revoked(old, [TopicPartition(self._topic, p) for p in sorted(self._held)])
        try:
            old.close()
        except Exception as exc:
            log.debug("closing the failed consumer: %r", exc)
        time.sleep(1.0)
        self.consumer = self._subscribe(self._make_consumer())
        self.replaced += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def high_watermark(self, partition: int, timeout_s: float = 10.0) -> int:
        """The partition's end as the broker reports it now; blocking, for a worker thread.
        Raises (WatermarkTimeout, KafkaException) rather than block past timeout_s + a grace."""
        return self._offsets.high(partition, timeout_s)

    def commit(self, offsets: dict[int, int]) -> None:
        """Queues group offsets; the fetch thread commits them between fetches. The loop never calls
        the group consumer itself: inside a rebalance callback librdkafka holds the consumer, and a
        commit from the loop then blocks the loop that the callback is waiting for."""
        with self._commit_lock:
            self._to_commit.update(offsets)

    def _commit_queued(self) -> None:
        with self._commit_lock:
            offsets, self._to_commit = self._to_commit, {}
        if not offsets:
            return
        commits = [TopicPartition(self._topic, p, o) for p, o in offsets.items()]
        try:
            self.consumer.commit(offsets=commits, asynchronous=True)
        except Exception as exc:
            log.debug("offset commit skipped: %s", exc)

    def close(self) -> Any:
        """After `stop`: commits what is queued and leaves the group."""
        self._commit_queued()
        self.consumer.close()
        self._offsets.close()
