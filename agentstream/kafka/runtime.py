"""The Kafka shell that runs one or more processor cores in one process.

The process reads the journal once, with one consumer (agentstream/kafka/fetcher.py), and gives
each event to every hosted core that accepts it. What a core emits is journaled, and also handed
straight to the hosted cores that accept it, in the order it is journaled, as Kafka Streams passes
records between the processors of one sub-topology: a step whose cores share a process costs no
produce-to-fetch hop between them, and when the fetch brings those records back they are skipped
by offset, undecoded. A side effect's result (a model or tool call) enters the same way. With one
core per process this is the classic shape: each processor its own process, isolated and scaled
on its own.

Commit order for every input (a fetched batch and/or side-effect results; what makes a SIGKILL at
any moment safe):
  1. apply each event to the stores of the cores that accept it (pure cores, no I/O), then the
     events they emit, in emission order, until nothing new is emitted;
  2. produce every emitted event and wait until the broker acknowledged all of them
     (forever, through a broker outage: nothing is dropped, and one line is logged per change);
  3. commit each core's staged state with the next input offset it reflects (one RocksDB write
     batch per core; a core the input left unchanged writes its offset later: hosting.CoreSlot);
     every few seconds, write the state changes since the last time to each core's changelog
     (agentstream/kafka/changelogs.py), coalesced to the latest value per key;
  4. start the side-effect work items the cores asked for;
  5. commit the offsets to the consumer group asynchronously (for lag visibility only: each
     store's offset, not the group's, is where a restarted processor resumes).
A crash before 3 replays the input from each core's stored offset: the same events are emitted
again with the same ids and recognised as duplicates. A store that is missing is restored from its
changelog (agentstream/kafka/recovery.py) to the offset it reflects, or, with no changelog, rebuilt
from the beginning of the topic; either way the partition is read with `live=False` (evolve only)
until it reaches the end it had at assignment; only then does each core act (`resume`).
tests/unit/test_commit_order.py kills a process at each of these steps and checks what is replayed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from agentstream.events import Event, RunEvent
from agentstream.kafka.admission import admit
from agentstream.kafka.changelogs import StateChangelogs
from agentstream.kafka.consumer import ConsumerFactory, consumer_config
from agentstream.kafka.core import Outcome
from agentstream.kafka.deadletter import dead_letter_record
from agentstream.kafka.fetcher import Fetcher
from agentstream.kafka.hosting import HostedCore, Partition, assign_partitions, commit_stores, store_path
from agentstream.kafka.journal import TYPE_HEADER, Record, header_pairs
from agentstream.kafka.producer import RecordProducer
from agentstream.kafka.runtime_config import RuntimeConfig
from agentstream.kafka.runtime_io import Counters, JournalWriter, publish_status_forever
from agentstream.kafka.runtime_work import SideEffects, Work
from agentstream.kafka.state import PartitionStore
from agentstream.metrics.shell import ShellMetrics
from agentstream.observability.otlp import SpanRef
from agentstream.observability.tracing import TRACING
from agentstream.security.journal_trust import JournalVerifier

log = logging.getLogger("agentstream.runtime")

# A core that keeps answering its own events would spin forever inside one input; past this many
# in-process hand-offs the rest go through the journal like any other event.
MAX_HANDOFFS_PER_INPUT = 100_000
# How often a store's offset is written when nothing else in it changed (hosting.CoreSlot): what a
# crash may replay beyond the batch it interrupted, in events that change nothing.
OFFSETS_INTERVAL_S = 1.0


@dataclass
class _Pending:
    """Emitted, not yet journaled: by whom, and whether hosted cores already applied it."""

    writer: HostedCore
    event: RunEvent
    handed_off: bool
    trace: SpanRef | None = None  # the span that emitted it (tracing on: agentstream/observability)


class ProcessorRuntime(SideEffects):
    def __init__(
        self, cores: list[HostedCore], producer: RecordProducer, config: RuntimeConfig, name: str, *,
        consumers: ConsumerFactory = Consumer, open_store: Callable[[Path], PartitionStore] = PartitionStore,
    ) -> None:  # fmt: skip
        # `consumers` and `open_store`: the broker and RocksDB, or the twin of tests/kafka_twin.py
        self._consumers = consumers
        self.cores = cores
        self.name = name  # the consumer group's and the instance's name: one core's, or the group's
        self.records = cores[0].records  # codec and partitioning, shared by every hosted core
        self.config = config
        self.counters = Counters()
        self.metrics = ShellMetrics(self)  # served by agentstream/process.py when a metrics port is set
        self.writer = JournalWriter(producer, name, config.deadletter_topic)
        self.before_batch: list[Callable[[], Any]] = []
        self.verifier: JournalVerifier | None = None  # checks every consumed record's writer (None: off)
        self._partitions: dict[int, Partition] = {}
        self._guard = threading.Lock()  # held by the loop while it touches partitions; by rebalances
        self._work_slots = asyncio.Semaphore(config.max_concurrent_work)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        # Every running call of this process, whichever partition object it was started for: a
        # partition given up and assigned back must not start a call that is still running.
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._fetched: deque[list[Message]] = deque()
        self._inbox: deque[tuple[HostedCore, list[RunEvent], asyncio.Future[None]]] = deque()
        self._wake: asyncio.Event | None = None
        self._uncommitted: dict[int, int] = {}
        self._applied_next: dict[int, int] = {}  # per partition: the next offset not yet applied
        self._applied = asyncio.Condition()
        self._last_group_commit = 0.0
        self._next_tick = 0.0
        self._next_offsets_write = 0.0
        self.changelogs = StateChangelogs(config.changelogs, config.bootstrap, config.kafka_extra,
                                          config.changelog_interval_s, consumers=consumers, open_store=open_store)  # fmt: skip
        self.fetcher = Fetcher(
            self._new_consumer, self._offsets_reader, config.input_topic, on_assign=self._on_assign, on_revoke=self._on_revoke,
            batch_size=config.batch_size, name=f"{name} consumer",
        )  # fmt: skip

    def _new_consumer(self) -> Consumer:
        return self._consumers(
            consumer_config(
                self.config.bootstrap,
                self.config.kafka_extra,
                {
                    "group.id": f"{self.config.input_topic}.{self.name}",
                    # Static membership: a restarted instance gets its partitions straight back
                    # instead of waiting out the session timeout of its dead predecessor.
                    "group.instance.id": f"{self.name}-{self.config.instance}",
                    "partition.assignment.strategy": "range",
                },
            )
        )

    def _offsets_reader(self) -> Consumer:
        # Never subscribes, joins or commits: it only asks for watermarks, under an assign-only group id.
        return self._consumers(consumer_config(self.config.bootstrap, self.config.kafka_extra,
                                        {"group.id": "agentstream-table-reader"}))  # fmt: skip

    # -- rebalance callbacks: on the fetch thread, inside consume(), under the guard --------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with self._guard:
            stores = self.changelogs.open_stores(
                [tp.partition for tp in partitions], [h.name for h in self.cores],
                lambda core, p: store_path(self.config.state_dir, core, self.config.instance, p),
            )  # fmt: skip
            assigned, behind = assign_partitions(consumer, partitions, [h.name for h in self.cores], stores)
            for p, fresh in assigned.items():
                self._partitions[p] = fresh.partition
                # What the stores reflect counts as applied: a read barrier on a partition with
                # nothing new to read must not wait for an event that never comes.
                self._applied_next[p] = fresh.begin
            log.info("%s assigned partitions %s: %d events to read before acting", self.name,
                     ",".join(str(tp.partition) for tp in partitions) or "none", behind)  # fmt: skip
            consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._let_work_finish([tp.partition for tp in partitions])
        with self._guard:
            for tp in partitions:
                self._uncommitted.pop(tp.partition, None)
                self._applied_next.pop(tp.partition, None)
                part = self._partitions.pop(tp.partition, None)
                self.changelogs.forget(tp.partition)
                if part is None:
                    continue
                # Calls still running are not cancelled: their results are journaled when they come
                # (the next owner, or this process when the partition comes back, finds them done).
                part.close()
            try:
                consumer.unassign()
            except Exception as exc:  # a consumer in a fatal state, being replaced
                log.debug("unassign failed: %r", exc)

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        wake = self._wake = asyncio.Event()
        self.fetcher.start(self._loop, self._deliver)
        status_task = asyncio.create_task(
            publish_status_forever(self, self.config.status_topic, self.config.status_interval_s, stop)
        )
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                waiting = asyncio.create_task(wake.wait())
                await asyncio.wait({waiting, stopping}, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                wake.clear()
                await self._step()
        finally:
            status_task.cancel()
            stopping.cancel()
            self.fetcher.stop()
            await self._drain_work(self.config.drain_grace_s)
            if self._flushing is not None:
                await asyncio.wait({self._flushing}, timeout=self.config.drain_grace_s)
            await self.writer.flush()
            await asyncio.to_thread(self._close_consumer)

    def _deliver(self, msgs: list[Message]) -> None:
        self._fetched.append(msgs)
        if self._wake is not None:
            self._wake.set()

    async def _step(self) -> None:
        fetched = self._fetched.popleft() if self._fetched else []
        inbox = [self._inbox.popleft() for _ in range(len(self._inbox))]
        for hook in self.before_batch:
            hook()
        if not self._guard.acquire(blocking=False):
            await asyncio.to_thread(self._guard.acquire)
        try:
            await self._process(fetched, inbox)
        finally:
            self._guard.release()
            if fetched:
                self.fetcher.taken()
        if self._fetched or self._inbox:
            assert self._wake is not None
            self._wake.set()

    def _close_consumer(self) -> None:
        self._commit_group_offsets(force=True)
        with self._guard:
            for part in self._partitions.values():
                part.close()
            self._partitions.clear()
        self.fetcher.close()

    async def _process(self, fetched: list[Message], inbox: list[tuple[HostedCore, list[RunEvent], Any]]) -> None:
        pending: deque[_Pending] = deque()
        work: list[Work] = []
        dead: list[Record] = []
        last_offsets = self._apply_fetched(fetched, pending, work, dead)
        if last_offsets:
            async with self._applied:
                for partition, offset in last_offsets.items():
                    self._applied_next[partition] = offset + 1
                self._applied.notify_all()
        for hosted, events, _future in inbox:
            traced = TRACING.enabled  # a call's results descend from its span
            pending.extend(_Pending(hosted, e, self._live(e), TRACING.origin(e) if traced else None) for e in events)
        self._resume_and_tick(pending, work)
        if not fetched and not inbox and not pending and not work:
            # Idle: staged changes go out on time, not as one burst ahead of the next step's writes.
            self._commit_stores({})
            self._flush_changelogs_if_due()
            return
        journaled = self._hand_off(pending, work)
        records = [p.writer.records.journal(p.event) for p in journaled]
        if TRACING.enabled:
            TRACING.journaling(records, journaled)
        acks = await self.writer.produce_all(records + dead)
        for written, ack in zip(journaled, acks, strict=False):
            part = self._partitions.get(ack.partition() or 0) if written.handed_off and ack is not None else None
            at = ack.offset() if ack is not None else None
            if part is not None and at is not None:
                part.own.add(at)
        self.counters.emitted += len(journaled)
        self.counters.dead_lettered += len(dead)
        self.metrics.journaled(journaled, dead)
        self._commit_stores(last_offsets)
        self._flush_changelogs_if_due()
        for _hosted, _events, future in inbox:
            if not future.done():
                future.set_result(None)
        for hosted, work_item, origin in work:
            self._start_work(hosted, work_item, origin)
        if last_offsets:
            self.counters.batches += 1
            self._uncommitted.update(last_offsets)
        self._commit_group_offsets()

    def _flush_changelogs_if_due(self) -> None:
        # Only after _commit_stores (staged changes are covered by acknowledged journal writes); in
        # the background, one flush at a time so a partition's flushes land in order.
        if self.changelogs.due() and (self._flushing is None or self._flushing.done()):
            self._flushing = asyncio.create_task(self.writer.produce_in_order(self.changelogs.flush()))

    def _live(self, event: RunEvent) -> bool:
        part = self._partitions.get(self.records.journal_partition(event.run_id))
        return part is not None and not part.recovering

    def _apply_fetched(
        self, msgs: list[Message], pending: deque[_Pending], work: list[Work], dead: list[Record]
    ) -> dict[int, int]:
        last_offsets: dict[int, int] = {}
        for msg in msgs:
            partition, offset = msg.partition(), msg.offset()
            part = self._partitions.get(partition) if partition is not None else None
            if part is None or partition is None or offset is None:
                continue
            last_offsets[partition] = offset
            if offset in part.own:
                part.own.discard(offset)  # journaled and applied by this process already
                self.counters.skipped += 1
                continue
            type_name = _header(msg, TYPE_HEADER)
            targets = [
                h for h in self.cores
                if (type_name is None or h.core.accepts(type_name)) and part.slots[h.name].next_offset <= offset
            ]  # fmt: skip
            if not targets:
                self.counters.skipped += 1
                continue
            event, problem = admit(msg, type_name, partition, self.records, self.verifier)
            if event is None:
                dead.append(dead_letter_record(self.config.deadletter_topic, msg, self.name, problem or "unreadable"))
                continue
            parent = TRACING.parent_of(msg, event) if TRACING.enabled else None
            for hosted in targets:
                if not hosted.core.accepts(event.type_name):
                    continue
                if (why := hosted.problem(event)) is not None:
                    dead.append(dead_letter_record(self.config.deadletter_topic, msg, hosted.name, why))
                    continue
                try:
                    self._apply(hosted, part, event, pending, work, live=not part.recovering, parent=parent)
                except Exception as exc:  # a bug or a poison event must not stop the partition
                    log.exception("%s failed to apply %s", hosted.name, event.type_name)
                    self.counters.errors += 1
                    dead.append(dead_letter_record(self.config.deadletter_topic, msg, hosted.name,
                                                   f"apply failed: {exc!r}"))  # fmt: skip
        return last_offsets

    def _apply(
        self,
        hosted: HostedCore,
        part: Partition,
        event: Event,
        pending: deque[_Pending],
        work: list[Work],
        *,
        live: bool,
        parent: SpanRef | None = None,
    ) -> None:
        start = time.time_ns() if live and TRACING.enabled else 0
        outcome = hosted.core.apply(part.slots[hosted.name].store, event, live=live)
        self.counters.processed += 1
        self.metrics.processed[hosted.name, event.type_name] += 1
        trace = TRACING.step(hosted.name, event, parent, start, outcome) if start else None
        self._collect(hosted, outcome, pending, work, trace)

    def _collect(self, hosted: HostedCore, outcome: Outcome, pending: deque[_Pending],
                 work: list[Work], trace: SpanRef | None = None) -> None:  # fmt: skip
        pending.extend(_Pending(hosted, e, self._live(e), trace) for e in outcome.emit)
        work.extend((hosted, item, trace) for item in outcome.work)

    def _hand_off(self, pending: deque[_Pending], work: list[Work]) -> list[_Pending]:
        """Applies emitted events to the hosted cores that accept them (but not to the emitter
        when it applied the event as it emitted it: HostedCore.applied_when_emitted), in emission
        order, with what those emit in turn; returns every event to journal, in that same order."""
        journaled: list[_Pending] = []
        handoffs = 0
        while pending:
            item = pending.popleft()
            journaled.append(item)
            if not item.handed_off:
                continue
            if handoffs >= MAX_HANDOFFS_PER_INPUT:
                item.handed_off = False
                continue
            part = self._partitions[self.records.journal_partition(item.event.run_id)]
            for hosted in self.cores:
                if not hosted.core.accepts(item.event.type_name):
                    continue
                if hosted is item.writer and hosted.applied_when_emitted(item.event):
                    continue
                if (why := hosted.problem(item.event)) is not None:
                    log.warning("%s refuses %s from %s: %s", hosted.name, item.event.type_name, item.writer.name, why)
                    continue
                handoffs += 1
                self._apply(hosted, part, item.event, pending, work, live=True, parent=item.trace)
        if handoffs >= MAX_HANDOFFS_PER_INPUT:
            log.error("%s: over %d in-process hand-offs for one input; the rest go through the journal",
                      self.name, MAX_HANDOFFS_PER_INPUT)  # fmt: skip
        return journaled

    def _resume_and_tick(self, pending: deque[_Pending], work: list[Work]) -> None:
        for partition, part in list(self._partitions.items()):
            if part.recovering:
                self._check_recovered(partition, part)
            if not part.recovering and part.needs_resume:
                part.needs_resume = False
                for hosted in self.cores:
                    self._collect(hosted, hosted.core.resume(part.slots[hosted.name].store), pending, work)
        if time.monotonic() < self._next_tick:
            return
        self._next_tick = time.monotonic() + self.config.tick_interval_s
        now_ms = int(time.time() * 1000)
        for hosted in self.cores:
            if (tick := hosted.tick) is None:
                continue
            for part in list(self._partitions.values()):
                if not part.recovering and not part.needs_resume:
                    self._collect(hosted, tick(part.slots[hosted.name].store, now_ms), pending, work)

    def _commit_stores(self, last_offsets: dict[int, int]) -> None:
        commit_stores(self._partitions, last_offsets, self.changelogs.stage, offsets_due=self._offsets_due())

    def _offsets_due(self) -> bool:
        now = time.monotonic()
        if now < self._next_offsets_write:
            return False
        self._next_offsets_write = now + OFFSETS_INTERVAL_S
        return True

    def _commit_group_offsets(self, force: bool = False) -> None:
        """Group offsets only make lag visible to Kafka tooling (the stores' offsets are where a
        restart resumes), so they are committed at most once a second, not per batch."""
        now = time.monotonic()
        if not self._uncommitted or (not force and now - self._last_group_commit < 1.0):
            return
        self.fetcher.commit({p: o + 1 for p, o in self._uncommitted.items()})
        self._uncommitted.clear()
        self._last_group_commit = now

    def _check_recovered(self, partition: int, part: Partition) -> None:
        # Applied, not fetched: the fetch thread may already hold the next batch (the consumer's
        # position counts it), and resuming before it is applied would re-drive finished calls.
        # The last record of a partition is never compacted away, so the applied offset gets there.
        if self._applied_next.get(partition, 0) >= part.recovery_target:
            part.recovering = False
            log.debug("%s p%d recovered up to %d", self.name, partition, part.recovery_target)
            if not any(p.recovering for p in self._partitions.values()):
                log.info("%s caught up on every assigned partition: live", self.name)

    def partitions(self) -> dict[int, Partition]:
        return self._partitions

    def applied_offsets(self) -> dict[int, int]:
        return dict(self._applied_next)


def _header(msg: Message, name: str) -> str | None:
    for key, value in header_pairs(msg):
        if key == name:
            return value.decode(errors="replace")
    return None
