"""The Kafka shell that runs one processor core.

Commit order for every consumed batch (this order is what makes a SIGKILL at any moment safe):
  1. apply each event to the partition's staged state (pure core, no I/O);
  2. produce the events the core emitted and wait until the broker acknowledged all of them;
  3. write the staged state and the next input offset in one RocksDB write batch;
  4. start the side-effect work items the core asked for (model and tool calls);
  5. commit the offsets to the consumer group asynchronously (for lag visibility only: the store's
     offset, not the group's, is where a restarted processor resumes).
A crash before 3 replays the batch: the same events are re-emitted with the same ids and are
ignored downstream. A partition whose store is missing is replayed from the beginning of the
topic with `live=False` (evolve only) until it reaches the end it had at assignment; only then
does the core act (`resume`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from agentstream.codec import DecodeError
from agentstream.events import Event, ProcessorStatus, RunEvent, RunRequested
from agentstream.kafka.consumer import consumer_config, fetch_batch, watermarks
from agentstream.kafka.core import Outcome, ProcessorCore, WorkItem
from agentstream.kafka.deadletter import dead_letter_record
from agentstream.kafka.journal import TYPE_HEADER, Record, RecordFactory, header_pairs
from agentstream.kafka.producer import AsyncProducer, DeliveryError
from agentstream.kafka.state import PartitionStore
from agentstream.security.journal_trust import JournalVerifier

log = logging.getLogger("agentstream.runtime")


@dataclass
class Counters:
    processed: int = 0
    skipped: int = 0
    emitted: int = 0
    errors: int = 0
    dead_lettered: int = 0
    work_started: int = 0
    work_failed: int = 0
    work_skipped: int = 0
    batches: int = 0
    lag: int = 0


@dataclass
class _Partition:
    store: PartitionStore
    recovery_target: int
    recovering: bool
    needs_resume: bool = True
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeConfig:
    bootstrap: str
    input_topic: str
    deadletter_topic: str
    status_topic: str
    state_dir: Path
    instance: str
    kafka_extra: dict[str, str] = field(default_factory=dict)
    batch_size: int = 1000
    max_concurrent_work: int = 1000
    status_interval_s: float = 2.0
    tick_interval_s: float = 0.5


class ProcessorRuntime:
    def __init__(self, core: ProcessorCore, records: RecordFactory, producer: AsyncProducer, config: RuntimeConfig):
        self.core = core
        self.records = records
        self.producer = producer
        self.config = config
        self.counters = Counters()
        self._partitions: dict[int, _Partition] = {}
        self._work_slots = asyncio.Semaphore(config.max_concurrent_work)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.before_batch: list[Callable[[], Any]] = []
        # Set by the process: checks every consumed journal record's writer (None: checks off).
        self.verifier: JournalVerifier | None = None
        self.vet: list[Callable[[Event], str | None]] = []
        self._uncommitted: dict[int, int] = {}
        self._applied_next: dict[int, int] = {}  # per partition: the next offset not yet applied
        self._applied = asyncio.Condition()
        self._last_group_commit = 0.0
        # Cores with timers (the approval timer) expose `tick(store, now_ms)`; the shell calls it on
        # every live partition, so deadlines fire from rebuilt state after any restart.
        self._tick: Callable[[PartitionStore, int], Outcome] | None = getattr(core, "tick", None)
        self._next_tick = 0.0
        self._consumer = Consumer(
            consumer_config(
                config.bootstrap,
                config.kafka_extra,
                {
                    "group.id": f"{config.input_topic}.{core.name}",
                    # Static membership: a restarted instance gets its partitions straight back
                    # instead of waiting out the session timeout of its dead predecessor.
                    "group.instance.id": f"{core.name}-{config.instance}",
                    "partition.assignment.strategy": "range",
                },
            )
        )

    # -- rebalance callbacks: run inside consume(), on the consume thread, between batches ----------

    def _store_path(self, partition: int) -> Path:
        return self.config.state_dir / f"{self.core.name}-{self.config.instance}" / f"p{partition:03d}"

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            store = PartitionStore(self._store_path(tp.partition))
            stored = store.offset()
            low, high = watermarks(consumer, tp)
            start = stored if stored is not None else OFFSET_BEGINNING
            tp.offset = start
            begin = stored if stored is not None else low
            self._partitions[tp.partition] = _Partition(store, high, recovering=begin < high)
            # What the store reflects counts as applied: a read barrier on a partition with nothing
            # new to read must not wait for an event that never comes.
            self._applied_next[tp.partition] = begin
            log.info("%s assigned p%d from %s (end %d, %s)", self.core.name, tp.partition,
                     "beginning (rebuild)" if stored is None else stored, high,
                     "recovering" if begin < high else "live")  # fmt: skip
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._uncommitted.pop(tp.partition, None)
            self._applied_next.pop(tp.partition, None)
            part = self._partitions.pop(tp.partition, None)
            if part is None:
                continue
            for task in part.tasks.values():
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(task.cancel)
            part.store.discard_staged()
            part.store.close()
        consumer.unassign()

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer.subscribe(
            [self.config.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        status_task = asyncio.create_task(self._publish_status_forever(stop))
        try:
            while not stop.is_set():
                msgs = await asyncio.to_thread(fetch_batch, self._consumer, self.config.batch_size, 0.05)
                for hook in self.before_batch:
                    hook()
                await self._process_batch(msgs)
        finally:
            status_task.cancel()
            await self._drain_work(grace_s=5.0)
            await self.producer.flush()
            await asyncio.to_thread(self._close_consumer)

    def _close_consumer(self) -> None:
        self._commit_group_offsets(force=True)
        for part in self._partitions.values():
            part.store.close()
        self._partitions.clear()
        self._consumer.close()

    async def _process_batch(self, msgs: list[Message]) -> None:
        outcome = Outcome()
        dead: list[Record] = []
        last_offsets: dict[int, int] = {}
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.counters.errors += 1
                    log.warning("%s consume error: %s", self.core.name, err)
                continue
            partition, offset = msg.partition(), msg.offset()
            part = self._partitions.get(partition) if partition is not None else None
            if part is None or partition is None or offset is None:
                continue
            last_offsets[partition] = offset
            type_name = _header(msg, TYPE_HEADER)
            if type_name is not None and not self.core.accepts(type_name):
                self.counters.skipped += 1
                continue
            # Checked before decoding: nothing whose writer is not proven reaches the decoder or a core.
            problem = self.verifier.problem(msg, type_name) if self.verifier is not None else None
            if problem is not None:
                dead.append(dead_letter_record(self.config.deadletter_topic, msg, self.core.name, problem))
                continue
            try:
                event = self.records.codec.decode(msg.value())
            except DecodeError as exc:
                dead.append(dead_letter_record(self.config.deadletter_topic, msg, self.core.name, str(exc)))
                continue
            if self.verifier is not None and event.type_name != type_name:
                dead.append(dead_letter_record(self.config.deadletter_topic, msg, self.core.name,
                                               f"body is {event.type_name}, signed as {type_name}"))  # fmt: skip
                continue
            if not self.core.accepts(event.type_name):
                self.counters.skipped += 1
                continue
            if (problem := self._vet(msg, event)) is not None:
                dead.append(dead_letter_record(self.config.deadletter_topic, msg, self.core.name, problem))
                continue
            if isinstance(event, RunEvent) and partition != self.records.journal_partition(event.run_id):
                # Each partition's state (a call ledger, a budget) is a run's only record; a copy of a
                # genuine event planted in another partition would be a second, unrelated record of
                # it there, e.g. a signed authorization executed a second time.
                dead.append(dead_letter_record(self.config.deadletter_topic, msg, self.core.name,
                                               f"event of run {event.run_id} in partition {partition}, not its run's "
                                               f"partition {self.records.journal_partition(event.run_id)}"))  # fmt: skip
                continue
            try:
                outcome.extend(self.core.apply(part.store, event, live=not part.recovering))
                self.counters.processed += 1
            except Exception as exc:  # a bug or a poison event must not stop the partition
                log.exception("%s failed to apply %s", self.core.name, event.type_name)
                self.counters.errors += 1
                dead.append(
                    dead_letter_record(self.config.deadletter_topic, msg, self.core.name, f"apply failed: {exc!r}")
                )
        if last_offsets:
            async with self._applied:
                for partition, offset in last_offsets.items():
                    self._applied_next[partition] = offset + 1
                self._applied.notify_all()
        for partition, part in self._partitions.items():
            if part.recovering:
                self._check_recovered(partition, part)
            if not part.recovering and part.needs_resume:
                part.needs_resume = False
                outcome.extend(self.core.resume(part.store))
        if self._tick is not None and time.monotonic() >= self._next_tick:
            self._next_tick = time.monotonic() + self.config.tick_interval_s
            now_ms = int(time.time() * 1000)
            for part in self._partitions.values():
                if not part.recovering and not part.needs_resume:
                    outcome.extend(self._tick(part.store, now_ms))
        if not msgs and not outcome.emit and not outcome.work:
            return
        await self._produce_all([self.records.journal(e) for e in outcome.emit] + dead)
        self.counters.emitted += len(outcome.emit)
        self.counters.dead_lettered += len(dead)
        for partition, part in self._partitions.items():
            if partition in last_offsets or part.store.dirty:
                next_offset = last_offsets[partition] + 1 if partition in last_offsets else None
                part.store.commit(next_offset)
        for item in outcome.work:
            self._start_work(item)
        if last_offsets:
            self.counters.batches += 1
            self._uncommitted.update(last_offsets)
        self._commit_group_offsets()

    def _vet(self, msg: Message, event: Event) -> str | None:
        """Why a verified, decoded event must still not count: a RunRequested without the proof that
        the gateway or an operator created it for its tenant, or a core-specific check (`vet`)."""
        if (
            self.verifier is not None
            and self.verifier.require_run_proof
            and isinstance(event, RunRequested)
            and (problem := self.verifier.run_proof_problem(msg, event.tenant_id, event.run_id)) is not None
        ):
            return problem
        for check in self.vet:
            if (problem := check(event)) is not None:
                return problem
        return None

    def _commit_group_offsets(self, force: bool = False) -> None:
        """Group offsets only make lag visible to Kafka tooling (the store's offset is where a
        restart resumes), so they are committed at most once a second, not per batch."""
        now = time.monotonic()
        if not self._uncommitted or (not force and now - self._last_group_commit < 1.0):
            return
        commits = [TopicPartition(self.config.input_topic, p, o + 1) for p, o in self._uncommitted.items()]
        self._uncommitted.clear()
        self._last_group_commit = now
        try:
            self._consumer.commit(offsets=commits, asynchronous=True)
        except Exception as exc:
            log.debug("offset commit skipped: %s", exc)

    def _check_recovered(self, partition: int, part: _Partition) -> None:
        position = self._consumer.position([TopicPartition(self.config.input_topic, partition)])[0].offset
        if position >= part.recovery_target or part.recovery_target == 0:
            part.recovering = False
            log.info("%s p%d recovered up to %d", self.core.name, partition, part.recovery_target)

    async def _produce_all(self, records: list[Record]) -> None:
        for attempt in range(1, 6):
            futures = [
                self.producer.send(r.topic, r.value, key=r.key, partition=r.partition, headers=r.headers)
                for r in records
            ]
            results = await asyncio.gather(*futures, return_exceptions=True)
            failed = [r for r, res in zip(records, results, strict=True) if isinstance(res, BaseException)]
            if not failed:
                return
            log.warning("%d writes not acknowledged (attempt %d); retrying", len(failed), attempt)
            records = failed
            await asyncio.sleep(0.2 * attempt)
        raise DeliveryError(f"{len(records)} writes were never acknowledged; stopping before committing state")

    # -- side-effect work -------------------------------------------------------------------------

    def _start_work(self, item: WorkItem) -> None:
        partition = self.records.journal_partition(item.key.split("/", 1)[0])
        part = self._partitions.get(partition)
        if part is None or item.key in part.tasks:
            return
        task = asyncio.create_task(self._perform(item))
        part.tasks[item.key] = task
        tasks, key = part.tasks, item.key
        task.add_done_callback(lambda _t: tasks.pop(key, None))
        self.counters.work_started += 1

    async def _read_barrier(self, partition: int) -> None:
        """Returns once every event appended to the partition before this call has been applied."""
        tp = TopicPartition(self.config.input_topic, partition)
        _low, high = await asyncio.to_thread(watermarks, self._consumer, tp)
        async with self._applied:
            await self._applied.wait_for(
                lambda: self._applied_next.get(partition, 0) >= high or partition not in self._partitions
            )

    async def _perform(self, item: WorkItem) -> None:
        async with self._work_slots:
            if item.barrier:
                partition = self.records.journal_partition(item.key.split("/", 1)[0])
                await self._read_barrier(partition)
                part = self._partitions.get(partition)
                if part is None or not self.core.still_wanted(part.store, item.key):
                    self.counters.work_skipped += 1
                    return
            delay = 0.2
            events: list[RunEvent] | None = None
            while True:
                try:
                    if events is None:
                        events = await item.run()
                    # Only the write is retried once the side effect is done: running it again
                    # because the journal was unreachable could do it twice.
                    await self._produce_all([self.records.journal(e) for e in events])
                    self.counters.emitted += len(events)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Cores turn expected failures into events; reaching here is a bug or a broker
                    # outage. Retrying keeps the run alive; the item's key keeps it effectively-once.
                    self.counters.work_failed += 1
                    log.exception("%s work %s failed; retrying in %.1fs", self.core.name, item.key, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)

    async def _drain_work(self, grace_s: float) -> None:
        tasks = [t for part in self._partitions.values() for t in part.tasks.values()]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()

    # -- status -----------------------------------------------------------------------------------

    def _lag(self) -> int:
        assigned = [TopicPartition(self.config.input_topic, p) for p in list(self._partitions)]
        if not assigned:
            return 0
        lag = 0
        for tp in self._consumer.position(assigned):
            _low, high = watermarks(self._consumer, tp, 5.0)
            if tp.offset >= 0:
                lag += max(0, high - tp.offset)
        return lag

    async def _publish_status_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.config.status_interval_s)
            try:
                self.counters.lag = await asyncio.to_thread(self._lag)
                await self._produce_all([self.records.keyed(self.config.status_topic, self.status())])
            except Exception as exc:
                log.debug("status not published: %s", exc)

    def status(self) -> ProcessorStatus:
        recovering = any(p.recovering for p in self._partitions.values())
        return ProcessorStatus(
            event_id=f"{self.core.name}-{self.config.instance}",
            processor=self.core.name,
            instance=self.config.instance,
            ts_ms=int(time.time() * 1000),
            state="recovering" if recovering else "running",
            partitions=sorted(self._partitions),
            lag=self.counters.lag,
            processed=self.counters.processed,
            errors=self.counters.errors + self.counters.work_failed,
            dead_lettered=self.counters.dead_lettered,
        )


def _header(msg: Message, name: str) -> str | None:
    for key, value in header_pairs(msg):
        if key == name:
            return value.decode(errors="replace")
    return None
