"""An in-memory twin of the broker, for driving the processor shell's own code without one.

It implements what the shell reaches the broker through (agentstream/kafka/runtime.py): the
producer protocol (`RecordProducer`) and a consumer made by a `ConsumerFactory`. Logs are lists
of `confluent_kafka.Message` per topic partition, with offsets, watermarks, assignment, positions
and group offsets as the broker keeps them; compaction is not modelled (reading a changelog whole
is what a restore does either way).

A `CrashPlan` stops the process at a named point of the commit order by raising `Crash`, a
BaseException so that no `except Exception` of the shell catches it: what had been written to the
twin stays, what was only in memory is gone, as after a SIGKILL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition
from confluent_kafka.admin._metadata import ClusterMetadata, PartitionMetadata, TopicMetadata

from agentstream.kafka.journal import Record
from agentstream.kafka.producer import DeliveryError
from agentstream.kafka.state import PartitionStore

Rebalance = Callable[[Consumer, list[TopicPartition]], None]


class Crash(BaseException):  # what it simulates, not an error to handle
    """The process dies here."""


@dataclass
class CrashPlan:
    """Crash the `at`-th time `point` is reached. Points: `journal:before` (decided, nothing
    written), `journal:torn` (half of the step's records written), `journal:unacked` (all written,
    no acknowledgement seen), `store:<core>` (that core's store committed), `changelog:torn`,
    `changelog:unacked`, `work:running` (a side effect started, its result not journaled),
    `group:committed` (the group offsets written)."""

    point: str = ""
    at: int = 1
    seen: int = 0
    fired: bool = False

    def reached(self, point: str) -> bool:
        """Whether to crash here (the caller raises after doing what was done by then)."""
        if self.fired or point != self.point:
            return False
        self.seen += 1
        self.fired = self.seen >= self.at
        return self.fired

    def check(self, point: str) -> None:
        if self.reached(point):
            raise Crash(point)


@dataclass
class TwinBroker:
    partitions: dict[str, int]
    plan: CrashPlan = field(default_factory=CrashPlan)
    logs: dict[tuple[str, int], list[Message]] = field(default_factory=dict)
    group_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def log(self, topic: str, partition: int) -> list[Message]:
        if partition >= self.partitions.get(topic, 1):
            raise ValueError(f"no partition {partition} of {topic}")
        return self.logs.setdefault((topic, partition), [])

    def append(self, record: Record) -> Message:
        partition = record.partition if record.partition is not None else 0
        log = self.log(record.topic, partition)
        msg = Message(topic=record.topic, partition=partition, offset=len(log), key=record.key,
                      value=record.value, headers=list(record.headers))  # fmt: skip
        log.append(msg)
        return msg

    def producer(self) -> TwinProducer:
        return TwinProducer(self)

    def consumer(self, config: dict[str, Any]) -> Consumer:
        return TwinConsumer(self, config)

    def records(self, topic: str) -> list[Message]:
        return [m for (t, _p), log in sorted(self.logs.items()) if t == topic for m in log]


class TwinProducer:
    """`RecordProducer` over the twin: a batch lands in order, acknowledged at once."""

    def __init__(self, broker: TwinBroker) -> None:
        self.broker = broker

    def send_batch(self, records: Sequence[Record]) -> asyncio.Future[list[Message | DeliveryError]]:
        plan = self.broker.plan
        kind = "changelog" if records and ".changelog." in records[0].topic else "journal"
        plan.check(f"{kind}:before")
        torn = plan.reached(f"{kind}:torn")
        outcomes: list[Message | DeliveryError] = []
        for record in records[: len(records) // 2] if torn else records:
            outcomes.append(self.broker.append(record))
        if torn:
            raise Crash(f"{kind}:torn")
        plan.check(f"{kind}:unacked")
        future: asyncio.Future[list[Message | DeliveryError]] = asyncio.get_running_loop().create_future()
        future.set_result(outcomes)
        return future

    async def flush(self, timeout_s: float = 30.0) -> None:
        return None


class TwinConsumer(Consumer):
    """The consumer calls the shell makes, over the twin's logs. A subclass only so that it
    types as the Consumer the shell asks for; librdkafka's own handle is never opened (a call
    not overridden here raises 'Consumer closed')."""

    def __init__(self, broker: TwinBroker, config: dict[str, Any]) -> None:
        self.broker = broker
        self.config = config
        self.positions: dict[tuple[str, int], int] = {}
        self.on_assign: Rebalance | None = None
        self.on_revoke: Rebalance | None = None

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None) -> None:
        self.topics = list(topics)
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def rebalance(self, partitions: list[int]) -> None:
        """The group gives this member `partitions` of its topic (the broker's part of a join)."""
        assert self.on_assign is not None, "subscribe first"
        self.on_assign(self, [TopicPartition(self.topics[0], p) for p in partitions])

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            end = len(self.broker.log(tp.topic, tp.partition))
            if tp.offset == OFFSET_BEGINNING:
                start = 0
            elif tp.offset == OFFSET_END:
                start = end
            elif tp.offset < 0:  # stored or invalid: the group's committed offset
                start = self.broker.group_offsets.get((tp.topic, tp.partition), 0)
            else:
                start = tp.offset
            self.positions[(tp.topic, tp.partition)] = start

    def unassign(self) -> None:
        self.positions.clear()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.positions]

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        out: list[Message] = []
        for (topic, partition), at in sorted(self.positions.items()):
            taken = self.broker.log(topic, partition)[at : at + num_messages - len(out)]
            self.positions[(topic, partition)] = at + len(taken)
            out += taken
        return out

    def poll(self, timeout: float | None = -1) -> Message | None:
        got = self.consume(1, 0)
        return got[0] if got else None

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions[(tp.topic, tp.partition)]) for tp in partitions]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.broker.log(partition.topic, partition.partition))

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        metadata = ClusterMetadata()
        topic_metadata = TopicMetadata()
        topic_metadata.topic = topic
        topic_metadata.partitions = {p: PartitionMetadata() for p in range(self.broker.partitions.get(topic or "", 0))}
        metadata.topics = {topic: topic_metadata} if topic in self.broker.partitions else {}
        return metadata

    def commit(self, *, message: Any = None, offsets: Any = None, asynchronous: bool = True) -> Any:
        for tp in offsets or []:
            self.broker.group_offsets[(tp.topic, tp.partition)] = tp.offset
        self.broker.plan.check("group:committed")

    def close(self) -> None:
        self.positions.clear()


class CrashingStore(PartitionStore):
    """A real RocksDB store whose commit is a crash point (`store:<core>`, after the write)."""

    def __init__(self, path: Path, plan: CrashPlan) -> None:
        super().__init__(path)
        self.plan = plan
        self.core = path.parent.name.rsplit("-", 1)[0]  # hosting.store_path: <core>-<instance>/pNNN

    def commit(self, next_offset: int | None) -> None:
        super().commit(next_offset)
        self.plan.check(f"store:{self.core}")


def crashing_stores(plan: CrashPlan) -> Callable[[Path], PartitionStore]:
    return lambda path: CrashingStore(path, plan)
