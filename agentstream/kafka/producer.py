"""An asyncio face on the librdkafka producer: `send` returns when the broker acknowledged."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from agentstream.kafka.logs import kafka_logger


class DeliveryError(Exception):
    """The broker did not acknowledge a write; retryable by re-running the step that made it."""


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
        # librdkafka logs every reconnect attempt; this logger keeps one line per kind a minute.
        "logger": kafka_logger(),
        **(extra or {}),
        **(overrides or {}),
    }


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
                loop.call_soon_threadsafe(_set_exception, future, DeliveryError(str(err)))
            else:
                loop.call_soon_threadsafe(_set_result, future, msg)

        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                break
            except BufferError:
                # Local queue full: let the poll thread drain deliveries, then retry.
                self._producer.poll(0.01)
            except KafkaException as exc:
                if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].fatal():
                    self._fatal.set()
                future.set_exception(DeliveryError(str(exc)))
                break
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


def _set_result(future: asyncio.Future[Message], msg: Message) -> None:
    if not future.done():
        future.set_result(msg)


def _set_exception(future: asyncio.Future[Message], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
