"""The run API (ASGI): create, read, list, cancel and stream runs, scoped to the caller's tenant."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agentstream.client.journal import JournalClient, RunBudget, RunRequest
from agentstream.console.serve import console_routes
from agentstream.contract.openapi import openapi_json
from agentstream.contract.queries import (
    IDEMPOTENCY_KEY,
    CreateRunQuery,
    ListApprovalsQuery,
    ListCostsQuery,
    ListRunsQuery,
    Query,
    StreamRunEventsQuery,
    first_problem,
)
from agentstream.contract.requests import (
    AuditQuery,
    CancelRun,
    CreateRun,
    DecideApproval,
    RegisterTool,
    ResumeRun,
    SwitchTool,
)
from agentstream.contract.resources import Health
from agentstream.contract.routes import OPERATIONS, Operation
from agentstream.contract.vocab import RunStatus
from agentstream.gateway.approvals_api import ApprovalsApi
from agentstream.gateway.audit_api import AuditApi
from agentstream.gateway.console_api import console_handlers, list_runs
from agentstream.gateway.costs_api import run_cost, tenant_costs
from agentstream.gateway.errors import ApiError, model_response, not_found
from agentstream.gateway.memory_api import MemoryApi, memory_handlers
from agentstream.gateway.projection import RunIndex, RunView
from agentstream.gateway.streams import run_events
from agentstream.gateway.tools_api import ToolsApi
from agentstream.gateway.tree_stream import parse_position, tree_events
from agentstream.gateway.trees import run_tree
from agentstream.gateway.workflows_api import check_run_workflow, workflow_handlers
from agentstream.tenancy.scopes import has_scope

M = TypeVar("M", bound=BaseModel)
Q = TypeVar("Q", bound=Query)
log = logging.getLogger(__name__)


class Caller(Protocol):
    @property
    def tenant_id(self) -> str: ...

    @property
    def max_active_runs(self) -> int: ...

    @property
    def key_id(self) -> str: ...

    @property
    def scopes(self) -> frozenset[str]: ...


class Authenticator(Protocol):
    def authenticate(self, authorization: str | None) -> Caller | None: ...

    async def authenticate_fresh(self, authorization: str | None) -> Caller | None:
        """`authenticate`, after reading the newest keys when this one is unknown yet."""
        ...


class RateCheck(Protocol):
    def retry_after(self, caller: Caller) -> float:
        """0 when the caller may proceed, else seconds until it may."""
        ...


@dataclass(frozen=True)
class GatewayConfig:
    max_body_bytes: int = 1 << 20
    platform_max_active_runs: int = 10_000  # admission control: past this, new runs are refused
    max_wait_s: float = 60.0
    read_your_write_s: float = 10.0
    keepalive_s: float = 15.0
    auth_recheck_s: float = 5.0  # an open event stream re-checks its key this often (revocation bound)


Handler = Callable[[Request, Caller], Awaitable[Response]]


@dataclass(frozen=True)
class _Public:
    """The caller of a public operation: no tenant, no scope."""

    tenant_id: str = ""
    max_active_runs: int = 0
    key_id: str = ""
    scopes: frozenset[str] = frozenset()


_NOBODY = _Public()


class Gateway:
    def __init__(
        self,
        index: RunIndex,
        journal: JournalClient,
        auth: Authenticator,
        rates: RateCheck,
        config: GatewayConfig | None = None,
        approvals: ApprovalsApi | None = None,
        tools: ToolsApi | None = None,
        audit: AuditApi | None = None,
        memory: MemoryApi | None = None,
    ) -> None:
        self.index = index
        self.memory = memory
        self.audit = audit
        self.approvals = approvals
        self.tools = tools
        self.journal = journal
        self.auth = auth
        self.rates = rates
        self.config = config or GatewayConfig()

    def handlers(self) -> dict[str, Handler]:
        """The handler of each operation of the contract's table (agentstream.contract.routes)."""
        return {
            "createRun": self.create_run, "listRuns": self.list_runs, "getRun": self.get_run,
            "cancelRun": self.cancel_run, "resumeRun": self.resume_run, "streamRunEvents": self.stream_events,
            "getRunCost": self.get_run_cost, "listCosts": self.list_costs, "listApprovals": self.list_approvals,
            "getApproval": self.get_approval, "decideApproval": self.decide_approval, "listTools": self.list_tools,
            "registerTool": self.register_tool, "getTool": self.get_tool, "disableTool": self.disable_tool,
            "enableTool": self.enable_tool, "queryAudit": self.query_audit, "health": self.health,
            "getRunTree": self.get_run_tree,
            **memory_handlers(self.memory),
            **console_handlers(self.index, self.memory, _query),  # cost series, one event whole: console_api.py
            **workflow_handlers(self.tools, self._read_json),  # the workflow registry: workflows_api.py
        }  # fmt: skip

    def app(self) -> Starlette:
        handlers = self.handlers()
        routes = [Route(op.path, self._guard(op, handlers[op.operation_id]), methods=[op.method]) for op in OPERATIONS]
        document = openapi_json(self.config.max_wait_s)
        routes.append(Route("/openapi.json", lambda _r: Response(document, media_type="application/json")))
        routes.extend(console_routes())  # the web console's static pages (agentstream/console)
        # Unknown paths and methods get the same machine-readable error body as every other refusal.
        return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _internal_error})

    def _guard(self, op: Operation, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Authentication, the key's scope for the operation (agentstream.tenancy.scopes), the
        tenant's rate, and the operation's query parameters (no others). A public operation
        (no scope: the health check) is answered as is."""
        allowed, scope = op.query_names, op.scope

        async def endpoint(request: Request) -> Response:
            if scope is None:
                return await handler(request, _NOBODY)

            try:
                header = request.headers.get("authorization")
                # A key issued a moment ago may not have reached this gateway's directory yet.
                caller = self.auth.authenticate(header) or await self.auth.authenticate_fresh(header)
                if caller is None:
                    raise ApiError(401, "unauthenticated", "a valid API key is required: Authorization: Bearer <key>",
                                   headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
                if not has_scope(caller.scopes, scope):
                    raise ApiError(403, "missing_scope", f"this API key lacks the scope {scope}, which "
                                   f"{request.method} {request.url.path} needs (its scopes: "
                                   f"{', '.join(sorted(caller.scopes)) or 'none'})")  # fmt: skip
                wait = self.rates.retry_after(caller)
                if wait > 0:
                    raise ApiError(429, "rate_limited", "too many requests for this tenant",
                                   headers={"Retry-After": str(max(1, round(wait + 0.5)))})  # fmt: skip
                unknown = sorted(set(request.query_params) - allowed)
                if unknown:
                    raise ApiError(400, "invalid_parameter", f"unknown query parameter: {unknown[0]}", field=unknown[0])
                return await handler(request, caller)
            except ApiError as exc:
                return exc.response()

        return endpoint

    # -- runs ------------------------------------------------------------------------------------

    async def create_run(self, request: Request, caller: Caller) -> Response:
        key = request.headers.get("idempotency-key")
        if key is None or not IDEMPOTENCY_KEY.fullmatch(key):
            raise ApiError(400, "invalid_header", "Idempotency-Key is required: 1-200 printable ASCII characters",
                           field="Idempotency-Key")  # fmt: skip
        wait_s = _query(CreateRunQuery, request).wait
        if wait_s > self.config.max_wait_s:
            raise ApiError(400, "invalid_parameter", f"wait must be between 0 and {self.config.max_wait_s:g}",
                           field="wait")  # fmt: skip
        body = _validate(CreateRun, await self._read_json(request))
        request_hash = hashlib.sha256(orjson.dumps(body.fingerprint(), option=orjson.OPT_SORT_KEYS)).hexdigest()
        # The run id is a function of (tenant, key): concurrent identical requests all name the
        # same run, and the journal's dedupe makes them one.
        run_id = "run_" + hashlib.sha256(f"{caller.tenant_id}\x00{key}".encode()).hexdigest()[:24]
        if self.tools is not None and body.tools:
            await self.tools.check_run_tools(caller.tenant_id, body.tools)
        await check_run_workflow(self.tools, caller.tenant_id, body.workflow or "", body.workflow_version or "")
        existing = await self.index.find(caller.tenant_id, run_id)
        status = 200
        if existing is None:
            self._admit(caller)
            await self.journal.request_run(
                RunRequest(
                    task=body.task,
                    model=body.model,
                    tools=list(body.tools),
                    max_steps=body.max_steps,
                    tenant_id=caller.tenant_id,
                    labels=dict(body.labels),
                    run_id=run_id,
                    idempotency_key=key,
                    request_hash=request_hash,
                    budget=None if body.budget is None else RunBudget(**body.budget.model_dump()),
                    api_key_id=caller.key_id,
                    context=None if body.context is None else body.context.overrides(),
                    workflow=body.workflow or "",
                    workflow_version=body.workflow_version or "",
                )
            )
            existing = await self.index.wait_for(run_id, self.config.read_your_write_s, terminal=False)
            if existing is None:
                raise ApiError(503, "unavailable", "the run was requested but is not visible yet; retry with the same key",
                               headers={"Retry-After": "1"})  # fmt: skip
            status = 201
        if existing.request_hash != request_hash:
            raise ApiError(409, "idempotency_conflict",
                           "this Idempotency-Key was already used with a different request body", field="Idempotency-Key")  # fmt: skip
        if wait_s > 0 and not existing.settled:
            existing = await self.index.wait_for(run_id, wait_s, terminal=True) or existing
            if not existing.settled:
                status = 202
        return model_response(existing.resource(), status, headers={"Location": f"/v1/runs/{run_id}"})

    def _admit(self, caller: Caller) -> None:
        if self.index.active_runs() >= self.config.platform_max_active_runs:
            raise ApiError(503, "saturated", "the platform is at capacity; retry later", headers={"Retry-After": "5"})
        if self.index.active_runs(caller.tenant_id) >= caller.max_active_runs:
            raise ApiError(429, "concurrency_quota", f"this tenant already has {caller.max_active_runs} active runs",
                           headers={"Retry-After": "5"})  # fmt: skip

    async def get_run(self, request: Request, caller: Caller) -> Response:
        view = await self._run(request, caller)
        self.index.trees.refresh(view)
        return model_response(view.resource())

    async def get_run_tree(self, request: Request, caller: Caller) -> Response:
        return model_response(await run_tree(self.index, caller.tenant_id, await self._run(request, caller)))

    async def list_runs(self, request: Request, caller: Caller) -> Response:
        # Every run on record, filtered, from the run catalog (console_api.py), not only those held.
        return await list_runs(self.index, caller.tenant_id, _query(ListRunsQuery, request))

    async def health(self, _request: Request, _caller: Caller) -> Response:
        return model_response(Health(ok=True))

    async def cancel_run(self, request: Request, caller: Caller) -> Response:
        view = await self._run(request, caller)
        raw = await self._read_json(request, allow_empty=True)
        body = _validate(CancelRun, raw if raw is not None else {})
        if view.terminal:
            raise ApiError(409, "already_ended", f"the run already ended ({view.status})")
        await self.journal.cancel(view.run_id, caller.tenant_id, body.reason, requested_by=f"api:{caller.tenant_id}")
        return model_response(view.resource(), 202)

    async def resume_run(self, request: Request, caller: Caller) -> Response:
        view = await self._run(request, caller)
        raw = await self._read_json(request, allow_empty=True)
        body = _validate(ResumeRun, raw if raw is not None else {})
        if view.status != RunStatus.HALTED or not view.resumable:
            why = "halted for a reason that cannot be resumed" if view.status == RunStatus.HALTED else view.status
            raise ApiError(409, "not_resumable", f"the run is {why}; only runs halted at a resumable limit resume")
        self._admit(caller)  # a resumed run is active again, so it counts against the same quotas
        await self.journal.resume(
            view.run_id,
            caller.tenant_id,
            view.halts,
            body.add_steps,
            body.reason,
            requested_by=f"api:{caller.tenant_id}",
            raise_budget=RunBudget(usd=body.add_usd, tokens=body.add_tokens, wall_s=body.add_wall_s),
        )
        return model_response(view.resource(), 202)

    async def stream_events(self, request: Request, caller: Caller) -> Response:
        view = await self._run(request, caller)
        # A plain id is a position in the run's own partition; a tree stream's has one per partition.
        position = parse_position(request.headers.get("last-event-id", ""), view.partition)
        authorization = request.headers.get("authorization")
        timing = {"keepalive_s": self.config.keepalive_s, "recheck_s": self.config.auth_recheck_s}
        still_authorized = lambda: self.auth.authenticate(authorization) is not None  # noqa: E731
        query = _query(StreamRunEventsQuery, request)
        if query.tree:
            events = tree_events(self.index, caller.tenant_id, view, position, still_authorized, **timing)
        else:
            events = run_events(self.index, view, position.get(view.partition, -1), still_authorized, **timing,
                                truncate=query.truncate)  # fmt: skip
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    # -- costs ------------------------------------------------------------------------------------

    async def get_run_cost(self, request: Request, caller: Caller) -> Response:
        return await run_cost(self.index, request.path_params["run_id"], caller.tenant_id)

    async def list_costs(self, request: Request, caller: Caller) -> Response:
        return tenant_costs(self.index, caller.tenant_id, _query(ListCostsQuery, request))

    async def query_audit(self, request: Request, caller: Caller) -> Response:
        if self.audit is None:
            raise ApiError(404, "no_audit_record", "this gateway serves no audit warehouse")
        return await self.audit.query(caller.tenant_id, _validate(AuditQuery, await self._read_json(request)))

    # -- approvals --------------------------------------------------------------------------------

    def _approvals(self) -> ApprovalsApi:
        if self.approvals is None:
            raise ApiError(404, "not_found", "approvals are not served by this gateway")
        return self.approvals

    async def list_approvals(self, request: Request, caller: Caller) -> Response:
        return await self._approvals().list(caller.tenant_id, _query(ListApprovalsQuery, request).status)

    async def get_approval(self, request: Request, caller: Caller) -> Response:
        return await self._approvals().get(request, caller.tenant_id)

    async def decide_approval(self, request: Request, caller: Caller) -> Response:
        api = self._approvals()
        body = _validate(DecideApproval, await self._read_json(request))
        return await api.decide(request, caller.tenant_id, body, caller.key_id)

    # -- tools ------------------------------------------------------------------------------------

    def _tools(self) -> ToolsApi:
        if self.tools is None:
            raise ApiError(404, "not_found", "the tool registry is not served by this gateway")
        return self.tools

    async def list_tools(self, request: Request, caller: Caller) -> Response:
        return await self._tools().list(caller.tenant_id)

    async def get_tool(self, request: Request, caller: Caller) -> Response:
        return await self._tools().get(request, caller.tenant_id)

    async def register_tool(self, request: Request, caller: Caller) -> Response:
        api = self._tools()
        return await api.register(caller.tenant_id, _validate(RegisterTool, await self._read_json(request)))

    async def disable_tool(self, request: Request, caller: Caller) -> Response:
        return await self._switch(request, caller, disabled=True)

    async def enable_tool(self, request: Request, caller: Caller) -> Response:
        return await self._switch(request, caller, disabled=False)

    async def _switch(self, request: Request, caller: Caller, *, disabled: bool) -> Response:
        api = self._tools()
        raw = await self._read_json(request, allow_empty=True)
        body = _validate(SwitchTool, raw if raw is not None else {})
        return await api.switch(request, caller.tenant_id, body, disabled=disabled)

    # -- helpers ---------------------------------------------------------------------------------

    async def _run(self, request: Request, caller: Caller) -> RunView:
        # An old run the projection no longer holds is read back from the journal.
        view = await self.index.find(caller.tenant_id, request.path_params["run_id"])
        if view is None:
            raise not_found()
        return view

    async def _read_json(self, request: Request, *, allow_empty: bool = False) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            raise ApiError(400, "invalid_header", "Content-Length must be a number of bytes", field="Content-Length")
        if declared is not None and int(declared) > self.config.max_body_bytes:
            raise ApiError(413, "body_too_large", f"request bodies are limited to {self.config.max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.config.max_body_bytes:  # refused before the body is read whole
                raise ApiError(
                    413, "body_too_large", f"request bodies are limited to {self.config.max_body_bytes} bytes"
                )
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            if allow_empty:
                return None
            raise ApiError(400, "invalid_body", "a JSON object body is required", field="body")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}", field="body") from exc


def _validate(model: type[M], raw: Any) -> M:
    if not isinstance(raw, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object", field="body")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        where, message = first_problem(exc)
        raise ApiError(422, "invalid_field", f"{where}: {message}", field=where) from exc


def _query(model: type[Q], request: Request) -> Q:
    """The operation's query parameters (the last value of a repeated one), by its query model."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        where, message = first_problem(exc)
        raise ApiError(400, "invalid_parameter", f"{where}: {message}", field=where) from exc


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    type_ = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(exc.status_code, type_, str(exc.detail), headers=dict(exc.headers or {})).response()


async def _internal_error(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in the run API", exc_info=exc)
    return ApiError(500, "internal", "internal error").response()
