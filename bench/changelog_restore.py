"""How long restoring a lost processor's stores from its changelog takes, by changelog size.

Writes `--keys` live keys (values of `--value-bytes`) spread over every changelog partition of one
processor, in batches of `--batch` keys each closed by its offset marker, through the real
producer to the real broker; then restores all partitions into empty stores with one consumer
(recovery.restore_all, as a restarted processor does) and checks the contents. Prints one JSON
object (last line): records read, seconds, records per second.

    .venv/bin/python bench/changelog_restore.py --keys 20000 --keys 200000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentstream.kafka.changelog import ChangelogWriter, changelog_topic
from agentstream.kafka.journal import Record
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.kafka.recovery import restore_all
from agentstream.kafka.state import PartitionStore
from agentstream.processors.catalog import CORES
from agentstream.topics import JOURNAL, load_topics
from bench.common import bench_settings

PROCESSOR = "orchestrator"


async def _fill(producer: AsyncProducer, writer: ChangelogWriter, partitions: int, keys: int, value: bytes,
                batch: int, tag: str) -> None:  # fmt: skip
    pending: list[asyncio.Future[Any]] = []
    for offset, start in enumerate(range(0, keys, batch), 1):
        changes = {f"run/{tag}-{i:08d}".encode(): value for i in range(start, min(keys, start + batch))}
        records: list[Record] = writer.records(offset % partitions, changes, offset)
        pending += [producer.send(r.topic, r.value, key=r.key, partition=r.partition) for r in records]
        if len(pending) > 50_000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)


async def main(sizes: list[int], value_bytes: int, batch: int) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    async with bench_settings("restore") as (settings, _kafka):
        partitions = load_topics(settings.topic_prefix)[JOURNAL].partitions
        producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
        value = orjson.dumps({"pad": "x" * max(0, value_bytes - 10)})
        for n, keys in enumerate(sizes):
            # One processor's changelog per size, so each restore reads exactly `keys` changes.
            topic = changelog_topic(settings.topic_prefix, CORES[n])
            writer = ChangelogWriter(topic)
            await _fill(producer, writer, partitions, keys, value, batch, f"s{n}")
            with tempfile.TemporaryDirectory(prefix="restore-") as tmp:
                stores = {p: PartitionStore(Path(tmp) / f"p{p}") for p in range(partitions)}
                started = time.monotonic()
                restored = await asyncio.to_thread(
                    restore_all, settings.bootstrap_servers, settings.kafka_extra, topic, stores
                )
                seconds = time.monotonic() - started
                held = sum(len(s.committed()) for s in stores.values())
                for s in stores.values():
                    s.close()
            records = sum(r.records for r in restored.values())
            assert held == keys, (held, keys)
            results.append({"keys": keys, "records": records, "partitions": partitions, "seconds": round(seconds, 3),
                            "records_per_s": round(records / seconds)})  # fmt: skip
        await producer.aclose()
    return {"value_bytes": value_bytes, "batch": batch, "restores": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, action="append", help="live keys (repeatable, up to 6 sizes)")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=20, help="keys per batch (one marker each)")
    args = parser.parse_args()
    sizes = (args.keys or [20_000])[:6]
    print(orjson.dumps(asyncio.run(main(sizes, args.value_bytes, args.batch))).decode())
