"""What the gateway shows of a run: its summary, its events as SSE messages, its approvals.

Plain data built from journal events (`apply_summary`); the projection (projection.py) decides
which runs are held and feeds them.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from agentstream.context.settings import ContextSettingsError, parse_settings
from agentstream.contract.resources import Approval, BudgetCaps, Compaction, Run, RunChild, RunContext, RunFlag
from agentstream.contract.vocab import ApprovalStatus, RunStatus
from agentstream.costs import RunCost
from agentstream.events import (
    TERMINAL_TYPES,
    ApprovalDecided,
    ApprovalRequested,
    ContextCompacted,
    EvalVerdict,
    LlmCallCompleted,
    ResumeRequested,
    RunCancelled,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunFlagged,
    RunHalted,
    RunStarted,
    ToolCallCompleted,
    ToolCallRequested,
)
from agentstream.ids import child_run_id
from agentstream.security.signing import TIMEOUT
from agentstream.subagents import SPAWN_AGENT


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
    status: ApprovalStatus = ApprovalStatus.PENDING
    decided_by: str = ""
    reason: str = ""
    decided_ms: int = 0

    def resource(self) -> Approval:
        r = self.request
        same = ("run_id", "tool", "tool_version", "tier", "arguments_json", "reason")  # named alike in both
        return Approval(
            **{name: getattr(r, name) for name in same},
            id=r.approval_id,
            status=self.status,
            requested_at_ms=r.requested_ms,
            expires_at_ms=r.expires_ms,
            decided_by=self.decided_by or None,
            # The deciding key's id alone (also the tail of `decided_by`): who to ask about it.
            decided_by_key_id=self.decided_by.rpartition(":key/")[2] if ":key/" in self.decided_by else None,
            decision_reason=self.reason or None,
            decided_at_ms=self.decided_ms or None,
        )


# The children a run resource lists; the tree (`GET /v1/runs/{id}/tree`) shows more.
CHILDREN_SHOWN = 100


@dataclass(slots=True)
class ChildLink:
    """A child run as its parent knows it: the parent's call that started it, its latest status."""

    call_id: str
    status: RunStatus = RunStatus.QUEUED


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
    status: RunStatus = RunStatus.QUEUED
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
    # The context settings pinned at the start (RunStarted), with the compactions so far.
    context: dict[str, Any] | None = None
    cost: RunCost | None = None
    events: list[StoredEvent] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    # Where the run lies in the journal (its partition, first and latest offsets, the latest's
    # append time): what its index entry records, so it can be read again once it leaves memory.
    partition: int = -1
    first_offset: int = -1
    last_offset: int = -1
    last_ms: int = 0
    approval_ids: list[str] = field(default_factory=list)
    # For a run read back from history that a resume made live again: the resume's offset, where
    # a restarted gateway must read from to see it live (its start is older than any checkpoint).
    revived_at: int = -1
    # Its place in a run tree (RunRequested v8) and the children it started (gateway/trees.py).
    parent_run_id: str = ""
    parent_call_id: str = ""
    depth: int = 0
    workflow: str = ""
    workflow_version: str = ""
    children: dict[str, ChildLink] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def public_status(self) -> RunStatus:
        # Paused on a person: no model call is made until every approval of the step is decided.
        return RunStatus.AWAITING_APPROVAL if self.pending_approvals and not self.settled else self.status

    @property
    def settled(self) -> bool:
        """Ended, or waiting for someone: nothing will happen until a client acts."""
        return self.status.settled

    def resource(self) -> Run:
        same = ("task", "model", "tools", "max_steps", "labels", "steps")  # named alike in both
        return Run(
            **{name: getattr(self, name) for name in same},
            id=self.run_id,
            status=self.public_status,
            reason=self.reason or None,
            final_answer=self.final_answer or None,
            resumable=self.status == RunStatus.HALTED and self.resumable,
            flags=[RunFlag(**flag) for flag in self.flags],
            budget=BudgetCaps(**self.budget),
            cost_usd=round(self.cost.usd, 9) if self.cost is not None else 0.0,
            context=None if self.context is None else RunContext(**self.context),
            created_at_ms=self.created_ms,
            updated_at_ms=self.updated_ms,
            events_url=f"/v1/runs/{self.run_id}/events",
            parent_run_id=self.parent_run_id or None,
            depth=self.depth,
            workflow=self.workflow or None,
            workflow_version=self.workflow_version or None,
            children=[RunChild(id=c, status=link.status) for c, link in self.ordered_children()[:CHILDREN_SHOWN]],
            children_count=len(self.children),
        )

    def ordered_children(self) -> list[tuple[str, ChildLink]]:
        """In the order the parent asked for them: its call ids sort by step, then call."""
        return sorted(self.children.items(), key=lambda item: (item[1].call_id, item[0]))


def approval_outcome(event: ApprovalDecided) -> ApprovalStatus:
    """What a (verified, first) decision makes of an approval: a timeout's denial shows as expired."""
    if event.approved:
        return ApprovalStatus.APPROVED
    return ApprovalStatus.EXPIRED if event.decided_by == TIMEOUT else ApprovalStatus.DENIED


def _pinned_context(context_json: str) -> dict[str, Any] | None:
    try:
        pinned = parse_settings(context_json)  # "": off, as runs started before the field are
    except ContextSettingsError:
        return None  # the orchestrator writes only what it parsed; nothing to show otherwise
    return {**asdict(pinned), "exclude_tools": list(pinned.exclude_tools), "compactions": 0, "last_compaction": None}


def _summarise(view: RunView, event: RunEvent) -> None:
    match event:
        case RunStarted():
            view.status = RunStatus.RUNNING
            view.context = _pinned_context(event.context_json)
        case ContextCompacted() if view.context is not None:
            view.context["compactions"] += 1
            view.context["last_compaction"] = Compaction(
                step=event.step, kind=event.kind, tokens_before=event.tokens_before, tokens_after=event.tokens_after
            )
        case RunFlagged():
            view.flags.append({"kind": event.kind, "step": event.step, "reason": event.reason, "count": event.count})
        case EvalVerdict():  # a failed step check: kind "check:<name>" (agentstream.evaluation)
            check = f"check:{event.check_name}"
            view.flags.append({"kind": check, "step": event.step, "reason": event.reason, "count": 1})
        case LlmCallCompleted():
            view.steps = max(view.steps, event.step)
        case RunCompleted():
            view.status, view.reason, view.final_answer, view.steps = (
                RunStatus.COMPLETED,
                event.reason,
                event.final_answer,
                event.steps,
            )
        case RunHalted():
            view.status, view.reason, view.steps = RunStatus.HALTED, f"{event.limit}: {event.reason}", event.steps
            view.halts, view.resumable = event.halt, event.resumable
        case ResumeRequested() if view.status == RunStatus.HALTED and event.halt == view.halts:
            view.status, view.reason = RunStatus.RUNNING, ""
            for name, added in (("usd", event.add_usd), ("tokens", event.add_tokens), ("wall_s", event.add_wall_s)):
                if view.budget.get(name):
                    view.budget[name] += added
        case RunFailed():
            view.status, view.reason, view.steps = RunStatus.FAILED, f"{event.error_type}: {event.reason}", event.steps
        case RunCancelled():
            view.status, view.reason, view.steps = RunStatus.CANCELLED, event.reason, event.steps
        case ToolCallRequested() | ToolCallCompleted() if event.tool == SPAWN_AGENT:
            # The parent's own record of a child: how a parent read back from the journal (or
            # after a restart) knows its children, whose RunRequested lie under their own keys.
            view.children.setdefault(child_run_id(event.call_id), ChildLink(event.call_id))

    if event.type_name in TERMINAL_TYPES:
        view.seen_ids.clear()  # nothing after the end changes the run; keep memory small
