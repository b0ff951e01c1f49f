"""An asyncio face on the librdkafka producer: `send` returns when the broker acknowledged."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from agentstream.kafka.logs import kafka_logger

if TYPE_CHECKING:
    from agentstream.kafka.journal import Record


class DeliveryError(Exception):
    """The broker did not acknowledge a write; retryable by re-running the step that made it,
    unless `permanent`: a record no broker will take as it is (over the size limit), which a
    retry would refuse again forever."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# Refusals of the record itself, not of the moment: retrying them cannot succeed.
_PERMANENT = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.RECORD_LIST_TOO_LARGE})


def delivery_error(err: KafkaError) -> DeliveryError:
    return DeliveryError(str(err), permanent=err.code() in _PERMANENT)


def producer_config(
    bootstrap: str, extra: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        # Idempotent producer: librdkafka's own retries never duplicate or reorder a write.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 0.5,
        # Nagle plus delayed ACKs adds ~40 ms to every small request on loopback and LANs.
        "socket.nagle.disable": True,
        # Journal events are small; uncompressed batches spare the broker a decompression pass
        # per batch (it validates every record of a compressed batch on a compacted topic).
        "compression.type": "none",
        "message.timeout.ms": 120000,
        # As the topics' max.message.bytes: a state changelog value holds a run's conversation,
        # which may pass the journal's own budget (agentstream/journal_limits.py) before the run stops.
        "message.max.bytes": 8 * 1024 * 1024,
        # librdkafka logs every reconnect attempt; this logger keeps one line per kind a minute.
        "logger": kafka_logger(),
        **(extra or {}),
        **(overrides or {}),
    }


class RecordProducer(Protocol):
    """What the processor shell writes through (agentstream/kafka/runtime_io.py): AsyncProducer
    against the broker, or the in-memory twin that drives the same shell code in the unit test of
    the commit order (tests/kafka_twin.py)."""

    def send_batch(self, records: Sequence[Record]) -> Awaitable[list[Message | DeliveryError]]: ...

    async def flush(self, timeout_s: float = 30.0) -> None: ...


class AsyncProducer:
    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._producer = Producer(config)
        # Set by a fatal error (an idempotent producer fenced or out of sequence after a long outage):
        # such a producer refuses every later write, so the next send replaces it.
        self._fatal = threading.Event()
        self.replaced = 0
        self._closed = threading.Event()
        # librdkafka serves delivery callbacks only from poll(); one thread does nothing else.
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Message]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()

        if self._fatal.is_set():
            self._replace()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                if err.fatal():
                    self._fatal.set()
                loop.call_soon_threadsafe(_set_exception, future, delivery_error(err))
            else:
                loop.call_soon_threadsafe(_set_result, future, msg)

        refused = self._produce(topic, value, key, partition, headers, on_delivery)
        if refused is not None:
            future.set_exception(refused)
        return future

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        headers: list[tuple[str, bytes]] | None,
        on_delivery: Callable[[KafkaError | None, Message], None],
    ) -> DeliveryError | None:
        """Queues one record; the error when librdkafka refuses it outright (its delivery report
        then never comes). A full local queue is waited out, not refused."""
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return None
            except BufferError:
                # Local queue full: let the poll thread drain deliveries, then retry.
                self._producer.poll(0.01)
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is None:
                    return DeliveryError(str(exc))
                if error.fatal():
                    self._fatal.set()
                return delivery_error(error)

    def send_batch(self, records: Sequence[Record]) -> asyncio.Future[list[Message | DeliveryError]]:
        """Writes `records` (in this order within each partition) and resolves once every one is
        acknowledged or failed, with each record's outcome at its index. One future and one
        wake-up of the event loop per batch instead of one per record: at a journal event's
        size, the per-record futures and cross-thread calls cost more than producing the record."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Message | DeliveryError]] = loop.create_future()
        outcomes: list[Message | DeliveryError | None] = [None] * len(records)
        if not records:
            future.set_result([])
            return future
        if self._fatal.is_set():
            self._replace()
        remaining = [len(records)]
        lock = threading.Lock()  # deliveries come from the poll thread, and from a BufferError's poll here

        def settle(index: int, outcome: Message | DeliveryError) -> None:
            outcomes[index] = outcome
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                loop.call_soon_threadsafe(_set_result, future, outcomes)

        def on_delivery(index: int, err: KafkaError | None, msg: Message) -> None:
            if err is None:
                settle(index, msg)
                return
            if err.fatal():
                self._fatal.set()
            settle(index, delivery_error(err))

        for index, r in enumerate(records):
            refused = self._produce(r.topic, r.value, r.key, r.partition, r.headers, partial(on_delivery, index))
            if refused is not None:
                settle(index, refused)
        return future

    def _replace(self) -> None:
        """A fresh producer (a new producer id) for one in a fatal state. Writes still queued in
        the old one fail; their senders write them again."""
        old, self._producer = self._producer, Producer(self._config)
        self._fatal.clear()
        self.replaced += 1
        try:
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.poll(0.1)  # serves the purged messages' delivery reports: their senders retry
        except Exception:
            pass

    async def flush(self, timeout_s: float = 30.0) -> None:
        remaining = await asyncio.to_thread(self._producer.flush, timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} messages still unacknowledged after {timeout_s}s")

    async def aclose(self) -> None:
        await self.flush()
        self._closed.set()
        await asyncio.to_thread(self._poller.join, 2.0)
        # Release the client now: a flushed but open handle keeps reconnecting (and logging) to a
        # broker that may be gone, until the garbage collector gets to it.
        await asyncio.to_thread(self._producer.close)


def _set_result(future: asyncio.Future[Any], msg: Any) -> None:
    if not future.done():
        future.set_result(msg)


def _set_exception(future: asyncio.Future[Message], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
