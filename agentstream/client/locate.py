"""Reading one run by where it lies in the journal, instead of scanning its partition from 0.

The run index (`runs.index`, written by the gateway's projection: agentstream/gateway/history.py)
holds, per run, its journal partition, first and last offsets and status. A reader looks the run
up there, then reads only the journal between those offsets. The index is a hint: what is read
is the journal's own records, checked as any journal record is; a run with no index entry yet
(created while no gateway ran) is found by the old partition scan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from agentstream.codec import AvroCodec, DecodeError
from agentstream.contract.vocab import SETTLED_STATUSES
from agentstream.events import RunIndexed
from agentstream.kafka.consumer import fetch_batch, watermarks
from agentstream.kafka.partitioner import partition_for

# How far past a run's last indexed event a reader still looks for its late events (a budget
# settlement journaled just after the run ended): until the journal's append time is this much
# later, or this many records later, whichever comes first. The entry a gateway writes when the
# run leaves its memory has them already; this covers one written as the run settled.
LATE_EVENTS_MS = 30_000
LATE_EVENTS_RECORDS = 2_000


def index_key(run_id: str) -> bytes:
    return f"run/{run_id}".encode()


def index_partition(run_id: str, partitions: int) -> int:
    return partition_for(index_key(run_id).decode(), partitions)


def lookup_index(consumer: Consumer, index_topic: str, run_id: str, codec: AvroCodec) -> RunIndexed | None:
    """The run's latest index entry: reads the one (compacted, small-record) index partition that
    holds its key. Blocking: call it in a thread."""
    md = consumer.list_topics(index_topic, timeout=10)
    partitions = md.topics[index_topic].partitions
    if not partitions:
        return None
    tp = TopicPartition(index_topic, index_partition(run_id, len(partitions)), OFFSET_BEGINNING)
    key = index_key(run_id)
    found: RunIndexed | None = None

    def keep(msg: Message) -> bool:
        nonlocal found
        if msg.key() == key and msg.value() is not None:
            try:
                entry = codec.decode(msg.value())
            except DecodeError:
                return False
            if isinstance(entry, RunIndexed) and entry.run_id == run_id:
                found = entry if found is None else widen(found, entry)
        return False

    read_span(consumer, tp, watermarks(consumer, tp)[1], keep)
    return found


def widen(known: RunIndexed, entry: RunIndexed) -> RunIndexed:
    """Two entries for one run as one: entries only widen its span (an older entry read late never
    hides a newer one, nor a re-journaled request the run's true start)."""
    latest = entry if entry.last_offset >= known.last_offset else known
    return dataclasses.replace(latest, first_offset=min(known.first_offset, entry.first_offset))


def read_span(consumer: Consumer, tp: TopicPartition, end: int, stop: Callable[[Message], bool]) -> tuple[int, bool]:
    """Reads `tp` from its offset up to `end` (exclusive), handing each record to `stop` until it
    returns True. Returns where to read on (the stopping record's own offset, so a reader that
    changes its mind reads it again) and whether `stop` ended it. Blocking: call it in a thread."""
    position = tp.offset if tp.offset >= 0 else 0
    if position >= end:
        return position, False
    consumer.assign([tp])
    while position < end:
        msgs = fetch_batch(consumer, 1000, 0.2)
        for msg in msgs:
            if msg.error() is not None:
                continue
            offset = int(msg.offset() or 0)
            if offset >= end:
                return end, False
            if stop(msg):
                return offset, True
            position = offset + 1
        if not msgs:
            # Compaction can leave `end` unreachable by records; the consumer's position is not.
            # Retention or deleted records can put the whole span below the log's start, where no
            # record is ever consumed and the position stays unset: the log start moves it on.
            low = watermarks(consumer, TopicPartition(tp.topic, tp.partition))[0]
            position = max(position, int(consumer.position([tp])[0].offset), low)
    return position, False


def span_stop(entry: RunIndexed | None) -> Callable[[Message], bool]:
    """The end of a run's span: for a run indexed as settled, the first record past its last
    indexed event and the late-event grace; otherwise never (read to the end)."""
    if entry is None or entry.status not in SETTLED_STATUSES:
        return lambda _msg: False
    last_offset, horizon = entry.last_offset, entry.last_ms + LATE_EVENTS_MS

    def stop(msg: Message) -> bool:
        offset = int(msg.offset() or 0)
        return offset > last_offset and (msg.timestamp()[1] > horizon or offset > last_offset + LATE_EVENTS_RECORDS)

    return stop
