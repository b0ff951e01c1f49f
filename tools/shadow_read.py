"""Reading recorded runs for shadow replay: every journal partition read once, in bulk, and grouped
by run, keeping what the whole-journal report reader drops: the records of a run that could not
be decoded (a schema newer than this code), which the run's report must name."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Message, TopicPartition

from agentstream.client.journal import type_of
from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.credentials.signing_keys import component_keyring
from agentstream.events import EVENT_TYPES, RunEvent
from agentstream.kafka.consumer import consumer_config, positions_since
from agentstream.process import wait_for_kafka
from agentstream.security.journal_trust import JournalVerifier, journal_auth_enabled
from agentstream.topics import JOURNAL, load_topics


@dataclass
class RecordedRun:
    run_id: str
    events: list[RunEvent] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)  # why each undecodable record was refused
    first_ms: int = 0  # when its first record was appended

    @property
    def tenant_id(self) -> str:
        return self.events[0].tenant_id if self.events else ""


@dataclass(frozen=True)
class Selection:
    """Which recorded runs to replay: the last `runs` (by start), those started at or after
    `since_ms`, one tenant's; None: no limit of that kind."""

    runs: int | None = None
    since_ms: int | None = None
    tenant: str | None = None


def select(runs: dict[str, RecordedRun], selection: Selection) -> list[RecordedRun]:
    chosen = [r for r in runs.values() if selection.tenant is None or r.tenant_id == selection.tenant]
    if selection.since_ms is not None:
        # Read from that time on, a run that began before it shows its middle only: not chosen.
        chosen = [r for r in chosen if r.first_ms >= selection.since_ms and _begins(r)]
    chosen.sort(key=lambda r: (r.first_ms, r.run_id))
    return chosen[-selection.runs :] if selection.runs is not None else chosen


def _begins(run: RecordedRun) -> bool:
    return bool(run.events) and run.events[0].type_name == "RunRequested"


async def read_recorded_runs(settings: Settings, selection: Selection = Selection()) -> list[RecordedRun]:
    topic = load_topics(settings.topic_prefix)[JOURNAL].name
    await wait_for_kafka(settings, topic)  # says once, clearly, what is wrong while it waits
    # A record whose writer is not proven is no part of any run (the operator holds every key).
    verifier = JournalVerifier(component_keyring(settings, "admin")) if journal_auth_enabled() else None

    def read() -> dict[str, RecordedRun]:
        codec = AvroCodec()
        consumer = Consumer(
            consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "agentstream-shadow"})
        )
        try:
            tps, ends = positions_since(consumer, topic, selection.since_ms)
            consumer.assign(tps)
            runs: dict[str, RecordedRun] = {}
            seen: set[str] = set()
            done = {tp.partition for tp in tps if tp.offset >= ends[tp.partition] or ends[tp.partition] == 0}
            while len(done) < len(ends):
                msgs = consumer.consume(5000, 0.5)
                for msg in msgs:
                    if msg.error() is None:
                        _take(msg, codec, verifier, runs, seen, done, ends)
                if not msgs:  # transaction markers or compaction can hide the end offset
                    for tp in consumer.position([TopicPartition(topic, p) for p in ends if p not in done]):
                        if tp.offset >= ends[tp.partition]:
                            done.add(tp.partition)
            return runs
        finally:
            consumer.close()

    return select(await asyncio.to_thread(read), selection)


def _take(
    msg: Message,
    codec: AvroCodec,
    verifier: JournalVerifier | None,
    runs: dict[str, RecordedRun],
    seen: set[str],
    done: set[int],
    ends: dict[int, int],
) -> None:
    offset, partition = msg.offset() or 0, msg.partition() or 0
    if offset + 1 >= ends[partition]:
        done.add(partition)
    key = (msg.key() or b"").decode(errors="replace")
    run_id = key.split("/", 1)[0]
    if verifier is not None and verifier.problem(msg, type_of(msg)) is not None:
        kind = type_of(msg)
        if kind is not None and kind not in EVENT_TYPES and run_id:
            # A type this code has never heard of has no writer in its trust table either: a newer
            # version's event, or a forgery. Either way the run cannot be re-driven without it.
            _undecodable(runs, run_id, msg, f"unknown event type {kind!r} (newer than this code?)")
        return
    try:
        event = codec.decode(msg.value())
    except DecodeError as exc:
        if run_id:  # keyed by event id, which begins with the run id: the run learns what it lost
            _undecodable(runs, run_id, msg, str(exc))
        return
    if not isinstance(event, RunEvent) or event.event_id in seen:
        return
    seen.add(event.event_id)
    run = _run(runs, event.run_id, msg)
    run.events.append(event)


def _run(runs: dict[str, RecordedRun], run_id: str, msg: Message) -> RecordedRun:
    """The run `msg` is of, started when its earliest record was appended: partitions are read in
    no set order, and a record of the run may sit on another one (a stray, or a forgery)."""
    appended = msg.timestamp()[1]
    run = runs.setdefault(run_id, RecordedRun(run_id, first_ms=appended))
    run.first_ms = min(run.first_ms, appended)
    return run


def _undecodable(runs: dict[str, RecordedRun], run_id: str, msg: Message, why: str) -> None:
    run = _run(runs, run_id, msg)
    run.undecodable.append(f"partition {msg.partition()} offset {msg.offset()} ({type_of(msg) or 'untyped'}): {why}")
