"""The shell's writes: journal records that are never dropped, and the processor status records.

A write the broker did not acknowledge is written again, with backoff, for as long as it takes: a
broker outage of any length stalls the processor instead of ending it, and one line is logged
when writes stop being acknowledged and one when they are again. Re-writing is safe: journal
records are keyed by deterministic event ids, so a copy that did land is a recognised duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from confluent_kafka import Message

from agentstream.events import ProcessorStatus
from agentstream.kafka.deadletter import refused_record
from agentstream.kafka.journal import Record
from agentstream.kafka.logs import StateLog
from agentstream.kafka.producer import DeliveryError, RecordProducer

if TYPE_CHECKING:
    from agentstream.kafka.runtime import ProcessorRuntime

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
    write_retries: int = 0


class JournalWriter:
    def __init__(self, producer: RecordProducer, name: str, deadletter_topic: str | None = None) -> None:
        self.producer = producer
        self.name = name
        self.deadletter_topic = deadletter_topic
        self.retries = 0
        self.refused = 0
        self._state = StateLog(log, f"{name} journal writes")

    async def produce_all(self, records: list[Record]) -> list[Message | None]:
        """Writes every record and returns the broker's acknowledgements, in order. A record the
        broker refuses for good (too large) is dead-lettered in its place, its slot None: retrying
        it would stall every write after it, forever."""
        acks: list[Message | None] = [None] * len(records)
        todo = list(range(len(records)))
        sending = list(records)
        delay = 0.2
        while todo:
            outcomes = await self.producer.send_batch([sending[i] for i in todo])
            failed: list[int] = []
            first_error: DeliveryError | None = None
            for i, outcome in zip(todo, outcomes, strict=True):
                if not isinstance(outcome, DeliveryError):
                    acks[i] = outcome if sending[i] is records[i] else None
                elif outcome.permanent and sending[i] is records[i] and self.deadletter_topic is not None:
                    self.refused += 1
                    log.error("%s: the broker refused a %d-byte record for %s for good (%s); dead-lettered",
                              self.name, len(records[i].value or b""), records[i].topic, outcome)  # fmt: skip
                    sending[i] = refused_record(self.deadletter_topic, records[i], self.name, f"refused: {outcome}")
                    failed.append(i)
                else:
                    failed.append(i)
                    first_error = first_error or outcome
            if first_error is not None:
                self.retries += 1
                self._state.set("waiting", f"{len(failed)} writes not acknowledged ({first_error}); "
                                "holding them and retrying until the broker takes them")  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            elif not failed and self._state.state != "ok":
                self._state.set("ok", "writes acknowledged again")
            todo = failed
        return acks

    async def produce_in_order(self, records: list[Record]) -> None:
        """Writes `records` as one ordered unit: when any write fails, all are written again from
        the first, so no record lands after one that was meant to follow it (a changelog marker
        must come after the changes it covers)."""
        delay = 0.2
        while records:
            batches: list[Awaitable[list[Message | DeliveryError]]] = []
            for start in range(0, len(records), 500):
                batches.append(self.producer.send_batch(records[start : start + 500]))
                await asyncio.sleep(0)  # a large flush must not hold the loop for its whole length
            outcomes = [o for batch in await asyncio.gather(*batches) for o in batch]
            failed = [o for o in outcomes if isinstance(o, DeliveryError)]
            if not failed:
                return
            self.retries += 1
            self._state.set("waiting", f"{len(failed)} changelog writes not acknowledged ({failed[0]}); "
                            "writing the batch again until the broker takes it")  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def flush(self) -> None:
        try:
            await self.producer.flush()
        except DeliveryError as exc:
            log.warning("shutting down with writes unacknowledged: %s", exc)


async def publish_status_forever(runtime: ProcessorRuntime, topic: str, interval_s: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await asyncio.sleep(interval_s)
        try:
            runtime.counters.lag = await asyncio.to_thread(lag_of, runtime)
            records = [runtime.records.keyed(topic, status) for status in statuses(runtime)]
            await runtime.writer.producer.send_batch(records)  # best effort: a failed write is skipped
        except Exception as exc:
            log.debug("status not published: %s", exc)


def lag_of(runtime: ProcessorRuntime) -> int:
    """Records in the assigned partitions not yet applied (blocking: asks the broker)."""
    applied = runtime.applied_offsets()
    return sum(max(0, runtime.fetcher.high_watermark(p, 5.0) - next_offset) for p, next_offset in applied.items())


def statuses(runtime: ProcessorRuntime) -> list[ProcessorStatus]:
    """One status per hosted core, so `agentstream status` lists every processor however they
    are grouped into processes."""
    parts = runtime.partitions()
    recovering = any(p.recovering for p in parts.values())
    c = runtime.counters
    return [
        ProcessorStatus(
            event_id=f"{hosted.name}-{runtime.config.instance}",
            processor=hosted.name,
            instance=runtime.config.instance,
            ts_ms=int(time.time() * 1000),
            state="recovering" if recovering else "running",
            partitions=sorted(parts),
            lag=c.lag,
            processed=c.processed,
            errors=c.errors + c.work_failed,
            dead_lettered=c.dead_lettered,
        )
        for hosted in runtime.cores
    ]
