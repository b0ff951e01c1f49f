"""Start-up and shutdown shared by every processor process: wait for Kafka, build the runtime,
run until SIGTERM/SIGINT, drain, exit."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka.admin import AdminClient

from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.kafka.core import ProcessorCore
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.kafka.runtime import ProcessorRuntime, RuntimeConfig
from agentstream.topics import DEADLETTER, JOURNAL, STATUS, load_topics

log = logging.getLogger("agentstream.process")


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("AGENTSTREAM_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
        stream=sys.stderr,
    )


async def wait_for_kafka(settings: Settings, topic: str, *, quiet: bool = False) -> int:
    """Blocks until the broker answers and `topic` exists; returns its partition count. Says once,
    clearly, what is wrong, then keeps retrying: processors may start before the broker does."""
    said: str | None = None
    while True:
        problem: str
        try:
            md = await asyncio.to_thread(
                lambda: AdminClient(
                    {
                        "bootstrap.servers": settings.bootstrap_servers,
                        "log_level": "0",
                        **settings.kafka_extra,
                    }
                ).list_topics(timeout=5)
            )
            if topic in md.topics and md.topics[topic].error is None:
                return len(md.topics[topic].partitions)
            problem = f"topic {topic} does not exist yet: run `agentstream topics create`; retrying every 2s"
        except Exception:
            problem = (
                f"Kafka at {settings.bootstrap_servers} is unreachable; retrying every 2s (set KAFKA_BOOTSTRAP_SERVERS)"
            )
        if problem != said and not quiet:
            print(f"agentstream: {problem}", file=sys.stderr, flush=True)
            said = problem
        await asyncio.sleep(2.0)


@dataclass
class Built:
    core: ProcessorCore
    before_batch: list[Callable[[], Any]] = field(default_factory=list)
    cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


BuildCore = Callable[[Settings, RecordFactory, AsyncProducer], Awaitable[Built]]


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def serve(build: BuildCore, settings: Settings, instance: str, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    topics = load_topics(settings.topic_prefix)
    partitions = await wait_for_kafka(settings, topics[JOURNAL].name)
    records = RecordFactory(AvroCodec(), topics[JOURNAL].name, partitions)
    producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    built = await build(settings, records, producer)
    runtime = ProcessorRuntime(
        built.core,
        records,
        producer,
        RuntimeConfig(
            bootstrap=settings.bootstrap_servers,
            input_topic=topics[JOURNAL].name,
            deadletter_topic=topics[DEADLETTER].name,
            status_topic=topics[STATUS].name,
            state_dir=settings.state_dir,
            instance=instance,
            kafka_extra=settings.kafka_extra,
        ),
    )
    runtime.before_batch.extend(built.before_batch)
    log.info(
        "%s instance %s started (journal %s, %d partitions)",
        built.core.name,
        instance,
        topics[JOURNAL].name,
        partitions,
    )
    try:
        await runtime.run(stop)
    finally:
        for close in built.cleanup:
            await close()
        await producer.aclose()
        log.info("%s instance %s stopped: %s", built.core.name, instance, runtime.counters)
