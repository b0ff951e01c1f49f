"""The gateway's view of runs: a projection of the journal that holds what is live and recent.

One reader tails every journal partition (outside any consumer group: each gateway instance needs
every run). It holds every live run (not ended, not halted) and, in a bounded LRU, the runs that
settled recently, each with its events in journal order; subscribers (SSE streams, waiting
requests) get each new event through a mailbox. An event's SSE id is its journal offset: a run
lives in one partition, so its offsets only grow.

With a `RunHistory` (the service always has one), memory and start time follow live runs, not the
journal's length: a start reads from the last checkpoint (less a recent window), a run that leaves
the LRU is recorded in the run index, and an older run is read back on demand by its partition and
offset range (`find`), SSE resume included. Without one (tests of forged records) it reads from 0
and keeps every run, as before.

Run trees (a child run's link to its parent, from its RunRequested) are kept by `trees.RunTrees`,
bounded the same way: links live in the views held, plus a bounded set waiting for a parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import ChainMap, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from agentstream.client.journal import JournalEntry
from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.contract.vocab import ApprovalStatus
from agentstream.costs import RunCost
from agentstream.events import (
    ApprovalDecided,
    ApprovalRequested,
    BudgetSettled,
    ResumeRequested,
    RunEvent,
    RunRequested,
)
from agentstream.gateway.catalog import RunCatalog
from agentstream.gateway.history import RunHistory
from agentstream.gateway.recall import Recall
from agentstream.gateway.trees import RunTrees
from agentstream.gateway.views import (
    WITHHELD,
    WITHHELD_FIELDS,
    ApprovalView,
    Mailbox,
    RunView,
    StoredEvent,
    _summarise,
    approval_outcome,
    sse_message,
)
from agentstream.kafka.consumer import consumer_config, fetch_batch, watermarks
from agentstream.settings import GatewaySettings
from agentstream.topics import JOURNAL, load_topics

__all__ = ["WITHHELD", "WITHHELD_FIELDS", "ApprovalView", "HistoryLimits", "Mailbox", "RunIndex", "RunView",
           "StoredEvent", "_summarise", "sse_message"]  # fmt: skip


@dataclass(frozen=True)
class HistoryLimits:
    """What the projection holds beyond live runs, and how often it checkpoints."""

    # About 1.5 KB an event held (its SSE message and decoded event): 20,000 is some 30 MB.
    recent_runs: int = 1000  # settled runs kept after they settle (least recently used leave first)
    recent_events: int = 20_000  # events those settled runs may hold together
    window_events: int = 1000  # per partition, read back at start so recent runs are listed again
    checkpoint_s: float = 5.0

    @staticmethod
    def of(gateway: GatewaySettings) -> HistoryLimits:
        return HistoryLimits(gateway.recent_runs, gateway.recent_events, gateway.window_events, gateway.checkpoint_s)


class RunIndex:
    def __init__(
        self,
        settings: Settings,
        approval_verifies: Callable[[ApprovalDecided], bool] | None = None,
        record_problem: Callable[[Message], str | None] | None = None,
        history: RunHistory | None = None,
        limits: HistoryLimits | None = None,
    ) -> None:
        self.settings = settings
        # Why a journal record is not the platform's (journal_trust.ViewVerifier): such a record is
        # shown to no one, so a forged event can neither appear nor shadow a genuine one's id.
        self.record_problem = record_problem
        self.refused = 0
        # Without the platform's key a forged decision would show as decided here, while the gate,
        # which verifies, still waits for a real one.
        self.approval_verifies = approval_verifies or (lambda _event: False)
        self.topic = load_topics(settings.topic_prefix)[JOURNAL].name
        self.codec = AvroCodec()
        self.history = history
        self.limits = limits or HistoryLimits()
        # Live runs are never dropped; settled ones wait in `recent`, least recently used first.
        self.live: dict[str, RunView] = {}
        self.recent: OrderedDict[str, RunView] = OrderedDict()
        self.runs: ChainMap[str, RunView] = ChainMap(self.live, self.recent)
        self._recent_events = 0
        self.approvals: dict[str, ApprovalView] = {}
        self._subscribers: dict[str, set[Mailbox]] = {}
        # Per journal partition, the next offset the tail applies: every record before it is in.
        self.positions: dict[int, int] = {}
        self.start_offsets: dict[int, int] = {}
        self.recall = Recall(self, settings, record_problem) if history is not None else None
        # (tenant, run) -> the run's events from the audit warehouse: runs the journal no longer holds.
        self.archive: Callable[[str, str], Awaitable[list[JournalEntry]]] | None = None
        self.trees = RunTrees(self.runs, self.limits.recent_runs)
        # Every run on record, on disk: what the runs list and cost charts query (catalog.py).
        self.catalog = RunCatalog()
        if history is not None:  # runs recorded before this gateway's start are listed from their entries
            history.on_summary = self.catalog.ingest
        self._caught_up = asyncio.Event()
        self.dead_letters = 0
        self.evicted = 0
        self.records_read = 0

    # -- reading the journal ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        consumer = Consumer(
            consumer_config(
                self.settings.bootstrap_servers, self.settings.kafka_extra, {"group.id": "agentstream-gateway"}
            )
        )
        md = await asyncio.to_thread(consumer.list_topics, self.topic, 10)
        parts = sorted(md.topics[self.topic].partitions)
        marks = {p: await asyncio.to_thread(watermarks, consumer, TopicPartition(self.topic, p)) for p in parts}
        ends = {p: high for p, (_low, high) in marks.items()}
        start = await self._start_offsets(marks)
        self.start_offsets, self.positions = dict(start), dict(start)
        consumer.assign([TopicPartition(self.topic, p, start[p] if start[p] > 0 else OFFSET_BEGINNING) for p in parts])
        pending = {p for p in parts if ends[p] > start[p]}
        if not pending:
            self._caught_up.set()
        next_checkpoint = time.monotonic() + self.limits.checkpoint_s
        checkpointing: asyncio.Task[bool] | None = None
        try:
            while not stop.is_set():
                msgs = await asyncio.to_thread(fetch_batch, consumer, 2000, 0.05)
                self.records_read += len(msgs)
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    partition, offset = msg.partition() or 0, msg.offset() or 0
                    self.positions[partition] = offset + 1
                    if partition in pending and offset + 1 >= ends[partition]:
                        pending.discard(partition)
                    if self.record_problem is not None and self.record_problem(msg) is not None:
                        self.refused += 1
                        continue
                    self._apply(partition, offset, msg.timestamp()[1], msg.value())
                if pending and not msgs:
                    positions = await asyncio.to_thread(
                        consumer.position, [TopicPartition(self.topic, p) for p in pending]
                    )
                    for tp in positions:
                        self.positions[tp.partition] = max(self.positions[tp.partition], tp.offset)
                    pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
                if not pending:
                    self._caught_up.set()
                self._evict()
                self.catalog.flush_due()
                if self.history is not None and not pending and time.monotonic() >= next_checkpoint:
                    next_checkpoint = time.monotonic() + self.limits.checkpoint_s
                    if checkpointing is None or checkpointing.done():
                        # Beside the tail, never in its way: a slow flush must not hold up events.
                        checkpointing = asyncio.create_task(self.history.checkpoint(self.checkpoint_offsets()))
        finally:
            if checkpointing is not None:
                await asyncio.gather(checkpointing, return_exceptions=True)
            await asyncio.to_thread(consumer.close)
            if self.recall is not None:
                await self.recall.aclose()

    async def _start_offsets(self, marks: dict[int, tuple[int, int]]) -> dict[int, int]:
        """From the checkpoint, less a recent window per partition; from the log's start without
        one (a first start: this read builds the run index as it goes). Never below the log's
        start: below it (retention, deleted records) no record is ever read to mark the way."""
        first = {p: low for p, (low, _high) in marks.items()}
        if self.history is None:
            return first
        checkpoint = await self.history.read_checkpoint()
        if checkpoint is None or len(checkpoint) != len(marks):
            return first
        window = self.limits.window_events
        return {p: max(low, min(checkpoint[p], high - window)) for p, (low, high) in marks.items()}

    def checkpoint_offsets(self) -> list[int]:
        """Per partition, where a restart must read from to see every live run whole: the tail's
        position, or the first offset of the oldest live run there if that is earlier."""
        offsets = dict(self.positions)
        for view in self.live.values():
            first = view.revived_at if view.revived_at >= 0 else view.first_offset
            if 0 <= first < offsets.get(view.partition, first + 1):
                offsets[view.partition] = first
        return [offsets[p] for p in sorted(offsets)]

    async def ready(self, timeout_s: float = 60.0) -> None:
        await asyncio.wait_for(self._caught_up.wait(), timeout_s)

    def _apply(self, partition: int, offset: int, timestamp_ms: int, value: bytes | None) -> None:
        try:
            event = self.codec.decode(value)
        except DecodeError:
            self.dead_letters += 1  # the processors dead-letter it; the gateway just skips it
            return
        if not isinstance(event, RunEvent):
            return
        view = self.live.get(event.run_id) or self.recent.get(event.run_id)
        if view is None:
            if isinstance(event, RunRequested):
                view = new_view(event, partition, offset, timestamp_ms)
                self.live[event.run_id] = view
                self.trees.joined(view)
            elif isinstance(event, ResumeRequested) and self.recall is not None:
                # A run this gateway no longer holds comes back to life: read it back whole.
                self.recall.revive(event.run_id, offset)
                return
            else:
                return  # part of a run older than this gateway's start, or already evicted
        held = len(view.events)
        was_settled = view.settled
        self.apply_event(view, offset, timestamp_ms, event)
        if len(view.events) > held:
            self.trees.applied(view, view.events[-1])
        self._place(view, was_settled, len(view.events) - held)
        self.catalog.touch(view)
        if isinstance(event, RunRequested) and self.history is not None and view.first_offset == offset:
            self.history.record(view)  # so `runs show` finds a live run's start too

    def apply_event(self, view: RunView, offset: int, timestamp_ms: int, event: RunEvent) -> None:
        """One journal event into a run's view (from the tail, or when reading a run back)."""
        view.last_offset, view.last_ms = max(view.last_offset, offset), max(view.last_ms, timestamp_ms)
        if isinstance(event, BudgetSettled) and view.cost is not None:
            # A run's last call is often settled after the run ended: its cost counts all the same.
            view.cost.add(event, timestamp_ms)
            self.catalog.settled(event, timestamp_ms)
        if view.terminal or event.event_id in view.seen_ids:
            return  # a re-emitted duplicate, or something after the end: neither changes the run
        view.seen_ids.add(event.event_id)
        stored = StoredEvent(offset, timestamp_ms, event, sse_message(offset, timestamp_ms, event))
        view.events.append(stored)
        view.updated_ms = timestamp_ms
        _summarise(view, event)
        self._track_approval(view, event)
        for mailbox in self._subscribers.get(event.run_id, ()):
            mailbox.put(stored)

    def _place(self, view: RunView, was_settled: bool, added: int) -> None:
        """Moves a run between live and recent as it settles or comes back."""
        if view.settled and not was_settled:
            self.live.pop(view.run_id, None)
            self.recent[view.run_id] = view
            self._recent_events += len(view.events)
            if self.history is not None:
                self.history.record(view, self.catalog.summary(view))
        elif not view.settled and was_settled:
            if self.recent.pop(view.run_id, None) is not None:
                self._recent_events -= len(view.events) - added
            self.live[view.run_id] = view
        elif view.settled:
            self._recent_events += added

    def hold(self, view: RunView) -> RunView:
        """Takes a run read back from the journal into memory, unless the tail has meanwhile."""
        held = self.runs.get(view.run_id)
        if held is not None:
            return held
        if view.settled:
            self.recent[view.run_id] = view
            self._recent_events += len(view.events)
        else:
            self.live[view.run_id] = view
        self.trees.joined(view)
        return view

    def _evict(self) -> None:
        if self.history is None:
            return  # nothing could read an evicted run back: keep them all
        limits, spared = self.limits, 0
        while self.recent and (len(self.recent) > limits.recent_runs or self._recent_events > limits.recent_events):
            run_id, view = next(iter(self.recent.items()))
            if (run_id in self._subscribers or self.trees.watched(run_id)) and spared < len(self.recent):
                self.recent.move_to_end(run_id)  # someone is streaming it: keep it a while more
                spared += 1
                continue
            del self.recent[run_id]
            self._recent_events -= len(view.events)
            for approval_id in view.approval_ids:
                self.approvals.pop(approval_id, None)
            self.trees.left(view)
            self.history.record(view, self.catalog.summary(view))  # with its late events (a settlement after the end)
            self.evicted += 1

    def _track_approval(self, view: RunView, event: RunEvent) -> None:
        match event:
            case ApprovalRequested():
                if event.approval_id not in self.approvals:
                    self.approvals[event.approval_id] = ApprovalView(event)
                    view.approval_ids.append(event.approval_id)
                view.pending_approvals += 1
            case ApprovalDecided():
                # The first decision wins, as in the policy gate; unsigned ones are the gate's to
                # ignore, and a timeout is shown as expired.
                approval = self.approvals.get(event.approval_id)
                if (
                    approval is None
                    or approval.status != ApprovalStatus.PENDING
                    or approval.request.call_id != event.call_id
                ):
                    return
                if not self.approval_verifies(event):
                    return
                approval.status = approval_outcome(event)
                approval.decided_by, approval.reason, approval.decided_ms = (
                    event.decided_by,
                    event.reason,
                    event.decided_ms,
                )
                view.pending_approvals = max(0, view.pending_approvals - 1)

    def approvals_of(self, tenant_id: str, status: ApprovalStatus | None) -> list[ApprovalView]:
        found = [
            a for a in self.approvals.values()
            if a.request.tenant_id == tenant_id and (status is None or a.status == status)
        ]  # fmt: skip
        return sorted(found, key=lambda a: (a.request.requested_ms, a.request.approval_id))

    def approval(self, tenant_id: str, approval_id: str) -> ApprovalView | None:
        found = self.approvals.get(approval_id)
        return found if found is not None and found.request.tenant_id == tenant_id else None

    # -- reading runs -----------------------------------------------------------------------------

    def get(self, tenant_id: str, run_id: str) -> RunView | None:
        """A run this gateway holds (live or recent); `find` also reads older ones back."""
        view = self.live.get(run_id)
        if view is None:
            view = self.recent.get(run_id)
            if view is not None:
                self.recent.move_to_end(run_id)
        # Another tenant's run is indistinguishable from a missing one.
        return view if view is not None and view.tenant_id == tenant_id else None

    async def find(self, tenant_id: str, run_id: str) -> RunView | None:
        """Any run: held, or read back from the journal by its index entry."""
        view = self.get(tenant_id, run_id)
        if view is not None or run_id in self.runs:
            return view
        if self.recall is not None:
            view = await self.recall.load(run_id)
        if view is None and self.archive is not None:
            view = await self._from_archive(tenant_id, run_id)
        return view if view is not None and view.tenant_id == tenant_id else None

    async def _from_archive(self, tenant_id: str, run_id: str) -> RunView | None:
        """A run whose events have left the journal (retention), read back from the audit warehouse."""
        assert self.archive is not None
        entries = await self.archive(tenant_id, run_id)
        first = entries[0] if entries else None
        if first is None or not isinstance(first.event, RunRequested) or run_id in self.runs:
            return self.runs.get(run_id)
        view = new_view(first.event, -1, first.offset, first.timestamp_ms)
        for entry in entries:
            self.apply_event(view, entry.offset, entry.timestamp_ms, entry.event)
        return self.hold(view) if view.settled else view

    def active_runs(self, tenant_id: str | None = None) -> int:
        # A halted run holds no model or tool capacity until it is resumed.
        return sum(1 for v in self.live.values() if not v.settled and (tenant_id is None or v.tenant_id == tenant_id))

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[Mailbox]:
        mailbox = Mailbox()
        self._subscribers.setdefault(run_id, set()).add(mailbox)
        try:
            yield mailbox
        finally:
            subscribers = self._subscribers.get(run_id)
            if subscribers is not None:
                subscribers.discard(mailbox)
                if not subscribers:
                    del self._subscribers[run_id]

    async def wait_for(self, run_id: str, timeout_s: float, *, terminal: bool) -> RunView | None:
        """Waits until the run is in the index (read-your-write) or, with `terminal`, has ended or
        halted."""
        async with self.subscribe(run_id) as mailbox:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while True:
                view = self.runs.get(run_id)
                if view is not None and (not terminal or view.settled):
                    return view
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return view
                await mailbox.take(remaining)


def new_view(event: RunRequested, partition: int, offset: int, timestamp_ms: int) -> RunView:
    return RunView(
        run_id=event.run_id,
        tenant_id=event.tenant_id,
        task=event.task,
        model=event.model,
        tools=list(event.tools),
        max_steps=event.max_steps,
        labels=dict(event.labels),
        request_hash=event.request_hash,
        created_ms=timestamp_ms,
        api_key_id=event.api_key_id,
        budget={"usd": event.budget_usd, "tokens": event.budget_tokens, "wall_s": event.budget_wall_s,
                "on_loop": event.on_loop or "halt"},
        cost=RunCost(event.run_id, event.tenant_id),
        partition=partition,
        first_offset=offset,
        parent_run_id=event.parent_run_id,
        parent_call_id=event.parent_call_id,
        depth=event.depth,
        workflow=event.workflow,
        workflow_version=event.workflow_version,
    )  # fmt: skip
