"""Side effects (model and tool calls) of the processor shell: run concurrently, outside the
loop that applies events, and journaled through it (see agentstream/kafka/runtime.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

from agentstream.events import RunEvent
from agentstream.kafka.core import WorkItem
from agentstream.kafka.hosting import HostedCore, Partition
from agentstream.kafka.progress import progress_to
from agentstream.observability.otlp import SpanRef
from agentstream.observability.tracing import TRACING

if TYPE_CHECKING:
    from agentstream.kafka.fetcher import Fetcher
    from agentstream.kafka.journal import RecordFactory
    from agentstream.kafka.runtime_io import Counters

log = logging.getLogger("agentstream.runtime")

# A side effect to start: by which hosted core, and the span it descends from (tracing on).
Work = tuple[HostedCore, WorkItem, SpanRef | None]


class SideEffects:
    """The work half of ProcessorRuntime, which provides these attributes."""

    _partitions: dict[int, Partition]
    _applied_next: dict[int, int]
    _applied: asyncio.Condition
    _work_slots: asyncio.Semaphore
    _loop: asyncio.AbstractEventLoop | None
    _wake: asyncio.Event | None
    _inbox: deque[tuple[HostedCore, list[RunEvent], asyncio.Future[None]]]
    records: RecordFactory
    counters: Counters
    fetcher: Fetcher

    _loop_thread: int
    _running: dict[tuple[str, str], asyncio.Task[None]]
    name: str
    config: Any

    async def _step(self) -> Any: ...

    def _let_work_finish(self, partitions: list[int]) -> None:
        """Before giving partitions up, lets their running calls finish and journal their results
        (the loop keeps running meanwhile): the next owner then finds them done instead of sending
        them again. Bounded by the drain grace; the rebalance waits for it."""
        loop = self._loop
        if loop is None or not loop.is_running() or threading.get_ident() == self._loop_thread:
            return
        held = {p for p in partitions if p in self._partitions}
        tasks = [t for (_core, key), t in self._running.items() if self._partition_of(key) in held]
        if not tasks:
            return

        async def settle() -> None:
            await asyncio.wait(tasks, timeout=self.config.drain_grace_s)

        try:
            asyncio.run_coroutine_threadsafe(settle(), loop).result(self.config.drain_grace_s + 5.0)
        except Exception as exc:
            log.warning("%s: calls still running when their partitions were revoked: %r", self.name, exc)

    def _start_work(self, hosted: HostedCore, item: WorkItem, origin: SpanRef | None = None) -> None:
        part = self._partitions.get(self.records.journal_partition(item.key.split("/", 1)[0]))
        key = (hosted.name, item.key)
        if part is None or key in self._running:
            return
        # A traced call runs in a context that names its origin span (its `chat`/`execute_tool` span's parent).
        task = asyncio.create_task(
            self._perform(hosted, item), context=TRACING.call_context(origin) if origin else None
        )
        self._running[key] = task
        running = self._running
        task.add_done_callback(lambda _t: running.pop(key, None))
        self.counters.work_started += 1

    def _partition_of(self, key: str) -> int:
        return self.records.journal_partition(key.split("/", 1)[0])

    async def _read_barrier(self, partition: int) -> None:
        """Returns once every event appended to the partition before this call has been applied."""
        delay = 0.2
        while True:
            try:
                high = await asyncio.to_thread(self.fetcher.high_watermark, partition)
                break
            except Exception as exc:  # the broker is unreachable or electing a leader: wait it out
                log.debug("%s barrier on p%d waits for the broker: %r", self.name, partition, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        async with self._applied:
            await self._applied.wait_for(
                lambda: self._applied_next.get(partition, 0) >= high or partition not in self._partitions
            )

    async def _perform(self, hosted: HostedCore, item: WorkItem) -> None:
        async with self._work_slots:
            if item.barrier:
                partition = self.records.journal_partition(item.key.split("/", 1)[0])
                await self._read_barrier(partition)
                part = self._partitions.get(partition)
                if part is None or not hosted.core.still_wanted(part.slots[hosted.name].store, item.key):
                    self.counters.work_skipped += 1
                    return
            delay = 0.2
            while True:
                try:
                    with progress_to(partial(self._journal_work_events, hosted)):
                        events = await item.run()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Cores turn expected failures into events; reaching here is a bug. Retrying
                    # keeps the run alive; the item's key keeps it effectively-once.
                    self.counters.work_failed += 1
                    log.exception("%s work %s failed; retrying in %.1fs", hosted.name, item.key, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
        await self._journal_work_events(hosted, events)

    async def _journal_work_events(self, hosted: HostedCore, events: list[RunEvent]) -> None:
        # The loop journals them (it never drops them, broker outage or not) and hands them to the
        # hosted cores; this returns once they are acknowledged.
        assert self._loop is not None and self._wake is not None
        done: asyncio.Future[None] = self._loop.create_future()
        self._inbox.append((hosted, events, done))
        self._wake.set()
        await done

    async def _drain_work(self, grace_s: float) -> None:
        """Lets running side effects finish and journals their results, for up to `grace_s`:
        a result dropped here would make the call run again after the restart."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            tasks = list(self._running.values())
            if not tasks and not self._inbox:
                return
            if self._inbox:
                await self._step()
            else:
                await asyncio.wait(tasks, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
        for task in list(self._running.values()):
            task.cancel()
