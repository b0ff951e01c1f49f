"""The run API (ASGI): create, read, list, cancel and stream runs, scoped to the caller's tenant."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentstream.client.journal import JournalClient, RunBudget, RunRequest
from agentstream.gateway.approvals_api import ApprovalsApi
from agentstream.gateway.costs_api import run_cost, tenant_costs
from agentstream.gateway.errors import ApiError, not_found
from agentstream.gateway.models import (
    CURSOR,
    IDEMPOTENCY_KEY,
    CancelRun,
    CreateRun,
    DecideApproval,
    RegisterTool,
    ResumeRun,
    SwitchTool,
)
from agentstream.gateway.openapi import RUN_STATUSES, openapi_document
from agentstream.gateway.projection import RunIndex, RunView
from agentstream.gateway.streams import run_events
from agentstream.gateway.tools_api import ToolsApi
from agentstream.tenancy.scopes import APPROVALS_DECIDE, RUNS_READ, RUNS_WRITE, TOOLS_WRITE, has_scope

LAST_EVENT_ID = re.compile(r"^[0-9]{0,18}$")
M = TypeVar("M", bound=BaseModel)
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
    ) -> None:
        self.index = index
        self.approvals = approvals
        self.tools = tools
        self.journal = journal
        self.auth = auth
        self.rates = rates
        self.config = config or GatewayConfig()

    def app(self) -> Starlette:
        # Every route names the scope its key must carry (agentstream.tenancy.scopes).
        read, write, decide, tools = RUNS_READ, RUNS_WRITE, APPROVALS_DECIDE, TOOLS_WRITE
        routes = [
            Route("/v1/runs", self._guard(write, self.create_run, "wait"), methods=["POST"]),
            Route("/v1/runs", self._guard(read, self.list_runs, "status", "cursor", "limit"), methods=["GET"]),
            Route("/v1/runs/{run_id}", self._guard(read, self.get_run), methods=["GET"]),
            Route("/v1/runs/{run_id}/cancel", self._guard(write, self.cancel_run), methods=["POST"]),
            Route("/v1/runs/{run_id}/resume", self._guard(write, self.resume_run), methods=["POST"]),
            Route("/v1/runs/{run_id}/events", self._guard(read, self.stream_events), methods=["GET"]),
            Route("/v1/runs/{run_id}/cost", self._guard(read, self.get_run_cost), methods=["GET"]),
            Route("/v1/costs", self._guard(read, self.list_costs, "group_by", "since_ms"), methods=["GET"]),
            Route("/v1/approvals", self._guard(read, self.list_approvals, "status"), methods=["GET"]),
            Route("/v1/approvals/{approval_id}", self._guard(read, self.get_approval), methods=["GET"]),
            Route("/v1/approvals/{approval_id}", self._guard(decide, self.decide_approval), methods=["POST"]),
            Route("/v1/tools", self._guard(read, self.list_tools), methods=["GET"]),
            Route("/v1/tools", self._guard(tools, self.register_tool), methods=["POST"]),
            Route("/v1/tools/{name}", self._guard(read, self.get_tool), methods=["GET"]),
            Route("/v1/tools/{name}/disable", self._guard(tools, self.disable_tool), methods=["POST"]),
            Route("/v1/tools/{name}/enable", self._guard(tools, self.enable_tool), methods=["POST"]),
            Route("/openapi.json", lambda _r: JSONResponse(openapi_document(self.config.max_wait_s)), methods=["GET"]),
            Route("/healthz", lambda _r: JSONResponse({"ok": True}), methods=["GET"]),
        ]
        # Unknown paths and methods get the same machine-readable error body as every other refusal.
        return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _internal_error})

    def _guard(self, scope: str, handler: Handler, *query: str) -> Callable[[Request], Awaitable[Response]]:
        """Authentication, the key's scope for the operation, the tenant's rate, and the
        operation's query parameters (no others)."""
        allowed = frozenset(query)

        async def endpoint(request: Request) -> Response:
            try:
                caller = self.auth.authenticate(request.headers.get("authorization"))
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
        wait_s = _float_param(request, "wait", 0.0, 0.0, self.config.max_wait_s)
        body = _validate(CreateRun, await self._read_json(request))
        request_hash = hashlib.sha256(orjson.dumps(body.model_dump(), option=orjson.OPT_SORT_KEYS)).hexdigest()
        # The run id is a function of (tenant, key): concurrent identical requests all name the
        # same run, and the journal's dedupe makes them one.
        run_id = "run_" + hashlib.sha256(f"{caller.tenant_id}\x00{key}".encode()).hexdigest()[:24]
        if self.tools is not None and body.tools:
            await self.tools.check_run_tools(caller.tenant_id, body.tools)
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
        return JSONResponse(existing.resource(), status_code=status, headers={"Location": f"/v1/runs/{run_id}"})

    def _admit(self, caller: Caller) -> None:
        if self.index.active_runs() >= self.config.platform_max_active_runs:
            raise ApiError(503, "saturated", "the platform is at capacity; retry later", headers={"Retry-After": "5"})
        if self.index.active_runs(caller.tenant_id) >= caller.max_active_runs:
            raise ApiError(429, "concurrency_quota", f"this tenant already has {caller.max_active_runs} active runs",
                           headers={"Retry-After": "5"})  # fmt: skip

    async def get_run(self, request: Request, caller: Caller) -> Response:
        return JSONResponse((await self._run(request, caller)).resource())

    async def list_runs(self, request: Request, caller: Caller) -> Response:
        status = request.query_params.get("status")
        if status is not None and status not in RUN_STATUSES:
            raise ApiError(
                400,
                "invalid_parameter",
                f"status must be one of: {', '.join(RUN_STATUSES)}",
                field="status",
            )
        limit = _int_param(request, "limit", 50, 1, 500)
        after = _decode_cursor(request.query_params.get("cursor"))
        page = self.index.list(caller.tenant_id, status, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        cursor = _encode_cursor(page[-1]) if more and page else None
        return JSONResponse({"data": [v.resource() for v in page], "next_cursor": cursor})

    async def cancel_run(self, request: Request, caller: Caller) -> Response:
        view = await self._run(request, caller)
        raw = await self._read_json(request, allow_empty=True)
        body = _validate(CancelRun, raw if raw is not None else {})
        if view.terminal:
            raise ApiError(409, "already_ended", f"the run already ended ({view.status})")
        await self.journal.cancel(view.run_id, caller.tenant_id, body.reason, requested_by=f"api:{caller.tenant_id}")
        return JSONResponse(view.resource(), status_code=202)

    async def resume_run(self, request: Request, caller: Caller) -> Response:
        view = await self._run(request, caller)
        raw = await self._read_json(request, allow_empty=True)
        body = _validate(ResumeRun, raw if raw is not None else {})
        if view.status != "halted" or not view.resumable:
            why = "halted for a reason that cannot be resumed" if view.status == "halted" else f"{view.status}"
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
        return JSONResponse(view.resource(), status_code=202)

    async def stream_events(self, request: Request, caller: Caller) -> Response:
        view = await self._run(request, caller)
        raw_last = request.headers.get("last-event-id", "")
        if not LAST_EVENT_ID.fullmatch(raw_last):
            raise ApiError(
                400, "invalid_header", "Last-Event-ID must be an event id from this stream", field="Last-Event-ID"
            )
        last = int(raw_last) if raw_last else -1
        authorization = request.headers.get("authorization")
        events = run_events(self.index, view, last, lambda: self.auth.authenticate(authorization) is not None,
                            keepalive_s=self.config.keepalive_s, recheck_s=self.config.auth_recheck_s)  # fmt: skip
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    # -- costs ------------------------------------------------------------------------------------

    async def get_run_cost(self, request: Request, caller: Caller) -> Response:
        return await run_cost(self.index, request.path_params["run_id"], caller.tenant_id)

    async def list_costs(self, request: Request, caller: Caller) -> Response:
        since_ms = _int_param(request, "since_ms", 0, 0, 10**15)
        return tenant_costs(self.index, request, caller.tenant_id, since_ms)

    # -- approvals --------------------------------------------------------------------------------

    def _approvals(self) -> ApprovalsApi:
        if self.approvals is None:
            raise ApiError(404, "not_found", "approvals are not served by this gateway")
        return self.approvals

    async def list_approvals(self, request: Request, caller: Caller) -> Response:
        return await self._approvals().list(request, caller.tenant_id)

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
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, "invalid_field", f"{where}: {first['msg']}", field=where) from exc


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[+-]?[0-9]{1,18}", raw):
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer", field=name)
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be between {low} and {high}", field=name)
    return value


def _float_param(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_parameter", f"{name} must be a number", field=name) from exc
    if not low <= value <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be between {low:g} and {high:g}", field=name)
    return value


def _encode_cursor(view: RunView) -> str:
    return f"{view.created_ms}.{view.run_id.encode().hex()}"


def _decode_cursor(raw: str | None) -> tuple[int, str] | None:
    """Every string of the documented shape is a position: (created, run id) compares with any run's."""
    if raw is None:
        return None
    if not CURSOR.fullmatch(raw):
        raise ApiError(400, "invalid_parameter", "cursor is not one this API returned", field="cursor")
    created, run_hex = raw.split(".", 1)
    return int(created), bytes.fromhex(run_hex).decode(errors="replace")


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    type_ = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(exc.status_code, type_, str(exc.detail), headers=dict(exc.headers or {})).response()


async def _internal_error(_request: Request, exc: Exception) -> Response:
    log.exception("unhandled error in the run API", exc_info=exc)
    return ApiError(500, "internal", "internal error").response()
