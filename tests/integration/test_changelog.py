"""State changelogs against the real broker: a batch's changes reach its processor's compacted
changelog before the store commits, a wiped store restores from it to the same contents and
offset, a torn batch restores to the batch before it, and what a restore reads follows the live
keys (ended runs keep only bounded markers; compaction removes the rest)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agentstream import ids
from agentstream.calls import CallLedgerCore
from agentstream.config import Settings
from agentstream.events import Event, LlmCallCompleted, LlmCallRequested, RunCompleted, RunEvent
from agentstream.kafka.changelog import MARKER_KEY, ChangelogWriter, changelog_short_name, changelog_topic
from agentstream.kafka.journal import Record
from agentstream.kafka.producer import AsyncProducer, producer_config
from agentstream.kafka.recovery import RestoreError, restore, restore_all, restore_partition, restore_topics
from agentstream.kafka.state import PartitionStore
from agentstream.topics import JOURNAL, load_topics
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


def fresh(tmp_path: Path, name: str) -> PartitionStore:
    return PartitionStore(tmp_path / name)


@pytest.fixture
async def producer(settings: Settings) -> AsyncProducer:
    return AsyncProducer(producer_config(settings.bootstrap_servers, settings.kafka_extra))


def test_every_processor_has_a_changelog_partitioned_like_the_journal() -> None:
    topics = load_topics("x")
    for processor in (
        "orchestrator",
        "policy-gate",
        "cost-governor",
        "kv-dispatcher",
        "model-invoker",
        "tool-executor",
    ):
        spec = topics[changelog_short_name(processor)]
        assert spec.name == changelog_topic("x", processor)
        assert spec.partitions == topics[JOURNAL].partitions  # journal partition p is changelog partition p
        assert spec.config["cleanup.policy"] == "compact"
        # Nobody else reads its state: the processor, and the engine process that may host it.
        assert spec.writers == (processor, "engine") and spec.readers == (processor, "engine")


async def test_changes_reach_the_changelog_and_a_wiped_store_restores_to_the_same_state(
    settings: Settings, producer: AsyncProducer, tmp_path: Path
) -> None:
    topic = changelog_topic(settings.topic_prefix, PROCESSOR)
    writer = ChangelogWriter(topic)
    store = fresh(tmp_path, "live")
    store.put("run/a", {"step": 1})
    store.put("run/b", {"step": 1, "text": "é"})
    await commit_batch(store, writer, producer, 3, 10)
    store.put("run/a", {"step": 2})
    store.delete("run/b")
    store.put("done/a/1", 1)
    await commit_batch(store, writer, producer, 3, 17)

    msgs = await read_topic(settings.bootstrap_servers, topic, min_count=7)
    assert {m.partition() for m in msgs} == {3}  # journal partition 3's state goes to changelog partition 3
    assert [(m.key(), m.value()) for m in msgs] == [
        (b"run/a", b'{"step":1}'), (b"run/b", '{"step":1,"text":"é"}'.encode()), (MARKER_KEY, b"10"),
        (b"run/a", b'{"step":2}'), (b"run/b", None), (b"done/a/1", b"1"), (MARKER_KEY, b"17"),
    ]  # fmt: skip

    wiped = fresh(tmp_path, "wiped")
    assert wiped.offset() is None
    result = await asyncio.to_thread(
        restore_partition, settings.bootstrap_servers, settings.kafka_extra, topic, 3, wiped
    )
    assert result.offset == 17 and result.records == 7 and result.dropped == 0
    assert wiped.offset() == store.offset() == 17
    assert wiped.committed() == store.committed() == {b"run/a": b'{"step":2}', b"done/a/1": b"1"}
    assert wiped.get("run/a") == {"step": 2} and wiped.get("run/b") is None

    # A partition the processor never wrote: no changelog to restore, replay the journal instead.
    empty = fresh(tmp_path, "empty")
    assert await asyncio.to_thread(restore, settings.bootstrap_servers, settings.kafka_extra, topic, 5, empty) is None
    assert empty.offset() is None
    # A deployment without the topic at all: the same fallback, not an error.
    gone = f"{settings.topic_prefix}.changelog.nobody"
    assert await asyncio.to_thread(restore, settings.bootstrap_servers, settings.kafka_extra, gone, 0, empty) is None
    for s in (store, wiped, empty):
        s.close()
    await producer.aclose()


async def test_a_torn_batch_restores_to_the_batch_before_it_and_a_whole_unstored_batch_to_itself(
    settings: Settings, producer: AsyncProducer, tmp_path: Path
) -> None:
    topic = changelog_topic(settings.topic_prefix, PROCESSOR)
    writer = ChangelogWriter(topic)
    store = fresh(tmp_path, "live")
    store.put("run/a", {"step": 1})
    store.put("pending/a/1", {"call": 1})
    await commit_batch(store, writer, producer, 0, 5)
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

    wiped = fresh(tmp_path, "wiped")
    result = await asyncio.to_thread(
        restore_partition, settings.bootstrap_servers, settings.kafka_extra, topic, 0, wiped
    )
    assert result.offset == 5 and result.dropped == 2  # the torn records are not state
    assert wiped.committed() == before and wiped.offset() == store.offset() == 5
    wiped.close()

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
    again = fresh(tmp_path, "again")
    assert await asyncio.to_thread(restore, settings.bootstrap_servers, settings.kafka_extra, topic, 0, again) == 9
    assert again.committed() == expected
    # A store whose restore was cut short (keys, no offset) is cleared and restored whole.
    again.write_raw({b"junk": b"1"})
    again.clear()
    again.write_raw({b"junk": b"1"})
    assert again.offset() is None
    assert await asyncio.to_thread(restore, settings.bootstrap_servers, settings.kafka_extra, topic, 0, again) == 9
    assert again.committed() == expected
    for s in (store, again):
        s.close()
    await producer.aclose()


async def test_a_store_older_than_its_changelog_is_seeded_whole_and_partitions_restore_together(
    settings: Settings, producer: AsyncProducer, tmp_path: Path
) -> None:
    topic = changelog_topic(settings.topic_prefix, PROCESSOR)
    bootstrap, extra = settings.bootstrap_servers, settings.kafka_extra
    writer = ChangelogWriter(topic)
    # Two stores that committed before any changelog existed.
    old = {p: fresh(tmp_path, f"old{p}") for p in (2, 6)}
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
        await commit_batch(store, writer, producer, p, 200 + p)
    found = await asyncio.to_thread(restore_all, bootstrap, extra, topic, old)
    assert {p: (r.offset, r.seed) for p, r in found.items()} == {2: (202, False), 6: (206, False)}

    # Another core of the same process (the engine hosts them all): restored by the same consumer.
    other_topic = changelog_topic(settings.topic_prefix, "tool-executor")
    other = fresh(tmp_path, "other")
    other.put("closed/r", 1)
    await commit_batch(other, ChangelogWriter(other_topic), producer, 2, 33)

    wiped = {p: fresh(tmp_path, f"wiped{p}") for p in (2, 6, 7)}
    other_wiped = fresh(tmp_path, "other-wiped")
    both = await asyncio.to_thread(restore_topics, bootstrap, extra, {topic: wiped, other_topic: {2: other_wiped}})
    results = both[topic]
    assert {p: r.offset for p, r in results.items()} == {2: 202, 6: 206, 7: None}  # 7: never written, replay
    assert both[other_topic][2].offset == 33 and other_wiped.committed() == {b"closed/r": b"1"}
    for p in (2, 6):
        assert wiped[p].committed() == old[p].committed() and len(wiped[p].committed()) == 50
        assert wiped[p].get(f"run/{p}-0") == {"i": "changed"}
    for s in (*old.values(), *wiped.values(), other, other_wiped):
        s.close()
    await producer.aclose()


def test_a_restore_that_cannot_reach_the_broker_fails_typed_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    from agentstream.localkafka import free_port

    store = fresh(tmp_path, "cut")
    store.write_raw({b"run/a": b"1"})  # left by an earlier restore cut short: keys, no offset
    with pytest.raises(RestoreError):
        restore(f"127.0.0.1:{free_port()}", None, "nowhere.changelog.orchestrator", 0, store, stall_s=1.0)
    assert store.committed() == {} and store.offset() is None  # a replay from the beginning starts clean
    store.close()


# -- what a restore reads follows the live runs ----------------------------------------------------


async def _never(_request: LlmCallRequested, _clearances: object) -> list[RunEvent]:
    raise AssertionError("no call runs in this test")


def _finished_run(run: str) -> list[Event]:
    call = ids.llm_call_id(run, 1)
    request = LlmCallRequested(ids.requested_event_id(call), run, "t", 1, call, "m", "[]", "[]", 100)
    completed = LlmCallCompleted(ids.completed_event_id(call), run, "t", 1, call, "p", "m", "ok", "[]", "stop",
                                 10, 5, 0, 1.0, 1)  # fmt: skip
    return [request, completed, RunCompleted(ids.terminal_id(run), run, "t", 1, "ok", "")]


async def _write_history(store: PartitionStore, writer: ChangelogWriter, producer: AsyncProducer, runs: int,
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
        await commit_batch(store, writer, producer, 1, offset)
    return core


async def test_a_restore_holds_only_what_live_runs_and_bounded_markers_need(
    settings: Settings, producer: AsyncProducer, tmp_path: Path
) -> None:
    topic = changelog_topic(settings.topic_prefix, PROCESSOR)
    writer = ChangelogWriter(topic)
    store = fresh(tmp_path, "live")
    keep = 20
    await _write_history(store, writer, producer, 300, keep)
    # 300 runs ended; each left only its marker, and only the last `keep` markers remain.
    keys = store.committed()
    assert len(keys) == 2 * keep + 1, sorted(keys)[:10]
    wiped = fresh(tmp_path, "wiped")
    result = await asyncio.to_thread(
        restore_partition, settings.bootstrap_servers, settings.kafka_extra, topic, 1, wiped
    )
    assert result.offset == 900 and wiped.committed() == keys
    # A late duplicate of a recent run's request is still recognised after the restore...
    core = CallLedgerCore(PROCESSOR, LlmCallRequested, lambda e: None, _never, frozenset(), closed_keep=keep)
    late = _finished_run("run_00299")[0]
    core.apply(wiped, late, live=True)
    assert not wiped.dirty
    # ...and a request of a run that ended `keep` runs ago is treated as new (the documented bound).
    core.apply(wiped, _finished_run("run_00000")[0], live=False)
    assert wiped.dirty
    for s in (store, wiped):
        s.close()
    await producer.aclose()


async def test_compaction_leaves_a_restore_about_one_record_per_live_key(
    settings: Settings, producer: AsyncProducer, tmp_path: Path
) -> None:
    topic = changelog_topic(settings.topic_prefix, PROCESSOR)
    # Let the cleaner act within the test: tiny segments, any dirt, tombstones dropped at once.
    for key, value in (("segment.ms", "200"), ("min.cleanable.dirty.ratio", "0"), ("delete.retention.ms", "0")):
        await asyncio.to_thread(alter_topic_config, settings.bootstrap_servers, topic, key, value)
    writer = ChangelogWriter(topic)
    store = fresh(tmp_path, "live")
    runs = 400
    await _write_history(store, writer, producer, runs, keep=20)
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
        await produce(producer, writer.records(1, {}, marker))
        wiped = fresh(tmp_path, f"wiped-{time.monotonic_ns()}")
        result = await asyncio.to_thread(
            restore_partition, settings.bootstrap_servers, settings.kafka_extra, topic, 1, wiped
        )
        assert result.offset == marker and wiped.committed() == store.committed()
        wiped.close()
        if result.records <= 2 * live_keys + 10 or time.monotonic() > deadline:
            break
        await asyncio.sleep(2)
    assert result.records <= 2 * live_keys + 10, (result.records, live_keys, written)
    store.close()
    await producer.aclose()


def _end_offset(settings: Settings, topic: str, partition: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    from agentstream.kafka.consumer import consumer_config, watermarks

    consumer = Consumer(consumer_config(settings.bootstrap_servers, settings.kafka_extra, {"group.id": "test-reader"}))
    try:
        return watermarks(consumer, TopicPartition(topic, partition))[1]
    finally:
        consumer.close()
