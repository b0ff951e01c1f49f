"""The HTTP client SDK for the run API: typed runs, typed errors, and an SSE event stream that
survives dropped connections by resuming from the last event it delivered.

Requests are built with the contract's request models and answers parsed into its resources
(agentstream.contract), the same models the gateway validates and answers with."""

from __future__ import annotations

import asyncio
import builtins
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ValidationError

from agentstream.client.journal import RunBudget
from agentstream.client.trees import TreeEventMessage, follow_tree
from agentstream.contract.queries import ListRunsQuery, first_problem
from agentstream.contract.requests import AuditQuery, Budget, CancelRun, CreateRun, DecideApproval, ResumeRun
from agentstream.contract.resources import (
    Approval,
    ApprovalPage,
    AuditRows,
    CostReport,
    Error,
    MemoryExport,
    MemoryFile,
    MemoryPage,
    Run,
    RunCost,
    RunPage,
    RunTree,
)
from agentstream.contract.vocab import ApprovalDecision, ApprovalStatus, CostGroup, RunStatus
from agentstream.contract.workflows import WorkflowDetail, WorkflowPage, WorkflowVersion
from agentstream.events import EVENT_TYPES, TERMINAL_TYPES, Event
from agentstream.sse import parse_sse

R = TypeVar("R", bound=BaseModel)

DEFAULT_CANCEL_REASON = "cancelled by the client"


class ApiError(Exception):
    """A 4xx/5xx from the API, carrying its `{"error": {type, message, field}}` body."""

    def __init__(
        self, status: int, type: str, message: str, field: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message
        self.field = field
        self.retry_after = retry_after


class InvalidRequest(ApiError):
    """400, 413 or 422: the request was refused as it stands; `field` names what to fix. A request
    the contract's models refuse is refused here, before it is sent, the same way (422)."""


class Unauthenticated(ApiError):
    """401: no API key, or one the gateway does not know."""


class NotFound(ApiError):
    """404: no such run for this tenant (another tenant's run looks the same)."""


class Conflict(ApiError):
    """409: the run already ended, is not resumable, or the Idempotency-Key was reused differently."""


class RateLimited(ApiError):
    """429: the tenant's rate or concurrency quota; `retry_after` says when to try again."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
}


@dataclass(frozen=True)
class RunEventMessage:
    """One SSE message: `id` is the event's journal offset, `data` its JSON fields."""

    id: int
    type: str
    data: dict[str, Any]

    @property
    def timestamp_ms(self) -> int:
        return int(self.data.get("timestamp_ms", 0))

    @property
    def event(self) -> Event:
        """The typed event. Only the dataclass's own fields are taken, so the envelope (`type`,
        `offset`, `timestamp_ms`) and fields a newer server adds are ignored."""
        cls = EVENT_TYPES[self.type]
        return cls(**{f.name: self.data[f.name] for f in fields(cls) if f.name in self.data})


class RunsClient:
    """`async with RunsClient("http://127.0.0.1:8080", key) as c: run = await c.create("task")`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_reconnects: int = 8,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._timeout_s = timeout_s
        self._max_reconnects = max_reconnects
        self._max_backoff_s = max_backoff_s
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
            transport=transport,
        )

    async def __aenter__(self) -> RunsClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- runs ------------------------------------------------------------------------------------

    async def create(
        self,
        task: str,
        *,
        idempotency_key: str | None = None,
        model: str = "scripted",
        tools: list[str] | None = None,
        max_steps: int = 20,
        labels: dict[str, str] | None = None,
        wait_s: float | None = None,
        budget: RunBudget | None = None,
        context: dict[str, Any] | None = None,
        workflow: str | None = None,
        workflow_version: str | None = None,
    ) -> Run:
        """Creates the run (or returns the one this key already made); with `wait_s`, waits up to
        that long for it to end. Retrying with the same `idempotency_key` is always safe.
        `context`: context settings over the tenant's defaults (`{"mode": "on"}`; see ContextSettings).
        `workflow` (and `workflow_version`, default its latest): a graph run of a registered workflow."""
        caps = None
        if budget is not None:
            caps = _request(Budget, usd=budget.usd, tokens=budget.tokens, wall_s=budget.wall_s, on_loop=budget.on_loop)
        body = _request(CreateRun, task=task, model=model, tools=tools or [], max_steps=max_steps,
                        labels=labels or {}, budget=caps, context=context, workflow=workflow,
                        workflow_version=workflow_version)  # fmt: skip
        params = {"wait": f"{wait_s:g}"} if wait_s else None
        # The server holds a waiting request open for up to wait_s: the read timeout must outlast it.
        timeout = self._timeout_s + (wait_s or 0.0)
        response = await self._http.post(
            "/v1/runs",
            # exclude_unset: of `context`, only the fields given, so the rest stay the tenant's defaults
            content=body.model_dump_json(exclude_unset=True),
            params=params,
            headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex, "Content-Type": "application/json"},
            timeout=timeout,
        )
        return _parse(Run, response)

    async def get(self, run_id: str) -> Run:
        return _parse(Run, await self._http.get(f"/v1/runs/{run_id}"))

    async def tree(self, run_id: str) -> RunTree:
        """The run and the runs it started, nested (bounded: see `RunTree.truncated`)."""
        return _parse(RunTree, await self._http.get(f"/v1/runs/{run_id}/tree"))

    def tree_events(self, run_id: str, *, last_event_id: str | None = None) -> AsyncIterator[TreeEventMessage]:
        """The events of the run and of every run it started (each message's `run_id` says whose),
        after `last_event_id`, then live, until every run of the tree has settled. Reconnects
        after a dropped connection from the last message's id: each event is yielded once."""
        return follow_tree(self._http, run_id, last_event_id, max_reconnects=self._max_reconnects,
                           max_backoff_s=self._max_backoff_s, error=_error)  # fmt: skip

    async def list_page(
        self,
        status: RunStatus | str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        *,
        tool: str | None = None,
        flagged: bool | None = None,
        min_cost_usd: float | None = None,
        max_cost_usd: float | None = None,
        id_prefix: str | None = None,
        order: str = "oldest",
    ) -> RunPage:
        """One page of the tenant's runs (every run on record), filtered as the console filters:
        by status, a tool it was given, flagged or not, a cost range (USD, inclusive) and a run id
        prefix; `order` "oldest" or "newest". Its `next_cursor` (None on the last) fetches the next."""
        fields = {"status": None if status is None else str(status), "cursor": cursor, "limit": limit, "tool": tool,
                  "flagged": flagged, "min_cost_usd": min_cost_usd, "max_cost_usd": max_cost_usd, "q": id_prefix,
                  "order": order}  # fmt: skip
        query = _request(ListRunsQuery, **{k: v for k, v in fields.items() if v is not None})
        params = {k: str(v).lower() if isinstance(v, bool) else str(v)
                  for k, v in query.model_dump(exclude_none=True).items()}  # fmt: skip
        return _parse(RunPage, await self._http.get("/v1/runs", params=params))

    async def list(self, status: RunStatus | str | None = None, limit: int = 50, **filters: Any) -> AsyncIterator[Run]:
        """Every run of the tenant that the filters select (those of `list_page`), oldest first
        unless `order="newest"`; `limit` is the page size, pages are fetched lazily."""
        cursor: str | None = None
        while True:
            page = await self.list_page(status, cursor, limit, **filters)
            for run in page.data:
                yield run
            if (cursor := page.next_cursor) is None:
                return

    async def cancel(self, run_id: str, reason: str = DEFAULT_CANCEL_REASON) -> Run:
        """Requests cancellation; the returned run is as it was when the request was accepted."""
        return await self._post(Run, f"/v1/runs/{run_id}/cancel", _request(CancelRun, reason=reason))

    async def resume(
        self,
        run_id: str,
        add_steps: int = 10,
        reason: str = "resumed by the client",
        raise_budget: RunBudget | None = None,
    ) -> Run:
        """Resumes a run halted at a resumable limit, raising its step cap by `add_steps` and its
        budget caps by `raise_budget`; the returned run is as it was when the resume was accepted
        (still `halted`)."""
        more = raise_budget or RunBudget()
        body = _request(ResumeRun, add_steps=add_steps, reason=reason, add_usd=more.usd, add_tokens=more.tokens,
                        add_wall_s=more.wall_s)  # fmt: skip
        return await self._post(Run, f"/v1/runs/{run_id}/resume", body)

    async def cost(self, run_id: str) -> RunCost:
        """What the run has cost so far: dollars, tokens, and per tool and model."""
        return _parse(RunCost, await self._http.get(f"/v1/runs/{run_id}/cost"))

    async def costs(self, group_by: CostGroup | str = CostGroup.RUN, since_ms: int = 0) -> CostReport:
        """The tenant's spend grouped by run, tool or model."""
        params: dict[str, str | int] = {"group_by": str(group_by), "since_ms": since_ms}
        return _parse(CostReport, await self._http.get("/v1/costs", params=params))

    # -- approvals -------------------------------------------------------------------------------

    async def approvals(self, status: ApprovalStatus | str | None = None) -> builtins.list[Approval]:
        """The tenant's approval requests (`pending`, `approved`, `denied`, `expired`; all without)."""
        params = {"status": str(status)} if status is not None else None
        return _parse(ApprovalPage, await self._http.get("/v1/approvals", params=params)).data

    async def decide(self, approval_id: str, approve: bool, reason: str = "") -> Approval:
        """Approves or denies one pending request; the decider on record is this client's API key."""
        decision = ApprovalDecision.APPROVE if approve else ApprovalDecision.DENY
        body = _request(DecideApproval, decision=decision, reason=reason)
        return await self._post(Approval, f"/v1/approvals/{approval_id}", body)

    # -- audit -----------------------------------------------------------------------------------

    async def audit_query(self, sql: str, max_rows: int = 1000) -> AuditRows:
        """SQL over the tenant's own rows of the audit warehouse (needs a key with `audit:read`)."""
        return await self._post(AuditRows, "/v1/audit/query", _request(AuditQuery, sql=sql, max_rows=max_rows))

    # -- memory ----------------------------------------------------------------------------------

    async def memory(self) -> builtins.list[MemoryFile]:
        """The tenant's long-term memory files by path: size, version, last change (no contents)."""
        return _parse(MemoryPage, await self._http.get("/v1/memory")).data

    async def export_memory(self) -> MemoryExport:
        """The tenant's memory files with their contents (`files`: path -> content); a file whose
        content could not be read is in `errors`, never empty. Needs a key with `memory:read`."""
        return _parse(MemoryExport, await self._http.get("/v1/memory/export"))

    # -- workflows -------------------------------------------------------------------------------

    async def register_workflow(self, definition: dict[str, Any]) -> WorkflowVersion:
        """Registers a workflow definition as the tenant's next version of its name (the latest,
        unchanged, when it is the same definition); an invalid one raises InvalidRequest (422) naming the
        rule it breaks in its message."""
        headers = {"Content-Type": "application/json"}
        response = await self._http.post("/v1/workflows", content=orjson.dumps(definition), headers=headers)
        return _parse(WorkflowVersion, response)

    async def workflows(self) -> builtins.list[WorkflowVersion]:
        """The latest version of each of the tenant's workflows."""
        return _parse(WorkflowPage, await self._http.get("/v1/workflows")).data

    async def workflow(self, name: str, version: str = "") -> WorkflowDetail:
        """One workflow: its latest version (or `version`) and every version's number."""
        params = {"version": version} if version else None
        return _parse(WorkflowDetail, await self._http.get(f"/v1/workflows/{name}", params=params))

    async def _post(self, answer: type[R], path: str, body: BaseModel) -> R:
        headers = {"Content-Type": "application/json"}
        return _parse(answer, await self._http.post(path, content=body.model_dump_json(), headers=headers))

    # -- events ----------------------------------------------------------------------------------

    async def events(self, run_id: str, *, last_event_id: str | None = None) -> AsyncIterator[RunEventMessage]:
        """The run's events after `last_event_id` (all of them without it), then live, ending with
        the terminal event, or with RunHalted when the run halts (the server closes the stream
        there: resume the run, then call again with the halt's id). A dropped connection is reopened
        with Last-Event-ID, so each event is yielded exactly once; it gives up after
        `max_reconnects` attempts in a row without progress."""
        last = int(last_event_id) if last_event_id not in (None, "") else None
        failures, halted = 0, False
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                async with self._http.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise _error(response)
                    async for message in _run_events(response):
                        if last is not None and message.id <= last:
                            continue  # the server resumes after Last-Event-ID; this guards a replay anyway
                        last, failures = message.id, 0
                        # Events may follow the halt (a late check's verdict, a settlement); the run
                        # stays halted until a resume is asked for.
                        halted = message.type == "RunHalted" or (halted and message.type != "ResumeRequested")
                        yield message
                        if message.type in TERMINAL_TYPES:
                            return
                    if halted:
                        return  # closed by the server at the halt: nothing more until a resume
                problem: Exception = httpx.RemoteProtocolError("the event stream ended before the run did")
            except httpx.TransportError as exc:  # read/protocol errors, timeouts, a gateway restarting
                problem = exc
            failures += 1
            if failures > self._max_reconnects:
                raise problem
            await asyncio.sleep(min(self._max_backoff_s, 0.05 * 2**failures))


async def _run_events(response: httpx.Response) -> AsyncIterator[RunEventMessage]:
    # A message cut off before its blank line is dropped by the parser, not half-read; the stream
    # is then resumed after the last whole one.
    async for message in parse_sse(response.aiter_bytes()):
        if message.id is None or not message.id.isdigit():
            continue
        payload = orjson.loads(message.data)
        yield RunEventMessage(int(message.id), message.event or payload.get("type", ""), payload)


def _request(kind: type[R], /, **fields: Any) -> R:
    """A request body by the contract, refused here as the gateway would refuse it (422)."""
    try:
        return kind.model_validate(fields)
    except ValidationError as exc:
        where, message = first_problem(exc)
        raise InvalidRequest(422, "invalid_field", f"{where}: {message}", where) from None


def _parse(model: type[R], response: httpx.Response) -> R:
    if response.status_code >= 400:
        raise _error(response)
    return model.model_validate_json(response.content)


def _error(response: httpx.Response) -> ApiError:
    cls = _BY_STATUS.get(response.status_code, ApiError)
    retry_after = _retry_after(response.headers.get("retry-after"))
    try:
        error = Error.model_validate_json(response.content).error
    except ValidationError:  # not the API's error shape (a proxy's error page, say)
        message = response.reason_phrase or "request failed"
        return cls(response.status_code, "http_error", message, None, retry_after)
    return cls(response.status_code, error.type, error.message, error.field, retry_after)


def _retry_after(raw: str | None) -> float | None:
    # The gateway sends delta-seconds; an HTTP-date (also legal) is left to the caller as None.
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None
