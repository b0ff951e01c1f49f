"""The Kafka-level client: produce RunRequested / CancelRequested and read a run's journal,
as any producer or consumer of the platform's topics would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from agentstream import ids
from agentstream.blobs import BlobStore
from agentstream.blobs.task import offload_task
from agentstream.client.locate import lookup_index, read_span, span_stop
from agentstream.codec import AvroCodec
from agentstream.config import Settings
from agentstream.context.settings import parse_settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.events import (
    TERMINAL_TYPES,
    CancelRequested,
    ResumeRequested,
    RunEvent,
    RunHalted,
    RunRequested,
)
from agentstream.kafka.consumer import consumer_config, fetch_batch, watermarks
from agentstream.kafka.journal import TYPE_HEADER, RecordFactory, header_pairs
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.observability.tracing import TRACING
from agentstream.process import wait_for_kafka
from agentstream.security.journal_trust import JournalSigner, JournalVerifier, journal_auth_enabled
from agentstream.settings import BlobSettings, load
from agentstream.topics import JOURNAL, RUN_INDEX, load_topics


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex[:20]}"


@dataclass(frozen=True)
class JournalEntry:
    event: RunEvent
    offset: int
    timestamp_ms: int


@dataclass
class RunRequest:
    task: str
    model: str = "scripted"
    tools: list[str] = field(default_factory=list)
    max_steps: int = 20
    tenant_id: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    idempotency_key: str | None = None
    request_hash: str = ""
    budget: RunBudget | None = None
    api_key_id: str = ""  # the API key that asked for the run (the gateway's caller), if any
    # Context settings given for this run (agentstream.context.settings), over the tenant's
    # defaults: only the fields given. None or empty: the defaults alone.
    context: dict[str, Any] | None = None
    workflow: str = ""  # a registered workflow (explicit graph) to follow; "": a ReAct run
    workflow_version: str = ""  # "": the workflow's latest version at the run's start


@dataclass(frozen=True)
class RunBudget:
    """Hard caps for one run, enforced by the cost governor; 0 means no cap of that kind."""

    usd: float = 0.0
    tokens: int = 0
    wall_s: float = 0.0
    on_loop: str = "halt"  # or "warn"


def is_terminal(event: RunEvent) -> bool:
    return event.type_name in TERMINAL_TYPES


def waiting_halt(halt: RunHalted | None, event: RunEvent) -> RunHalted | None:
    """The halt a run waits at after `event`, given the one it waited at before: a RunHalted
    waits until its resume or a cancel request (after which the run moves on by itself)."""
    if isinstance(event, RunHalted):
        return event
    if isinstance(event, CancelRequested) or event.type_name in TERMINAL_TYPES:
        return None
    if isinstance(event, ResumeRequested) and halt is not None and event.halt == halt.halt:
        return None
    return halt


class JournalClient:
    """`writer` is whose journal key signs what this client appends: "admin" (the operator's
    tools, which hold every key and so also check every record they read), "gateway" (its own
    bundle), or None for a client with no key, whose records every processor refuses."""

    def __init__(self, settings: Settings, writer: str | None = "admin") -> None:
        self.settings = settings
        self.writer = writer
        self.topic = load_topics(settings.topic_prefix)[JOURNAL].name
        self.codec = AvroCodec()
        self._producer: AsyncProducer | None = None
        self._records: RecordFactory | None = None
        self._verifier: JournalVerifier | None = None
        self._opening = asyncio.Lock()
        self._blobs: BlobStore | None = None  # opened for the first task over the offload threshold

    async def _ready(self) -> tuple[AsyncProducer, RecordFactory]:
        # Concurrent first calls wait for one producer: each making its own would leak all but one.
        async with self._opening:
            if self._producer is None or self._records is None:
                # Says once, clearly, when Kafka is unreachable or the topic is missing, then retries.
                partitions = await wait_for_kafka(self.settings, self.topic)
                signer = None
                if self.writer is not None:
                    keyring = component_keyring(self.settings, self.writer)
                    signer = JournalSigner(self.writer, keyring)
                    # Only a holder of every writer's key can check what it reads.
                    if self.writer == "admin" and journal_auth_enabled():
                        self._verifier = JournalVerifier(keyring)
                self._records = RecordFactory(self.codec, self.topic, partitions, signer)
                self._producer = AsyncProducer(
                    producer_config(self.settings.bootstrap_servers, self.settings.kafka_extra)
                )
            return self._producer, self._records

    async def append(self, event: RunEvent, *, as_writer: str | None = None) -> None:
        """Journals one event, signed as this client's writer, or as `as_writer` when this client
        holds that writer's key (only the operator's tools do: tests and benches that stand in
        for a processor)."""
        producer, records = await self._ready()
        record = records.journal(event, as_writer=as_writer)
        await producer.send(
            record.topic, record.value, key=record.key, partition=record.partition,
            headers=record.headers + TRACING.headers_for(event),
        )  # fmt: skip

    async def request_run(self, request: RunRequest) -> str:
        run_id = request.run_id or new_run_id()
        budget = request.budget or RunBudget()
        # Checked before it is journaled: settings the orchestrator cannot apply would fail the run
        # at its start, so they are refused here, where the caller sees why.
        parse_settings(request.context)
        task, task_blob = await self._offload_task(request.tenant_id, run_id, request.task)
        await self.append(
            RunRequested(
                event_id=ids.run_requested_id(run_id),
                run_id=run_id,
                tenant_id=request.tenant_id,
                task=task,
                task_blob=task_blob,
                model=request.model,
                tools=list(request.tools),
                max_steps=request.max_steps,
                idempotency_key=request.idempotency_key or run_id,
                labels=dict(request.labels),
                request_hash=request.request_hash,
                budget_usd=budget.usd,
                budget_tokens=budget.tokens,
                budget_wall_s=budget.wall_s,
                on_loop=budget.on_loop,
                api_key_id=request.api_key_id,
                context_json=orjson.dumps(request.context).decode() if request.context else "",
                workflow=request.workflow,
                workflow_version=request.workflow_version,
            )
        )
        return run_id

    async def _offload_task(self, tenant_id: str, run_id: str, task: str) -> tuple[str, str]:
        return await offload_task(self._blob_store, tenant_id, run_id, task, load(BlobSettings).offload_bytes)

    def _blob_store(self) -> BlobStore:
        """Opened for the first task over the offload threshold, then kept (closed by aclose)."""
        if self._blobs is None:
            # Imported here: boto3 (the S3 backend) costs every CLI command ~0.3 s to import.
            from agentstream.blobs.factory import open_blob_store

            self._blobs = open_blob_store(self.settings)
        return self._blobs

    async def cancel(self, run_id: str, tenant_id: str, reason: str, requested_by: str = "cli") -> None:
        await self.append(CancelRequested(ids.cancel_requested_id(run_id), run_id, tenant_id, reason, requested_by))

    async def resume(
        self,
        run_id: str,
        tenant_id: str,
        halt: int,
        add_steps: int,
        reason: str,
        requested_by: str = "cli",
        raise_budget: RunBudget | None = None,
    ) -> None:
        """Resumes a halted run, adding steps and, with `raise_budget`, raising its caps by that much."""
        more = raise_budget or RunBudget()
        event = ResumeRequested(
            ids.resume_id(run_id, halt), run_id, tenant_id, halt, add_steps, reason, requested_by,
            add_usd=more.usd, add_tokens=more.tokens, add_wall_s=more.wall_s,
        )  # fmt: skip
        await self.append(event)

    async def read_run(self, run_id: str) -> list[JournalEntry]:
        """Everything journaled for a run so far, in journal order, duplicates removed.

        Read by the run's index entry (its partition and offset range) when it has one, so an old
        run costs what it holds, not the partition's history; by a partition scan otherwise."""
        located = await self._read_located(run_id)
        if located is not None:
            return located
        return [entry async for entry in self._scan(run_id, follow=False)]

    async def _read_located(self, run_id: str) -> list[JournalEntry] | None:
        _, records = await self._ready()
        index_topic = load_topics(self.settings.topic_prefix)[RUN_INDEX].name
        tp_partition = records.journal_partition(run_id)
        prefix = f"{run_id}/".encode()

        def read() -> list[JournalEntry] | None:
            consumer = Consumer(
                consumer_config(
                    self.settings.bootstrap_servers, self.settings.kafka_extra, {"group.id": "agentstream-reader"}
                )
            )
            try:
                try:
                    entry = lookup_index(consumer, index_topic, run_id, self.codec)
                except KafkaException:
                    return None  # no index readable (an older deployment): the scan still works
                if entry is None or entry.partition != tp_partition:
                    return None
                tp = TopicPartition(self.topic, tp_partition, entry.first_offset)
                found: list[JournalEntry] = []
                seen: set[str] = set()
                stop = span_stop(entry)

                def take(msg: Message) -> bool:
                    if stop(msg):
                        return True
                    if not (msg.key() or b"").startswith(prefix):
                        return False
                    if self._verifier is not None and self._verifier.problem(msg, type_of(msg)) is not None:
                        return False
                    event = self.codec.decode(msg.value())
                    if isinstance(event, RunEvent) and event.event_id not in seen:
                        seen.add(event.event_id)
                        found.append(JournalEntry(event, int(msg.offset() or 0), msg.timestamp()[1]))
                    return False

                read_span(consumer, tp, watermarks(consumer, tp)[1], take)
                # An entry whose range holds none of the run's events is not this journal's: scan.
                return found or None
            finally:
                consumer.close()

        return await asyncio.to_thread(read)

    async def follow(
        self, run_id: str, timeout_s: float | None = None, until: Callable[[RunEvent], bool] | None = None
    ) -> AsyncIterator[JournalEntry]:
        """The run's events from the beginning, then live, until `until` holds for one. By default
        until the run settles: its terminal event, or a RunHalted that nothing after it in the
        journal has resumed or cancelled (the run waits for a person there; a follower that kept
        waiting would never return). A halt already resumed when it is read is followed past."""
        settle = until is None
        async for entry in self._scan(run_id, follow=True, timeout_s=timeout_s, until=until or is_terminal,
                                      settle=settle):  # fmt: skip
            yield entry

    async def _scan(
        self,
        run_id: str,
        *,
        follow: bool,
        timeout_s: float | None = None,
        until: Callable[[RunEvent], bool] = is_terminal,
        settle: bool = False,
    ) -> AsyncIterator[JournalEntry]:
        _, records = await self._ready()
        partition = records.journal_partition(run_id)
        prefix = f"{run_id}/".encode()
        consumer = Consumer(
            consumer_config(
                self.settings.bootstrap_servers,
                self.settings.kafka_extra,
                {"group.id": "agentstream-reader"},
            )
        )
        tp = TopicPartition(self.topic, partition, OFFSET_BEGINNING)
        consumer.assign([tp])
        seen: set[str] = set()
        last: list[str] = []
        halted: RunHalted | None = None
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        try:
            # From the log's start: retention or deleted records leave nothing below it to read.
            position, end = await asyncio.to_thread(watermarks, consumer, tp)
            while True:
                if not follow and position >= end:
                    return
                if deadline is not None and loop.time() > deadline:
                    raise TimeoutError(f"run {run_id} did not end within {timeout_s}s; last events: {last[-4:]}")
                msgs: list[Message] = await asyncio.to_thread(fetch_batch, consumer, 500, 0.1)
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    position = int(msg.offset() or 0) + 1
                    key = msg.key() or b""
                    if not key.startswith(prefix):
                        continue
                    # A record whose writer is not proven is not the run's: skipped before its event
                    # id can shadow the genuine event's.
                    if self._verifier is not None and self._verifier.problem(msg, type_of(msg)) is not None:
                        continue
                    event = self.codec.decode(msg.value())
                    if not isinstance(event, RunEvent) or event.event_id in seen:
                        continue
                    seen.add(event.event_id)
                    last.append(event.event_id)
                    yield JournalEntry(event, position - 1, msg.timestamp()[1])
                    if follow and until(event):
                        return
                    halted = waiting_halt(halted, event) if settle else None
                if halted is not None:
                    # Settled only if nothing was appended after the halt: the end is read afresh,
                    # so a resume already in the partition is followed, not missed.
                    end = max(end, (await asyncio.to_thread(watermarks, consumer, tp))[1])
                    if not msgs:  # position() also counts what carries no record (as below)
                        position = max(position, (await asyncio.to_thread(consumer.position, [tp]))[0].offset)
                    if position >= end:
                        return
                if not msgs and not follow:
                    # Compaction can leave the end offset unreachable; position() is authoritative.
                    pos = (await asyncio.to_thread(consumer.position, [tp]))[0].offset
                    if pos >= end:
                        return
        finally:
            await asyncio.to_thread(consumer.close)

    async def aclose(self) -> None:
        if self._producer is not None:
            await self._producer.aclose()
        if self._blobs is not None:
            await self._blobs.close()


def type_of(msg: Message) -> str | None:
    for key, value in header_pairs(msg):
        if key == TYPE_HEADER:
            return value.decode(errors="replace")
    return None


async def read_run_once(settings: Settings, run_id: str) -> list[JournalEntry]:
    """One run's journal, read with a client opened and closed for the purpose (CLI commands)."""
    client = JournalClient(settings)
    try:
        return await client.read_run(run_id)
    finally:
        await client.aclose()
