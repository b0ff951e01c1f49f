"""Start-up and shutdown shared by every processor process: wait for Kafka, build the runtime,
run until SIGTERM/SIGINT, drain, exit."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client.registry import Collector

from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring, issue_missing_bundle
from agentstream.events import Event
from agentstream.kafka.changelog import changelog_short_name
from agentstream.kafka.core import ProcessorCore
from agentstream.kafka.hosting import HostedCore
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.kafka.runtime import ProcessorRuntime
from agentstream.kafka.runtime_config import RuntimeConfig
from agentstream.metrics.endpoint import metrics_listener
from agentstream.observability.tracing import TRACING, start_tracing
from agentstream.security.journal_trust import JournalSigner, JournalVerifier, journal_auth_enabled
from agentstream.settings import MetricsSettings, ProcessSettings, load, once
from agentstream.topics import DEADLETTER, JOURNAL, STATUS, load_topics

log = logging.getLogger("agentstream.process")


def configure_logging() -> None:
    # `kill -USR1 <pid>` prints every thread's stack: how an operator sees where a stalled processor waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(
        level=once(ProcessSettings).log_level,
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
        except KafkaException as exc:
            problem = _kafka_problem(settings, exc.args[0] if exc.args else None)
        except Exception:
            problem = _kafka_problem(settings, None)
        if problem != said and not quiet:
            print(f"agentstream: {problem}", file=sys.stderr, flush=True)
            said = problem
        await asyncio.sleep(2.0)


def _kafka_problem(settings: Settings, error: KafkaError | None) -> str:
    if error is not None and error.code() == KafkaError._AUTHENTICATION:
        # The broker's reason names the mechanism and the user, never the password.
        who = settings.kafka_extra.get("sasl.username", "no principal")
        return (
            f"Kafka at {settings.bootstrap_servers} refused this process's credentials ({who}): {error.str()}; "
            "retrying every 2s"
        )
    return f"Kafka at {settings.bootstrap_servers} is unreachable; retrying every 2s (set KAFKA_BOOTSTRAP_SERVERS)"


@dataclass
class Built:
    core: ProcessorCore
    before_batch: list[Callable[[], Any]] = field(default_factory=list)
    cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Checks on a decoded, writer-verified event: a reason makes the runtime dead-letter it.
    vet: list[Callable[[Event], str | None]] = field(default_factory=list)
    # The core's own metrics (agentstream/metrics), read when the process's /metrics is scraped.
    collectors: list[Collector] = field(default_factory=list)


BuildCore = Callable[[Settings, RecordFactory, AsyncProducer], Awaitable[Built]]


def stop_on_signals(stop: asyncio.Event) -> None:
    """The first signal stops gracefully: running calls finish and every result is journaled,
    waiting out a broker outage if need be. A second one exits at once, saying what it drops."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second stop signal: exiting now; unacknowledged journal writes are dropped, "
                        "and calls whose results they held will run again after a restart")  # fmt: skip
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


async def serve(build: BuildCore, settings: Settings, instance: str, stop: asyncio.Event | None = None) -> None:
    """One processor core in this process."""
    await serve_cores({"": build}, settings, instance, stop)


async def serve_cores(
    builds: Mapping[str, BuildCore], settings: Settings, instance: str, stop: asyncio.Event | None = None,
    *, name: str | None = None,
) -> None:  # fmt: skip
    """Several processor cores in this process, reading the journal once and handing each other
    their events in-process (agentstream/kafka/runtime.py). `name` is the group's name (its
    consumer group, state and instance ids); with one core it is that core's."""
    stop = stop or asyncio.Event()
    settings = replace(settings, instance=instance)
    topics = load_topics(settings.topic_prefix)
    partitions = await wait_for_kafka(settings, topics[JOURNAL].name)
    codec = AvroCodec()
    producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    hosted: list[HostedCore] = []
    cleanup: list[Callable[[], Awaitable[None]]] = []
    before_batch: list[Callable[[], Any]] = []
    collectors: list[Collector] = []
    for build in builds.values():
        records = RecordFactory(codec, topics[JOURNAL].name, partitions)
        built = await build(settings, records, producer)
        # Each core signs what it writes with its own journal key.
        issue_missing_bundle(settings, built.core.name)
        records.signer = JournalSigner(built.core.name, component_keyring(settings, built.core.name))
        hosted.append(HostedCore(built.core, records, list(built.vet)))
        cleanup.extend(built.cleanup)
        before_batch.extend(built.before_batch)
        collectors.extend(built.collectors)
    group = name or hosted[0].name
    start_tracing(group, instance)  # on only when an OTLP endpoint is set (agentstream/observability)
    # What is built by now (modules, catalogs, compiled schemas, clients) lives as long as the
    # process: frozen out of the collector's scans, a full collection later costs what the live runs
    # hold (a few ms) instead of every object of the imports (about 200 ms, a step's p99 outlier).
    gc.collect()
    gc.freeze()
    runtime = ProcessorRuntime(
        hosted,
        producer,
        RuntimeConfig(
            bootstrap=settings.bootstrap_servers,
            input_topic=topics[JOURNAL].name,
            deadletter_topic=topics[DEADLETTER].name,
            status_topic=topics[STATUS].name,
            state_dir=settings.state_dir,
            instance=instance,
            kafka_extra=settings.kafka_extra,
            changelogs={
                c.name: topics[changelog_short_name(c.name)].name
                for c in hosted
                if changelog_short_name(c.name) in topics
            },
        ),
        group,
    )
    runtime.before_batch.extend(before_batch)
    for collector in collectors:
        runtime.metrics.registry.register(collector)
    # Every processor holds every writer's journal key (one trust zone); the one that also holds
    # the run-request key (the orchestrator) checks RunRequested proofs as well.
    keyrings = [component_keyring(settings, h.name) for h in hosted]
    keyring = next((k for k in keyrings if "run-request" in k.purposes), keyrings[0])
    if journal_auth_enabled():
        runtime.verifier = JournalVerifier(keyring, require_run_proof="run-request" in keyring.purposes)
    else:
        log.warning("%s: journal writer checks are OFF (AGENTSTREAM_JOURNAL_AUTH=0)", group)
    log.info("%s instance %s started (%s; journal %s, %d partitions)", group, instance,
             ", ".join(h.name for h in hosted), topics[JOURNAL].name, partitions)  # fmt: skip
    try:
        async with metrics_listener(runtime.metrics.registry, load(MetricsSettings), settings.home, group, instance):
            await runtime.run(stop)
    finally:
        for close in cleanup:
            await close()
        await producer.aclose()
        TRACING.shutdown()  # exports the spans still buffered
        log.info("%s instance %s stopped: %s", group, instance, runtime.counters)
