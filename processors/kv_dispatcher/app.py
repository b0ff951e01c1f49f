"""The KV-affinity dispatcher process: the core, a live view of `replicas.status`, and the prober
that writes it.

Environment:
  AGENTSTREAM_KV_POLICY                   round_robin | least_loaded | session_hash | agentstream
                                          (default) | oracle
  AGENTSTREAM_KV_PIN_TTL_S                how long a session's pin outlives its turn (default 30)
  AGENTSTREAM_KV_HIGH_WATERMARK           new sessions only while estimated KV < this x capacity (0.95)
  AGENTSTREAM_KV_SESSION_WATERMARK        ... and sessions x the mean session size < this x capacity (0.8)
  AGENTSTREAM_KV_MAX_QUEUE_WAIT_S         if set, a new session waits for KV room at most this long (default: until room)
  AGENTSTREAM_KV_LOOKAHEAD_TURNS          a session counts for its context + this many turns' growth (1)
  AGENTSTREAM_REPLICAS                    "r0=http://host:port,r1=..." to probe; empty: probe nothing
                                          (another instance or process reports the replicas)
  AGENTSTREAM_KV_PROBE_INTERVAL_S         seconds between probes (default 0.5)

Run it with `python -m agentstream.processors.kv_dispatcher.app [--instance ID]` (or `agentstream process
kv-dispatcher` where the CLI lists it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from agentstream.config import Settings
from agentstream.events import Event, ReplicaStatus
from agentstream.kafka.journal import RecordFactory
from agentstream.kafka.producer import AsyncProducer
from agentstream.kafka.table import TopicTable
from agentstream.process import Built, configure_logging, serve, stop_on_signals
from agentstream.processors.kv_dispatcher.core import KvDispatcherCore
from agentstream.processors.kv_dispatcher.policies import Dispatcher
from agentstream.processors.kv_dispatcher.prober import Prober, parse_targets
from agentstream.processors.kv_dispatcher.state import DispatchConfig, DispatchState
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


def config_from_env() -> tuple[str, DispatchConfig]:
    policy = os.environ.get("AGENTSTREAM_KV_POLICY") or "agentstream"
    defaults = DispatchConfig()
    config = DispatchConfig(
        pin_ttl_ms=int(float(os.environ.get("AGENTSTREAM_KV_PIN_TTL_S") or 30) * 1000),
        high_watermark=float(os.environ.get("AGENTSTREAM_KV_HIGH_WATERMARK") or defaults.high_watermark),
        session_watermark=float(os.environ.get("AGENTSTREAM_KV_SESSION_WATERMARK") or defaults.session_watermark),
        max_queue_wait_ms=int(float(os.environ.get("AGENTSTREAM_KV_MAX_QUEUE_WAIT_S") or 0) * 1000),
        lookahead_turns=float(os.environ.get("AGENTSTREAM_KV_LOOKAHEAD_TURNS") or defaults.lookahead_turns),
    )
    return policy, config


async def build(settings: Settings, records: RecordFactory, producer: AsyncProducer) -> Built:
    policy, config = config_from_env()
    dispatcher = Dispatcher(policy, DispatchState(config))  # an unknown policy fails here, at start-up
    table = ReplicaTable(settings)
    await table.start()
    topic = load_topics(settings.topic_prefix)[REPLICAS].name

    async def publish(status: ReplicaStatus) -> None:
        record = records.keyed(topic, status)
        await producer.send(record.topic, record.value, key=record.key, headers=record.headers)

    targets = parse_targets(os.environ.get("AGENTSTREAM_REPLICAS", ""))
    interval = float(os.environ.get("AGENTSTREAM_KV_PROBE_INTERVAL_S") or 0.5)
    prober = Prober(targets, publish, wall_clock_ms, interval_s=interval)
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
    return Built(core=core, before_batch=[table.poll], cleanup=[close])


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
