"""The KV-affinity dispatcher process: the core, a live view of `replicas.status`, and the prober
that writes it.

Its settings are `KvSettings` (agentstream/settings/processors.py; AGENTSTREAM_KV_* and
AGENTSTREAM_REPLICAS, in docs/configuration.md). With no replicas it probes nothing (another
instance or process reports them).

Run it with `python -m agentstream.processors.kv_dispatcher.app [--instance ID]` (or `agentstream process
kv-dispatcher` where the CLI lists it).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from prometheus_client.registry import Collector

from agentstream.config import Settings
from agentstream.events import Event, ReplicaStatus
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.kafka.table import TopicTable
from agentstream.metrics.kv import DispatcherCollector, ProberCollector
from agentstream.process import Built, configure_logging, serve, stop_on_signals
from agentstream.processors.kv_dispatcher.core import KvDispatcherCore
from agentstream.processors.kv_dispatcher.policies import Dispatcher
from agentstream.processors.kv_dispatcher.prober import Prober, Target
from agentstream.processors.kv_dispatcher.state import DispatchConfig, DispatchState
from agentstream.settings import KvSettings
from agentstream.topics import REPLICAS, load_topics


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class ReplicaTable(TopicTable):
    """The latest `ReplicaStatus` of every replica."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, [load_topics(settings.topic_prefix)[REPLICAS].name])
        self.replicas: dict[str, ReplicaStatus] = {}

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ReplicaStatus):
            # One assignment of a new dict: a reader on another thread sees the old or the new table.
            self.replicas = {**self.replicas, event.replica: event}


def dispatch_config(kv: KvSettings) -> DispatchConfig:
    return DispatchConfig(
        pin_ttl_ms=int(kv.pin_ttl_s * 1000),
        high_watermark=kv.high_watermark,
        session_watermark=kv.session_watermark,
        max_queue_wait_ms=int((kv.max_queue_wait_s or 0) * 1000),  # 0: until there is room
        lookahead_turns=kv.lookahead_turns,
    )


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    dispatcher = Dispatcher(
        settings.kv.policy, DispatchState(dispatch_config(settings.kv))
    )  # an unknown policy fails here, at start-up
    table = ReplicaTable(settings)
    await table.start()
    topic = load_topics(settings.topic_prefix)[REPLICAS].name

    async def publish(status: ReplicaStatus) -> None:
        record = records.keyed(topic, status)
        await producer.send(record.topic, record.value, key=record.key, headers=record.headers)

    targets = [Target(name, url) for name, url in settings.kv.replicas.items()]
    prober = Prober(targets, publish, wall_clock_ms, interval_s=settings.kv.probe_interval_s)
    if targets:
        # One round before the first call is read, so nothing waits for a replica that is up.
        await prober.probe_all()
        await table.catch_up()
    probing = asyncio.create_task(prober.run()) if targets else None

    async def close() -> None:
        if probing is not None:
            probing.cancel()
            await asyncio.gather(probing, return_exceptions=True)
        await prober.aclose()
        table.close()

    core = KvDispatcherCore(dispatcher, lambda: table.replicas, wall_clock_ms)
    collectors: list[Collector] = [DispatcherCollector(dispatcher.state), ProberCollector(prober)]
    return Built(core=core, before_batch=[table.poll], cleanup=[close], collectors=collectors)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m agentstream.processors.kv_dispatcher.app")
    parser.add_argument("--instance", default="0")
    args = parser.parse_args()
    configure_logging()

    async def run() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await serve(build, Settings.from_env(), args.instance, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
