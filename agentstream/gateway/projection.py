"""The gateway's view of runs: a projection of the journal, rebuilt by reading it from the start.

One reader tails every journal partition (outside any consumer group: each gateway instance needs
every run) and keeps, per run, a summary and its events in journal order. Subscribers (SSE
streams, waiting requests) get each new event through a mailbox. An event's SSE id is its
journal offset: a run lives in one partition, so its offsets only grow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from agentstream.codec import AvroCodec, DecodeError
from agentstream.config import Settings
from agentstream.costs import RunCost
from agentstream.events import (
    TERMINAL_TYPES,
    ApprovalDecided,
    ApprovalRequested,
    BudgetSettled,
    LlmCallCompleted,
    ResumeRequested,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunFlagged,
    RunHalted,
    RunRequested,
    RunStarted,
)
from agentstream.kafka.consumer import consumer_config, fetch_batch, watermarks
from agentstream.security.signing import TIMEOUT
from agentstream.topics import JOURNAL, load_topics


@dataclass(frozen=True, slots=True)
class StoredEvent:
    offset: int
    timestamp_ms: int
    event: RunEvent
    # The event as one SSE message, encoded once: a run with a thousand subscribers would
    # otherwise serialise every event a thousand times.
    sse: bytes


# Bearer material in the journal, for the executor only: an authorization's capability and its
# credential delegation. A client watching its run learns that the call was authorized, by whom and
# until when, but never holds a token it could present to anything.
WITHHELD_FIELDS = ("capability", "delegation")
WITHHELD = "[withheld]"


def sse_message(offset: int, timestamp_ms: int, event: RunEvent) -> bytes:
    record = event.to_record()
    for name in WITHHELD_FIELDS:
        if record.get(name):
            record[name] = WITHHELD
    data = orjson.dumps({"type": event.type_name, "offset": offset, "timestamp_ms": timestamp_ms, **record})
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (offset, event.type_name.encode(), data)


class Mailbox:
    """The events one subscriber has not taken yet.

    Not an `asyncio.Queue`: reading a queue under a timeout (`wait_for(queue.get(), t)`) creates a
    Task per read in Python 3.11, and with a thousand subscribers every journal event meant a
    thousand Tasks. Here a read that must wait costs one future and one timer, and everything that
    arrived meanwhile (a whole fetched batch) is taken at once, so it goes out in one write."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[StoredEvent] = []
        self._waiter: asyncio.Future[None] | None = None

    def put(self, stored: StoredEvent) -> None:
        self._items.append(stored)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self, timeout_s: float) -> list[StoredEvent]:
        """Everything ready, waiting up to `timeout_s` for the first; empty if nothing came."""
        if not self._items:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout_s, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        items, self._items = self._items, []
        return items


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass
class ApprovalView:
    """One approval request and its outcome, as the approvals API shows it."""

    request: ApprovalRequested
    status: str = "pending"  # pending, approved, denied, expired
    decided_by: str = ""
    reason: str = ""
    decided_ms: int = 0

    def resource(self) -> dict[str, Any]:
        r = self.request
        return {
            "id": r.approval_id,
            "run_id": r.run_id,
            "status": self.status,
            "tool": r.tool,
            "tool_version": r.tool_version,
            "tier": r.tier,
            "arguments_json": r.arguments_json,
            "reason": r.reason,
            "requested_at_ms": r.requested_ms,
            "expires_at_ms": r.expires_ms,
            "decided_by": self.decided_by or None,
            # The deciding key's id alone (also the tail of `decided_by`): who to ask about it.
            "decided_by_key_id": self.decided_by.rpartition(":key/")[2] if ":key/" in self.decided_by else None,
            "decision_reason": self.reason or None,
            "decided_at_ms": self.decided_ms or None,
        }


@dataclass
class RunView:
    run_id: str
    tenant_id: str
    task: str
    model: str
    tools: list[str]
    max_steps: int
    labels: dict[str, str]
    request_hash: str
    created_ms: int
    api_key_id: str = ""  # the key that created the run: it may not approve the run's calls
    status: str = "queued"
    updated_ms: int = 0
    steps: int = 0
    reason: str = ""
    final_answer: str = ""
    halts: int = 0
    resumable: bool = False
    pending_approvals: int = 0
    # Marks for a person's review (RunFlagged): the run went on, but something in it looked wrong.
    flags: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    cost: RunCost | None = None
    events: list[StoredEvent] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)

    @property
    def terminal(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    @property
    def public_status(self) -> str:
        # Paused on a person: no model call is made until every approval of the step is decided.
        return "awaiting_approval" if self.pending_approvals and not self.settled else self.status

    @property
    def settled(self) -> bool:
        """Ended, or waiting for someone: nothing will happen until a client acts."""
        return self.terminal or self.status == "halted"

    def resource(self) -> dict[str, Any]:
        return {
            "id": self.run_id,
            "status": self.public_status,
            "task": self.task,
            "model": self.model,
            "tools": self.tools,
            "max_steps": self.max_steps,
            "labels": self.labels,
            "steps": self.steps,
            "reason": self.reason or None,
            "final_answer": self.final_answer or None,
            "resumable": self.status == "halted" and self.resumable,
            "flags": self.flags,
            "budget": self.budget,
            "cost_usd": round(self.cost.usd, 9) if self.cost is not None else 0.0,
            "created_at_ms": self.created_ms,
            "updated_at_ms": self.updated_ms,
            "events_url": f"/v1/runs/{self.run_id}/events",
        }


class RunIndex:
    def __init__(
        self,
        settings: Settings,
        approval_verifies: Callable[[ApprovalDecided], bool] | None = None,
        record_problem: Callable[[Message], str | None] | None = None,
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
        self.runs: dict[str, RunView] = {}
        self.approvals: dict[str, ApprovalView] = {}
        self._subscribers: dict[str, set[Mailbox]] = {}
        self._consumer: Consumer | None = None
        self._caught_up = asyncio.Event()
        self.dead_letters = 0

    # -- reading the journal ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        consumer = Consumer(
            consumer_config(
                self.settings.bootstrap_servers, self.settings.kafka_extra, {"group.id": "agentstream-gateway"}
            )
        )
        self._consumer = consumer
        md = await asyncio.to_thread(consumer.list_topics, self.topic, 10)
        partitions = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in md.topics[self.topic].partitions]
        ends = {}
        for tp in partitions:
            ends[tp.partition] = (await asyncio.to_thread(watermarks, consumer, tp))[1]
        consumer.assign(partitions)
        pending = {p for p, end in ends.items() if end > 0}
        if not pending:
            self._caught_up.set()
        try:
            while not stop.is_set():
                msgs = await asyncio.to_thread(fetch_batch, consumer, 2000, 0.05)
                for msg in msgs:
                    if msg.error() is not None:
                        continue
                    partition, offset = msg.partition() or 0, msg.offset() or 0
                    if partition in pending and offset + 1 >= ends[partition]:
                        pending.discard(partition)
                    if self.record_problem is not None and self.record_problem(msg) is not None:
                        self.refused += 1
                        continue
                    self._apply(offset, msg.timestamp()[1], msg.value())
                if pending and not msgs:
                    positions = await asyncio.to_thread(
                        consumer.position, [TopicPartition(self.topic, p) for p in pending]
                    )
                    pending -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
                if not pending:
                    self._caught_up.set()
        finally:
            await asyncio.to_thread(consumer.close)

    async def ready(self, timeout_s: float = 60.0) -> None:
        await asyncio.wait_for(self._caught_up.wait(), timeout_s)

    def _apply(self, offset: int, timestamp_ms: int, value: bytes | None) -> None:
        try:
            event = self.codec.decode(value)
        except DecodeError:
            self.dead_letters += 1  # the processors dead-letter it; the gateway just skips it
            return
        if not isinstance(event, RunEvent):
            return
        view = self.runs.get(event.run_id)
        if view is None:
            if not isinstance(event, RunRequested):
                return
            view = RunView(
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
            )  # fmt: skip
            self.runs[event.run_id] = view
        if isinstance(event, BudgetSettled) and view.cost is not None:
            # A run's last call is often settled after the run ended: its cost counts all the same.
            view.cost.add(event, timestamp_ms)
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

    def _track_approval(self, view: RunView, event: RunEvent) -> None:
        match event:
            case ApprovalRequested():
                self.approvals.setdefault(event.approval_id, ApprovalView(event))
                view.pending_approvals += 1
            case ApprovalDecided():
                # The first decision wins, as in the policy gate; unsigned ones are the gate's to
                # ignore, and a timeout is shown as expired.
                approval = self.approvals.get(event.approval_id)
                if approval is None or approval.status != "pending" or approval.request.call_id != event.call_id:
                    return
                if not self.approval_verifies(event):
                    return
                approval.status = (
                    "approved" if event.approved else "expired" if event.decided_by == TIMEOUT else "denied"
                )
                approval.decided_by, approval.reason, approval.decided_ms = (
                    event.decided_by,
                    event.reason,
                    event.decided_ms,
                )
                view.pending_approvals = max(0, view.pending_approvals - 1)

    def approvals_of(self, tenant_id: str, status: str | None) -> list[ApprovalView]:
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
        view = self.runs.get(run_id)
        # Another tenant's run is indistinguishable from a missing one.
        return view if view is not None and view.tenant_id == tenant_id else None

    def active_runs(self, tenant_id: str | None = None) -> int:
        # A halted run holds no model or tool capacity until it is resumed.
        return sum(1 for v in self.runs.values() if not v.settled and (tenant_id is None or v.tenant_id == tenant_id))

    def list(self, tenant_id: str, status: str | None, after: tuple[int, str] | None, limit: int) -> list[RunView]:
        views = [
            v for v in self.runs.values() if v.tenant_id == tenant_id and (status is None or v.public_status == status)
        ]
        views.sort(key=lambda v: (v.created_ms, v.run_id))
        if after is not None:
            views = [v for v in views if (v.created_ms, v.run_id) > after]
        return views[:limit]

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


def _summarise(view: RunView, event: RunEvent) -> None:
    match event:
        case RunStarted():
            view.status = "running"
        case RunFlagged():
            view.flags.append({"kind": event.kind, "step": event.step, "reason": event.reason, "count": event.count})
        case LlmCallCompleted():
            view.steps = max(view.steps, event.step)
        case RunCompleted():
            view.status, view.reason, view.final_answer, view.steps = (
                "completed",
                event.reason,
                event.final_answer,
                event.steps,
            )
        case RunHalted():
            view.status, view.reason, view.steps = "halted", f"{event.limit}: {event.reason}", event.steps
            view.halts, view.resumable = event.halt, event.resumable
        case ResumeRequested() if view.status == "halted" and event.halt == view.halts:
            view.status, view.reason = "running", ""
            for name, added in (("usd", event.add_usd), ("tokens", event.add_tokens), ("wall_s", event.add_wall_s)):
                if view.budget.get(name):
                    view.budget[name] += added
        case RunFailed():
            view.status, view.reason, view.steps = "failed", f"{event.error_type}: {event.reason}", event.steps
        case RunCancelled():
            view.status, view.reason, view.steps = "cancelled", event.reason, event.steps
    if event.type_name in TERMINAL_TYPES:
        view.seen_ids.clear()  # nothing after the end changes the run; keep memory small
