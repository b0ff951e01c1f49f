"""What SASL/SCRAM and the ACL authorizer cost per record: the same produce-then-consume workload
against two local brokers started side by side, one secured (the default) and one with the old
PLAINTEXT listener and no authorizer (`LocalKafka(secure=False)`), in alternating rounds.

    .venv/bin/python bench/kafka_auth_overhead.py --records 100000 --rounds 6

Per round and broker: records/s through an idempotent acks=all producer (the platform's own
config) and a consumer reading them back, and the broker's CPU microseconds per record (from
/proc); then sequential one-record round trips (produce, wait for the ack, consume), the
request-heavy shape of a durable step, in ms and broker CPU microseconds each. The last line is
one JSON object with the medians and the secured/plain ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from agentstream.kafka.acls import apply_acls
from agentstream.kafka.consumer import consumer_config, fetch_batch
from agentstream.kafka.producer import producer_config
from agentstream.localkafka import LocalKafka, free_port
from agentstream.topics import JOURNAL, create_topics, load_topics
from bench.common import cpu_seconds


def _round(bootstrap: str, writer: dict[str, str], reader: dict[str, str], topic: str, n: int) -> float:
    """Seconds to produce `n` records (acknowledged) and read them all back."""
    value = b"x" * 300
    t0 = time.perf_counter()
    producer = Producer(producer_config(bootstrap, writer))
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value=value, key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    assert producer.flush(60) == 0
    consumer = Consumer(consumer_config(bootstrap, reader, {"group.id": f"{topic}.orchestrator"}))
    md = consumer.list_topics(topic, timeout=10)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
    seen = 0
    while seen < n:
        seen += sum(1 for m in consumer.consume(1000, 1.0) if m.error() is None)
    consumer.close()
    return time.perf_counter() - t0


def _pingpong(bootstrap: str, auth: dict[str, str], topic: str, n: int) -> float:
    """Seconds for `n` sequential produce->consume round trips, one small record each: the
    request-heavy shape of a durable step, where every request is authenticated and authorized."""
    consumer = Consumer(consumer_config(bootstrap, auth, {"group.id": f"{topic}.orchestrator", "fetch.wait.max.ms": 5}))
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    producer = Producer(producer_config(bootstrap, auth, {"linger.ms": 0}))
    t0 = time.perf_counter()
    for i in range(n):
        key = f"ping-{i}".encode()
        producer.produce(topic, value=b"ping", key=key, partition=0)
        producer.flush(10)
        deadline = time.monotonic() + 10
        # Until this round trip's own record is back (the partition also holds the bulk records).
        while not any(m.error() is None and m.key() == key for m in fetch_batch(consumer, 1000, 0.5)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"round trip {i} never came back")
    wall = time.perf_counter() - t0
    consumer.close()
    producer.flush(10)
    return wall


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--round-trips", type=int, default=1000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="agentstream-authbench-"))
    brokers = {
        "secured": LocalKafka(base / "secured", port=free_port(), controller_port=free_port()),
        "plain": LocalKafka(base / "plain", port=free_port(), controller_port=free_port(), secure=False),
    }
    figures: dict[str, dict[str, list[float]]] = {
        k: {"records_per_s": [], "broker_us_per_record": [], "rtt_ms": [], "broker_us_per_rtt": []} for k in brokers
    }
    try:
        for kafka in brokers.values():
            await kafka.start()
        # Every round's topic and ACLs first: a round measures records, not metadata propagation.
        for rnd in range(args.rounds + 1):
            for name, kafka in brokers.items():
                topics = load_topics(f"r{rnd}{name}")
                await create_topics(kafka.bootstrap, [topics[JOURNAL]], kafka.admin_config())
                if kafka.secure:
                    await apply_acls(kafka.bootstrap, topics, kafka.admin_config())
        await asyncio.sleep(2.0)
        for rnd in range(args.rounds + 1):  # round 0 warms the JITs and is not counted
            order = list(brokers) if rnd % 2 == 0 else list(reversed(brokers))
            for name in order:
                kafka = brokers[name]
                topic = load_topics(f"r{rnd}{name}")[JOURNAL].name
                auth: dict[str, Any] = {}
                if kafka.secure:
                    orchestrator = kafka.credentials.get("orchestrator")
                    assert orchestrator is not None
                    auth = orchestrator.client_config()
                pid = kafka.running_pid()
                assert pid is not None
                cpu0 = cpu_seconds(pid)
                wall = await asyncio.to_thread(_round, kafka.bootstrap, auth, auth, topic, args.records)
                cpu = cpu_seconds(pid) - cpu0
                cpu1 = cpu_seconds(pid)
                rtt_wall = await asyncio.to_thread(_pingpong, kafka.bootstrap, auth, topic, args.round_trips)
                rtt_cpu = cpu_seconds(pid) - cpu1
                if rnd > 0:
                    figures[name]["records_per_s"].append(args.records / wall)
                    figures[name]["broker_us_per_record"].append(cpu / args.records * 1e6)
                    figures[name]["rtt_ms"].append(rtt_wall / args.round_trips * 1e3)
                    figures[name]["broker_us_per_rtt"].append(rtt_cpu / args.round_trips * 1e6)
                print(f"round {rnd} {name}: {args.records / wall:.0f} records/s, broker {cpu / args.records * 1e6:.1f} "
                      f"us/record; round trip {rtt_wall / args.round_trips * 1e3:.2f} ms, broker "
                      f"{rtt_cpu / args.round_trips * 1e6:.0f} us/round trip", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for kafka in brokers.values():
            await kafka.stop()
    medians = {name: {k: round(statistics.median(v), 2) for k, v in f.items()} for name, f in figures.items()}
    ratio = {k: round(medians["secured"][k] / medians["plain"][k], 3) for k in figures["plain"]}
    print(json.dumps({"records": args.records, "rounds": args.rounds, **medians, "secured_over_plain": ratio}))


if __name__ == "__main__":
    asyncio.run(main())
