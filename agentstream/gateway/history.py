"""The gateway's history: the run index it writes, its resume checkpoint, and where each run it no
longer holds lies in the journal.

- `runs.index` (keyed "run/<run_id>", RunIndexed): written as the projection sees a run settle and
  as the run leaves memory. `runs show` and the gateway read an old run by its partition and
  offset range instead of scanning (agentstream/client/locate.py).
- `gateway.checkpoints` (one key, ProjectionCheckpoint): per journal partition, an offset at or
  before the first event of every run that was live, written only once every run settled before
  it is in the index. A gateway starts reading the journal there, so its start costs what is
  live, not the journal's length. With no checkpoint it reads from 0 and builds the index.
- The location map: run id -> (partition, offsets) for runs not in memory, read from the index in
  the background (it never delays readiness). About 150 bytes a run: the one thing here that
  grows with history; see the README's known limits.

Both topics are hints over the journal, never the truth: a run read back is the journal's own
records, verified as the tail verifies them, and both topics can be rebuilt from the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition

from agentstream.client.locate import index_key, index_partition, read_span
from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.contract.vocab import SETTLED_STATUSES, RunStatus
from agentstream.events import ProjectionCheckpoint, RunIndexed
from agentstream.gateway.views import RunView
from agentstream.kafka.consumer import consumer_config, fetch_batch, watermarks
from agentstream.kafka.producer import producer_config
from agentstream.topics import CHECKPOINTS, RUN_INDEX, load_topics

CHECKPOINT_KEY = b"checkpoint/journal"
# partition, first offset, last offset, last event's append time, settled
_PACKED = struct.Struct("<iqqq?")


@dataclass(frozen=True, slots=True)
class Location:
    partition: int
    first_offset: int
    last_offset: int
    last_ms: int
    settled: bool

    def entry(self, run_id: str) -> RunIndexed:
        """As an index entry, for the span reader (client/locate.py)."""
        status = RunStatus.COMPLETED if self.settled else RunStatus.RUNNING

        return RunIndexed("", run_id, "", self.partition, self.first_offset, self.last_offset, self.last_ms, status, 0)


class RunHistory:
    def __init__(self, settings: Settings, writer: str = "gateway") -> None:
        self.settings = settings
        self.writer = writer
        topics = load_topics(settings.topic_prefix)
        self.index_topic = topics[RUN_INDEX].name
        self.checkpoint_topic = topics[CHECKPOINTS].name
        self.codec = AvroCodec()
        self._producer = Producer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
        self._index_partitions = topics[RUN_INDEX].partitions
        # Packed (see _PACKED): a dict of small bytes values costs a third of one of tuples.
        self._locations: dict[str, bytes] = {}
        self._located = asyncio.Event()
        # Given every entry read that carries a summary: the console's catalog lists runs from them.
        self.on_summary: Callable[[RunIndexed], None] | None = None
        self.written = 0
        self.failed_writes = 0

    # -- writing -----------------------------------------------------------------------------------

    def record(self, view: RunView, summary: str = "") -> None:
        """The run's index entry as it stands (non-blocking; delivered before the next checkpoint);
        `summary`: the run as the console lists it (catalog.RunCatalog.summary), "" for a location only."""
        if view.partition < 0 or view.first_offset < 0:
            return
        entry = RunIndexed(
            event_id=f"index/{view.run_id}/{view.last_offset}", run_id=view.run_id, tenant_id=view.tenant_id,
            partition=view.partition, first_offset=view.first_offset, last_offset=view.last_offset,
            last_ms=view.last_ms, status=view.status, created_ms=view.created_ms, summary=summary,
        )  # fmt: skip
        self._remember(view.run_id, entry)
        try:
            self._producer.produce(
                self.index_topic, self.codec.encode(entry), index_key(view.run_id),
                partition=index_partition(view.run_id, self._index_partitions), on_delivery=self._delivered,
            )  # fmt: skip
        except BufferError:
            self._producer.poll(1.0)  # a full queue: wait for room once, then count it as lost
            self.failed_writes += 1
        self._producer.poll(0)

    def _delivered(self, err: object, _msg: object) -> None:
        if err is None:
            self.written += 1
            return
        if not self.failed_writes:  # once: the cause (an ACL, a missing topic) is the same for all
            print(f"agentstream gateway: a run index entry was not written ({err}); until one is, no "
                  "checkpoint is taken and a restart reads the journal from its start", file=sys.stderr)  # fmt: skip
        self.failed_writes += 1

    async def checkpoint(self, offsets: list[int]) -> bool:
        """Writes the resume point once every index entry before it is delivered. False (and none
        from then on) once an entry could not be: no checkpoint may pass a run the index lacks."""
        remaining = await asyncio.to_thread(self._producer.flush, 30)
        if remaining or self.failed_writes:
            # A lost entry is a run only the journal knows: a restart must read from before it
            # (the last checkpoint) and index it again.
            return False
        mark = ProjectionCheckpoint(f"checkpoint/{time.time_ns()}", self.writer, int(time.time() * 1000), offsets)
        self._producer.produce(self.checkpoint_topic, self.codec.encode(mark), CHECKPOINT_KEY, partition=0)
        return await asyncio.to_thread(self._producer.flush, 30) == 0

    async def read_checkpoint(self) -> list[int] | None:
        def read() -> list[int] | None:
            consumer = self._consumer()
            try:
                tp = TopicPartition(self.checkpoint_topic, 0)
                low, high = watermarks(consumer, tp)
                if high <= low:
                    return None
                found: list[int] | None = None

                def keep(msg: Message) -> bool:
                    nonlocal found
                    mark = self._decode(msg.value())
                    if isinstance(mark, ProjectionCheckpoint):
                        found = list(mark.offsets)
                    return False

                for start in (high - 1, low):  # the last record, or (if compaction removed it) all
                    read_span(consumer, TopicPartition(self.checkpoint_topic, 0, start), high, keep)
                    if found is not None:
                        return found
                return None
            finally:
                consumer.close()

        try:
            return await asyncio.to_thread(read)
        except KafkaException as exc:
            print(f"agentstream gateway: no checkpoint readable ({exc}); reading the journal from 0", file=sys.stderr)
            return None

    # -- where runs lie ------------------------------------------------------------------------------

    def _remember(self, run_id: str, entry: RunIndexed) -> None:
        first, last, last_ms = entry.first_offset, entry.last_offset, entry.last_ms
        settled = entry.status in SETTLED_STATUSES
        known = self._locations.get(run_id)
        if known is not None:
            # Entries only widen the span: an older entry (another gateway's, or read back late)
            # never hides a newer one, nor a re-journaled request the run's true start.
            _p, known_first, known_last, known_ms, known_settled = _PACKED.unpack(known)
            if known_last > last:
                last, last_ms, settled = known_last, known_ms, known_settled
            first = min(first, known_first)
        self._locations[run_id] = _PACKED.pack(entry.partition, first, last, last_ms, settled)

    async def locate(self, run_id: str, timeout_s: float = 30.0) -> Location | None:
        packed = self._locations.get(run_id)
        if packed is None and not self._located.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._located.wait(), timeout_s)
            packed = self._locations.get(run_id)
        return None if packed is None else Location(*_PACKED.unpack(packed))

    async def index_read(self, timeout_s: float = 30.0) -> None:
        """Until the whole index was read once (or `timeout_s`): what a start knows of older runs."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._located.wait(), timeout_s)

    @property
    def located_runs(self) -> int:
        return len(self._locations)

    async def follow_index(self, stop: asyncio.Event) -> None:
        """Reads the whole index once (then says so), then keeps following it: other gateways'
        entries, and this one's own, read back."""
        consumer = self._consumer()
        try:
            md = await asyncio.to_thread(consumer.list_topics, self.index_topic, 10)
            tps = [
                TopicPartition(self.index_topic, p, OFFSET_BEGINNING) for p in md.topics[self.index_topic].partitions
            ]
            ends = {tp.partition: (await asyncio.to_thread(watermarks, consumer, tp))[1] for tp in tps}
            consumer.assign(tps)
            pending = {p for p, end in ends.items() if end > 0}
            while not stop.is_set():
                msgs = await asyncio.to_thread(fetch_batch, consumer, 5000, 0.2)
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    if pending and (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                        pending.discard(msg.partition() or 0)
                    entry = self._decode(msg.value())
                    if isinstance(entry, RunIndexed):
                        self._remember(entry.run_id, entry)
                        if entry.summary and self.on_summary is not None:
                            self.on_summary(entry)
                if pending and not msgs:
                    positions = await asyncio.to_thread(
                        consumer.position, [TopicPartition(self.index_topic, p) for p in pending]
                    )
                    pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
                if not pending:
                    self._located.set()
        except KafkaException as exc:
            print(f"agentstream gateway: the run index is unreadable ({exc}); old runs cannot be read back",
                  file=sys.stderr)  # fmt: skip
        finally:
            self._located.set()  # a stopped reader must not hold lookups until their timeout
            await asyncio.to_thread(consumer.close)

    # -- plumbing ------------------------------------------------------------------------------------

    def _consumer(self) -> Consumer:
        return Consumer(
            consumer_config(
                self.settings.bootstrap_servers, self.settings.kafka_extra, {"group.id": "agentstream-gateway"}
            )
        )

    def _decode(self, value: bytes | None) -> object:
        try:
            return self.codec.decode(value)
        except DecodeError:
            return None

    async def aclose(self) -> None:
        await asyncio.to_thread(self._producer.flush, 10)
