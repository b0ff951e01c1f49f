"""State changelogs against the real broker: a batch's changes reach its processor's compacted
changelog before the store commits, a wiped store restores from it to the same contents and
offset, a torn batch restores to the batch before it, and what a restore reads follows the live
keys (ended runs keep only bounded markers; compaction removes the rest). What needs no broker
(the topics, a restore that cannot reach one) is in tests/unit/test_changelog_offline.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentstream import ids
from agentstream.calls import CallLedgerCore
from agentstream.config import Settings
from agentstream.events import Event, LlmCallCompleted, LlmCallRequested, RunCompleted, RunEvent
from agentstream.kafka.changelog import MARKER_KEY, ChangelogWriter, changelog_topic
from agentstream.kafka.journal import Record
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.kafka.recovery import Restored, restore_all, restore_partition, restore_topics
from agentstream.kafka.state import PartitionStore
from tests.kafkahelpers import alter_topic_config, read_topic

PROCESSOR = "model-invoker"


async def produce(producer: AsyncProducer, records: list[Record]) -> None:
    await asyncio.gather(
        *(producer.send(r.topic, r.value, key=r.key, partition=r.partition, headers=r.headers) for r in records)
    )


async def commit_batch(store: PartitionStore, writer: ChangelogWriter, producer: AsyncProducer, partition: int,
                       next_offset: int) -> None:  # fmt: skip
    """The runtime's commit order: the changelog records are acknowledged, then the store commits."""
    await produce(producer, writer.records(partition, store.staged_changes(), next_offset))
    store.commit(next_offset)


@dataclass
class Changelog:
    """One test's changelog (the model invoker's, in the test's own topics), its writer, a producer,
    and the stores the test opens, all closed after it."""

    settings: Settings
    root: Path
    producer: AsyncProducer
    topic: str
    writer: ChangelogWriter
    opened: list[PartitionStore] = field(default_factory=list)

    def store(self, name: str) -> PartitionStore:
        self.opened.append(store := PartitionStore(self.root / name))
        return store

    async def commit(self, store: PartitionStore, partition: int, next_offset: int) -> None:
        await commit_batch(store, self.writer, self.producer, partition, next_offset)

    async def restore(self, partition: int, store: PartitionStore, topic: str | None = None) -> Restored:
        bootstrap, extra = self.settings.bootstrap_servers, self.settings.kafka_extra
        return await asyncio.to_thread(restore_partition, bootstrap, extra, topic or self.topic, partition, store)


@pytest.fixture
async def changelog(settings: Settings, tmp_path: Path) -> AsyncIterator[Changelog]:
    topic = changelog_topic(settings.topic_prefix, PROCESSOR)
    producer = AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))
    bench = Changelog(settings, tmp_path, producer, topic, ChangelogWriter(topic))
    try:
        yield bench
    finally:
        for store in bench.opened:
            if not store.closed:
                store.close()
        await producer.aclose()


async def test_changes_reach_the_changelog_and_a_wiped_store_restores_to_the_same_state(
    changelog: Changelog, settings: Settings
) -> None:
    topic = changelog.topic
    store = changelog.store("live")
    store.put("run/a", {"step": 1})
    store.put("run/b", {"step": 1, "text": "é"})
    await changelog.commit(store, 3, 10)
    store.put("run/a", {"step": 2})
    store.delete("run/b")
    store.put("done/a/1", 1)
    await changelog.commit(store, 3, 17)

    msgs = await read_topic(settings.bootstrap_servers, topic, min_count=7)
    assert {m.partition() for m in msgs} == {3}  # journal partition 3's state goes to changelog partition 3
    assert [(m.key(), m.value()) for m in msgs] == [
        (b"run/a", b'{"step":1}'), (b"run/b", '{"step":1,"text":"é"}'.encode()), (MARKER_KEY, b"10"),
        (b"run/a", b'{"step":2}'), (b"run/b", None), (b"done/a/1", b"1"), (MARKER_KEY, b"17"),
    ]  # fmt: skip

    wiped = changelog.store("wiped")
    assert wiped.offset() is None
    result = await changelog.restore(3, wiped)
    assert result.offset == 17 and result.records == 7 and result.dropped == 0
    assert wiped.offset() == store.offset() == 17
    assert wiped.committed() == store.committed() == {b"run/a": b'{"step":2}', b"done/a/1": b"1"}
    assert wiped.get("run/a") == {"step": 2} and wiped.get("run/b") is None

    # A partition the processor never wrote: no changelog to restore, replay the journal instead.
    empty = changelog.store("empty")
    assert (await changelog.restore(5, empty)).offset is None
    assert empty.offset() is None
    # A deployment without the topic at all: the same fallback, not an error.
    gone = f"{settings.topic_prefix}.changelog.nobody"
    assert (await changelog.restore(0, empty, gone)).offset is None


async def test_a_torn_batch_restores_to_the_batch_before_it_and_a_whole_unstored_batch_to_itself(
    changelog: Changelog,
) -> None:
    writer, producer = changelog.writer, changelog.producer
    store = changelog.store("live")
    store.put("run/a", {"step": 1})
    store.put("pending/a/1", {"call": 1})
    await changelog.commit(store, 0, 5)
    before = store.committed()

    # The process dies while the next batch's changelog records are being written: some landed,
    # the marker did not, and the store never committed.
    store.put("run/a", {"step": 2})
    store.delete("pending/a/1")
    store.put("pending/a/2", {"call": 2})
    torn = writer.records(0, store.staged_changes(), 9)
    assert torn[-1].key == MARKER_KEY
    await produce(producer, torn[:2])
    store.discard_staged()

    wiped = changelog.store("wiped")
    result = await changelog.restore(0, wiped)
    assert result.offset == 5 and result.dropped == 2  # the torn records are not state
    assert wiped.committed() == before and wiped.offset() == store.offset() == 5

    # The restarted processor replays from offset 5 and writes the batch whole; this time it
    # dies after the acknowledgement, before its store commits. The changelog is then one whole
    # batch ahead of the store: a restore yields that batch and its offset, like a committed store.
    store.put("run/a", {"step": 2})
    store.delete("pending/a/1")
    store.put("pending/a/2", {"call": 2})
    expected = {**{k: v for k, v in before.items() if k != b"pending/a/1"}, b"run/a": b'{"step":2}',
                b"pending/a/2": b'{"call":2}'}  # fmt: skip
    await produce(producer, writer.records(0, store.staged_changes(), 9))
    store.discard_staged()
    again = changelog.store("again")
    assert (await changelog.restore(0, again)).offset == 9
    assert again.committed() == expected
    # A store whose restore was cut short (keys, no offset) is cleared and restored whole.
    again.write_raw({b"junk": b"1"})
    again.clear()
    again.write_raw({b"junk": b"1"})
    assert again.offset() is None
    assert (await changelog.restore(0, again)).offset == 9
    assert again.committed() == expected


async def test_a_store_older_than_its_changelog_is_seeded_whole_and_partitions_restore_together(
    changelog: Changelog, settings: Settings
) -> None:
    topic, writer, producer = changelog.topic, changelog.writer, changelog.producer
    bootstrap, extra = settings.bootstrap_servers, settings.kafka_extra
    # Two stores that committed before any changelog existed.
    old = {p: changelog.store(f"old{p}") for p in (2, 6)}
    for p, store in old.items():
        for i in range(50):
            store.put(f"run/{p}-{i}", {"i": i})
        store.commit(100 + p)
    # At assignment the stores are kept (they have offsets), and flagged: their changelog is empty.
    found = await asyncio.to_thread(restore_all, bootstrap, extra, topic, old)
    assert {p: (r.offset, r.seed) for p, r in found.items()} == {2: (102, True), 6: (106, True)}
    for p, store in old.items():
        await produce(producer, writer.seed_records(p, store))
        store.put(f"run/{p}-0", {"i": "changed"})  # the next batch: a change on top of the seed
        await changelog.commit(store, p, 200 + p)
    found = await asyncio.to_thread(restore_all, bootstrap, extra, topic, old)
    assert {p: (r.offset, r.seed) for p, r in found.items()} == {2: (202, False), 6: (206, False)}

    # Another core of the same process (the engine hosts them all): restored by the same consumer.
    other_topic = changelog_topic(settings.topic_prefix, "tool-executor")
    other = changelog.store("other")
    other.put("closed/r", 1)
    await commit_batch(other, ChangelogWriter(other_topic), producer, 2, 33)

    wiped = {p: changelog.store(f"wiped{p}") for p in (2, 6, 7)}
    other_wiped = changelog.store("other-wiped")
    both = await asyncio.to_thread(restore_topics, bootstrap, extra, {topic: wiped, other_topic: {2: other_wiped}})
    results = both[topic]
    assert {p: r.offset for p, r in results.items()} == {2: 202, 6: 206, 7: None}  # 7: never written, replay
    assert both[other_topic][2].offset == 33 and other_wiped.committed() == {b"closed/r": b"1"}
    for p in (2, 6):
        assert wiped[p].committed() == old[p].committed() and len(wiped[p].committed()) == 50
        assert wiped[p].get(f"run/{p}-0") == {"i": "changed"}


# -- what a restore reads follows the live runs ----------------------------------------------------


async def _never(_request: LlmCallRequested, _clearances: object) -> list[RunEvent]:
    raise AssertionError("no call runs in this test")


def _finished_run(run: str) -> list[Event]:
    call = ids.llm_call_id(run, 1)
    request = LlmCallRequested(ids.requested_event_id(call), run, "t", 1, call, "m", "[]", "[]", 100)
    completed = LlmCallCompleted(ids.completed_event_id(call), run, "t", 1, call, "p", "m", "ok", "[]", "stop",
                                 10, 5, 0, 1.0, 1)  # fmt: skip
    return [request, completed, RunCompleted(ids.terminal_id(run), run, "t", 1, "ok", "")]


async def _write_history(changelog: Changelog, store: PartitionStore, runs: int,
                         keep: int) -> CallLedgerCore[LlmCallRequested]:  # fmt: skip
    """`runs` finished runs through the real call-ledger core (the model invoker's), one batch
    per run, committed in the runtime's order."""
    core = CallLedgerCore(
        PROCESSOR, LlmCallRequested,
        lambda e: e.call_id if isinstance(e, LlmCallCompleted) else None,
        _never, frozenset({"LlmCallCompleted"}), closed_keep=keep,
    )  # fmt: skip
    offset = 0
    for i in range(runs):
        for event in _finished_run(f"run_{i:05d}"):
            core.apply(store, event, live=False)
            offset += 1
        await changelog.commit(store, 1, offset)
    return core


async def test_a_restore_holds_only_what_live_runs_and_bounded_markers_need(changelog: Changelog) -> None:
    store = changelog.store("live")
    keep = 20
    await _write_history(changelog, store, 300, keep)
    # 300 runs ended; each left only its marker, and only the last `keep` markers remain.
    keys = store.committed()
    assert len(keys) == 2 * keep + 1, sorted(keys)[:10]
    wiped = changelog.store("wiped")
    result = await changelog.restore(1, wiped)
    assert result.offset == 900 and wiped.committed() == keys
    # A late duplicate of a recent run's request is still recognised after the restore...
    core = CallLedgerCore(PROCESSOR, LlmCallRequested, lambda e: None, _never, frozenset(), closed_keep=keep)
    late = _finished_run("run_00299")[0]
    core.apply(wiped, late, live=True)
    assert not wiped.dirty
    # ...and a request of a run that ended `keep` runs ago is treated as new (the documented bound).
    core.apply(wiped, _finished_run("run_00000")[0], live=False)
    assert wiped.dirty


async def test_compaction_leaves_a_restore_about_one_record_per_live_key(
    changelog: Changelog, settings: Settings
) -> None:
    topic, writer = changelog.topic, changelog.writer
    # Let the cleaner act within the test: tiny segments, any dirt, tombstones dropped at once.
    for key, value in (("segment.ms", "200"), ("min.cleanable.dirty.ratio", "0"), ("delete.retention.ms", "0")):
        await asyncio.to_thread(alter_topic_config, settings.bootstrap_servers, topic, key, value)
    store = changelog.store("live")
    runs = 400
    await _write_history(changelog, store, runs, keep=20)
    live_keys = len(store.committed())
    # ~10 records a run were written (request, clearance-free pending, done, marker, tombstones...).
    written = await asyncio.to_thread(_end_offset, settings, topic, 1)
    assert written > 5 * runs
    deadline = time.monotonic() + 120
    marker = 10**6
    while True:
        # Rolls the segment, so the cleaner finds dirt: a first pass drops the overwritten values
        # and stamps the tombstones, a later one drops the tombstones.
        await asyncio.sleep(0.3)
        marker += writer.idle_marker_every
        await produce(changelog.producer, writer.records(1, {}, marker))
        wiped = changelog.store(f"wiped-{time.monotonic_ns()}")
        result = await changelog.restore(1, wiped)
        assert result.offset == marker and wiped.committed() == store.committed()
        wiped.close()
        if result.records <= 2 * live_keys + 10 or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert result.records <= 2 * live_keys + 10, (result.records, live_keys, written)


def _end_offset(settings: Settings, topic: str, partition: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    from agentstream.kafka.consumer import consumer_config, watermarks

    consumer = Consumer(consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "test-reader"}))
    try:
        return watermarks(consumer, TopicPartition(topic, partition))[1]
    finally:
        consumer.close()
