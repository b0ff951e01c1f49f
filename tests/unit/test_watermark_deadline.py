"""The read barrier's watermark queries get an answer after a leader failover.

After the journal leader of a replicated cluster was SIGKILLed, the handle the barrier asks through
answered every query with `_UNKNOWN_PARTITION` for minutes (its metadata had lost the partition and
nothing refreshed it), and the barrier asked that same handle forever: the runs whose irreversible
tool calls it guarded stayed stuck (tests/e2e/test_local_cluster.py). librdkafka also does not
always honour the query's timeout while the leader is down. agentstream/kafka/watermarks.py replaces
such a handle. Here the twin's consumer stands for it: the first handle made goes bad, as seen.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from agentstream.kafka import watermarks
from agentstream.kafka.fetcher import Fetcher
from agentstream.kafka.journal import Record
from agentstream.kafka.watermarks import WatermarkTimeout
from tests.kafka_twin import TwinBroker, TwinConsumer

TOPIC = "t.journal"


class _BadFirst(TwinConsumer):
    """The first handle made goes bad: `stale`, it answers every query with _UNKNOWN_PARTITION;
    otherwise its first query blocks until `release` is set."""

    def __init__(self, broker: TwinBroker, bad: bool, release: threading.Event, stale: bool) -> None:
        super().__init__(broker, {})
        self.stuck = bad and not stale
        self.stale = bad and stale
        self.release = release
        self.closed = False

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        if self.stale:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        if self.stuck:
            self.stuck = False
            self.release.wait()
        return super().get_watermark_offsets(partition, timeout, cached)

    def close(self) -> None:
        self.closed = True


def _fetcher(broker: TwinBroker, release: threading.Event, made: list[_BadFirst], *, stale: bool = False) -> Fetcher:
    def offsets_reader() -> Consumer:
        made.append(_BadFirst(broker, not made, release, stale))
        return made[-1]

    return Fetcher(lambda: broker.consumer({}), offsets_reader, TOPIC, on_assign=lambda c, p: None,
                   on_revoke=lambda c, p: None, batch_size=10, name="shell")  # fmt: skip


def _ask_in_thread(fetcher: Fetcher, partition: int, outcome: list[object]) -> threading.Thread:
    def ask() -> None:
        try:
            outcome.append(fetcher.high_watermark(partition, 0.2))
        except WatermarkTimeout as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ask, daemon=True)  # daemon: before the fix it never returned
    thread.start()
    return thread


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watermarks, "GRACE_S", 0.3)  # the deadline under test, shortened


def test_a_handle_that_lost_the_partition_is_replaced_and_the_query_answered() -> None:
    broker = TwinBroker({TOPIC: 2})
    for i in range(3):
        broker.append(Record(TOPIC, b"k", f"v{i}".encode(), 1, []))
    made: list[_BadFirst] = []
    fetcher = _fetcher(broker, threading.Event(), made, stale=True)
    # Before: KafkaException(_UNKNOWN_PARTITION) on every call, which the barrier retried forever.
    assert fetcher.high_watermark(1) == 3 and len(made) == 2
    assert fetcher.high_watermark(0) == 0 and len(made) == 2  # the fresh handle stays


def test_a_stuck_query_gives_up_at_its_deadline_and_the_next_one_answers_through_a_fresh_handle() -> None:
    broker = TwinBroker({TOPIC: 2})
    for i in range(3):
        broker.append(Record(TOPIC, b"k", f"v{i}".encode(), 1, []))
    release = threading.Event()
    made: list[_BadFirst] = []
    fetcher = _fetcher(broker, release, made)
    outcome: list[object] = []
    _ask_in_thread(fetcher, 1, outcome).join(3.0)
    assert len(outcome) == 1 and isinstance(outcome[0], WatermarkTimeout)  # not blocked until the broker is back
    assert fetcher.high_watermark(1) == 3 and len(made) == 2  # through a fresh handle
    # The stuck handle is closed once its call returns, not while it is inside it.
    assert not made[0].closed
    release.set()
    deadline = time.monotonic() + 5
    while not made[0].closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made[0].closed and not made[1].closed


def test_callers_queued_behind_a_stuck_query_get_out_too() -> None:
    broker = TwinBroker({TOPIC: 1})
    release = threading.Event()
    made: list[_BadFirst] = []
    fetcher = _fetcher(broker, release, made)
    outcome: list[object] = []
    callers = [_ask_in_thread(fetcher, 0, outcome) for _ in range(3)]  # a barrier and the lag, say
    for caller in callers:
        caller.join(3.0)
    assert len(outcome) == 3 and all(isinstance(o, WatermarkTimeout) for o in outcome)
    assert fetcher.high_watermark(0) == 0 and len(made) == 2  # one replacement, not one per caller
    release.set()
