"""Runs the tools of one MCP server, spoken to over stdio (a process we start, restarted when it
fails, sandboxed when configured) or over streamable HTTP (a server someone else runs, reconnected
when the connection fails).

The MCP client (`mcp.Client` over `stdio_client` or `streamable_http_client`) is built on anyio task groups and cancel scopes,
which must be entered and exited by the same task. So one long-lived owner task holds each
connection open inside its own cancel scope; callers borrow the live connection for their
requests from their own tasks (the session multiplexes concurrent requests), and ask for a
restart by cancelling the owner's scope, never by touching the context managers themselves.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
from dataclasses import dataclass
from typing import Any, cast

import anyio
import orjson
from mcp import Client
from mcp.client._transport import Transport
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CONNECTION_CLOSED,
    CallToolResult,
    EmbeddedResource,
    Implementation,
    RequestParamsMeta,
    TextContent,
)

from agentstream.llm import ToolSpec
from agentstream.processors.tool_executor.call_policy import CallPolicy
from agentstream.processors.tool_executor.mcp_config import (
    McpServerConfig,
    sandboxed_server_parameters,
    server_parameters,
    time_server_config,
)
from agentstream.processors.tool_executor.remote_http import checked_streamable_http
from agentstream.processors.tool_executor.stdio_transport import bounded_stdio_client
from agentstream.registry.schema_guard import guard_output_schemas
from agentstream.sandbox import EgressProxy, SandboxPolicy, make_sandbox_dir, require_sandbox
from agentstream.tooling import CURRENT_CREDENTIALS, ToolDescriptor, ToolResult

# The server's configuration and launch live in mcp_config; re-exported for the host's users.
__all__ = ["McpServerConfig", "McpToolHost", "describe", "result_text", "time_server_config"]

log = logging.getLogger(__name__)

# Sent in each tools/call request's `_meta`, so servers that dedupe can key on it.
IDEMPOTENCY_META_KEY = "idempotency_key"
# The secrets a tool's registration names, redeemed for this call, sent the same way.
CREDENTIALS_META_KEY = "credentials"
CLIENT_INFO = Implementation(name="agentstream-tool-executor", version="0.1.0")
_LIST_PAGE_CAP = 100
_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0


def describe(exc: BaseException) -> str:
    """Names the leaf errors: the SDK's task groups wrap the real cause in ExceptionGroups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def result_text(result: CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, EmbeddedResource) and isinstance(getattr(block.resource, "text", None), str):
            parts.append(str(getattr(block.resource, "text", "")))
        else:
            parts.append(f"[{block.type} content omitted]")
    if not parts and result.structured_content is not None:
        return orjson.dumps(result.structured_content).decode()
    return "\n".join(parts)


def _meta(idempotency_key: str) -> RequestParamsMeta:
    meta: dict[str, Any] = {IDEMPOTENCY_META_KEY: idempotency_key}
    credentials = CURRENT_CREDENTIALS.get()
    if credentials:
        # Only this call's redeemed secrets, only to the server that runs it; never logged here.
        meta[CREDENTIALS_META_KEY] = dict(credentials)
    # RequestParamsMeta is an open TypedDict (extra_items=Any) that mypy does not model yet.
    return cast(RequestParamsMeta, meta)


@dataclass(eq=False)
class _Connection:
    client: Client
    scope: anyio.CancelScope


@dataclass(frozen=True, slots=True)
class _Lost:
    """The connection died under a call, so whether the tool ran is unknown."""

    cause: BaseException


class _Unavailable(Exception):
    pass


class McpToolHost:
    """A ToolHost over one MCP server (stdio or streamable HTTP). `start()` before use; `call` never raises except for
    cancellation: every failure, the server's included, becomes an error ToolResult."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.restarts = 0
        self._descriptors: list[ToolDescriptor] = []
        self._tool_names: frozenset[str] = frozenset()
        self._owner: asyncio.Task[None] | None = None
        self._conn: _Connection | None = None
        self._scope: anyio.CancelScope | None = None  # the owner's current phase, for restart/close
        self._start_error: BaseException | None = None
        self._changed = asyncio.Event()
        self._closing = False
        self._egress: EgressProxy | None = None
        self._sandbox_dir: str | None = None

    @property
    def source(self) -> str:
        return f"mcp:{self.config.name}"

    @property
    def egress(self) -> EgressProxy | None:
        """The sandbox's egress proxy, whose `allowed`/`denied` record where the server tried to go."""
        return self._egress

    async def start(self) -> None:
        if self._owner is not None:
            raise RuntimeError(f"MCP server {self.config.name!r} is already started")
        if self.config.url and self.config.sandbox is not None:
            # A sandbox confines a process we start; a remote server has none to confine.
            raise ValueError(f"MCP server {self.config.name!r} is remote ({self.config.url}); it cannot be sandboxed")
        if self.config.sandbox is not None:
            try:
                await self._start_sandbox(self.config.sandbox)
            except BaseException:
                await self.aclose()
                raise
        self._owner = asyncio.create_task(self._own(), name=f"mcp-owner:{self.config.name}")
        try:
            await self._await_connection()
        except _Unavailable as exc:
            await self.aclose()
            raise RuntimeError(f"MCP server {self.config.name!r} failed to start: {exc}") from exc.__cause__
        except BaseException:
            await self.aclose()
            raise

    def descriptors(self) -> list[ToolDescriptor]:
        return list(self._descriptors)

    async def call(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        idempotency_key: str,
        timeout_s: float,
        policy: CallPolicy | None = None,
    ) -> ToolResult:
        """`policy`: the called tool's own (a registry tool's); without it, the server's config."""
        if name not in self._tool_names:
            return ToolResult(f"unknown tool {name!r} on MCP server {self.config.name!r}", is_error=True)
        if policy is None:
            policy = CallPolicy(self.config.risk, self.config.idempotent, min(timeout_s, self.config.timeout_s))
        budget = min(timeout_s, policy.timeout_s)
        attempts = 2 if policy.resendable else 1
        in_flight: _Connection | None = None
        try:
            async with asyncio.timeout(budget):
                for attempt in range(1, attempts + 1):
                    in_flight = conn = await self._await_connection()
                    outcome = await self._send(conn, name, arguments, idempotency_key)
                    in_flight = None
                    if isinstance(outcome, ToolResult):
                        return outcome
                    if not policy.resendable:
                        # As after an executor crash: a second sending could do the effect twice.
                        return ToolResult(
                            f"ERROR: {name}: lost the connection to MCP server {self.config.name!r} during the call "
                            f"({describe(outcome.cause)}); it may have run; not retried (non-idempotent "
                            f"{policy.risk.replace('_', '-')} tool). Check before asking for it again.",
                            is_error=True,
                        )
                    if attempt == attempts:
                        return ToolResult(
                            f"{name}: lost the connection to MCP server {self.config.name!r} "
                            f"({describe(outcome.cause)}); the call may or may not have run; the server is restarting",
                            is_error=True,
                        )
        except _Unavailable as exc:
            return ToolResult(f"{name}: MCP server {self.config.name!r} is unavailable: {exc}", is_error=True)
        except TimeoutError:
            if in_flight is not None:
                # A server that overran its deadline may be wedged; a fresh one costs a second.
                self._restart(in_flight, f"{name} timed out")
            return ToolResult(f"{name} timed out after {budget:g}s on MCP server {self.config.name!r}", is_error=True)
        raise AssertionError("unreachable")

    async def _send(
        self, conn: _Connection, name: str, arguments: dict[str, Any], idempotency_key: str
    ) -> ToolResult | _Lost:
        try:
            result = await conn.client.call_tool(name, arguments, meta=_meta(idempotency_key))
        except Exception as exc:
            if conn is not self._conn or (isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED):
                self._restart(conn, describe(exc))
                return _Lost(exc)
            if isinstance(exc, MCPError):
                # A JSON-RPC error answer (invalid params, unknown tool): the server itself is fine.
                return ToolResult(f"{name}: MCP error {exc.code}: {exc.message}", is_error=True)
            if not isinstance(exc, RuntimeError):
                # An unparseable reply: the stream can no longer be trusted. (RuntimeError is how
                # the SDK reports a well-formed reply that breaks the tool's own output schema,
                # a tool bug that a restart would not fix.)
                self._restart(conn, describe(exc))
            return ToolResult(f"{name}: bad reply from MCP server {self.config.name!r}: {describe(exc)}", is_error=True)
        return ToolResult(result_text(result), is_error=bool(result.is_error))

    async def aclose(self) -> None:
        self._closing = True
        if self._scope is not None:
            self._scope.cancel()
        self._notify()
        owner, self._owner = self._owner, None
        try:
            if owner is None:
                return
            try:
                # The SDK bounds its own shutdown (stdin close, SIGTERM, SIGKILL) to a few seconds.
                await asyncio.wait_for(asyncio.shield(owner), timeout=15.0)
            except TimeoutError:
                owner.cancel()
                log.warning("MCP server %r did not shut down in time", self.config.name)
        finally:
            await self._close_sandbox()

    async def _start_sandbox(self, policy: SandboxPolicy) -> None:
        # Raises SandboxUnavailable rather than ever running the server unsandboxed; the probe
        # runs a process, so it stays off the event loop.
        await asyncio.to_thread(require_sandbox, policy)
        self._sandbox_dir = make_sandbox_dir()  # under a 0700 root, which every other sandbox hides
        os.mkdir(os.path.join(self._sandbox_dir, "home"))
        self._egress = EgressProxy(os.path.join(self._sandbox_dir, "egress.sock"), policy.egress_allowlist)
        await self._egress.start()

    async def _close_sandbox(self) -> None:
        if self._egress is not None:
            await self._egress.aclose()
        if self._sandbox_dir is not None:
            shutil.rmtree(self._sandbox_dir, ignore_errors=True)
            self._sandbox_dir = None

    def _parameters(self) -> StdioServerParameters | Transport:
        if self.config.url:
            # Streamable HTTP through the egress address rules: resolved once per connection,
            # every address checked, connected to the checked one, replies read with a byte cap.
            return checked_streamable_http(self.config.url)
        # Our own stdio transport: the server gets pipes of its own (never our stderr) and its
        # output is read with a bound on each message.
        if self.config.sandbox is None:
            return bounded_stdio_client(server_parameters(self.config), name=self.config.name)
        if self._egress is None or self._sandbox_dir is None:
            raise RuntimeError("the sandbox is not set up")  # never fall back to running unsandboxed
        home = os.path.join(self._sandbox_dir, "home")
        params = sandboxed_server_parameters(self.config, proxy_socket=self._egress.path, home=home)
        return bounded_stdio_client(params, name=self.config.name)

    # --- owner task ---------------------------------------------------------------------------

    async def _own(self) -> None:
        try:
            await self._supervise()
        finally:
            # However the owner ends, no waiter may be left parked on a connection that won't come.
            self._conn = None
            self._notify()

    async def _supervise(self) -> None:
        generation = 0
        backoff = _BACKOFF_MIN_S
        while not self._closing:
            generation += 1
            failure = await self._serve_one(generation)
            if self._closing:
                return
            if failure is None:
                backoff = _BACKOFF_MIN_S
                continue
            self._start_error = failure
            self._notify()
            if generation == 1:
                return  # start() reports it: a server that never came up is a configuration error
            log.warning(
                "MCP server %r failed to restart (%s); retrying in %.1fs", self.config.name, describe(failure), backoff
            )
            with anyio.CancelScope() as scope:
                self._scope = scope
                await anyio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _serve_one(self, generation: int) -> BaseException | None:
        """Runs one server process from spawn to teardown; returns why it failed to start, if it did."""
        published = False
        failure: BaseException | None = None
        # One scope spans the whole connection, so the client's own scopes nest inside it; its
        # deadline bounds startup and is lifted once the server is usable.
        with anyio.CancelScope() as scope:
            self._scope = scope
            scope.deadline = anyio.current_time() + self.config.start_timeout_s
            try:
                params = self._parameters()
                async with Client(params, cache=None, client_info=CLIENT_INFO) as client:
                    guard_output_schemas(client.session)  # the server's outputSchema runs on RE2, bounded
                    self._descriptors = await self._discover(client)
                    self._tool_names = frozenset(d.spec.name for d in self._descriptors)
                    scope.deadline = math.inf
                    self._conn = _Connection(client, scope)
                    self._start_error = None
                    if generation > 1:
                        self.restarts += 1
                    published = True
                    self._notify()
                    await anyio.sleep_forever()
            except Exception as exc:
                failure = exc
            finally:
                self._conn = None
        if published:
            if failure is not None:
                log.info("MCP server %r connection ended: %s", self.config.name, describe(failure))
            return None
        if failure is None and scope.cancelled_caught and not self._closing:
            failure = TimeoutError(f"no usable connection within {self.config.start_timeout_s:g}s")
        return failure

    async def _discover(self, client: Client) -> list[ToolDescriptor]:
        version = client.server_info.version if client.server_info and client.server_info.version else "1"
        descriptors: list[ToolDescriptor] = []
        cursor: str | None = None
        for _ in range(_LIST_PAGE_CAP):
            page = await client.list_tools(cursor=cursor)
            for tool in page.tools:
                descriptors.append(
                    ToolDescriptor(
                        spec=ToolSpec(tool.name, tool.description or "", dict(tool.input_schema)),
                        source=self.source,
                        risk=self.config.risk,
                        idempotent=self.config.idempotent,
                        version=version,
                        timeout_s=self.config.timeout_s,
                    )
                )
            cursor = page.next_cursor
            if cursor is None:
                break
        return descriptors

    # --- coordination -------------------------------------------------------------------------

    def _notify(self) -> None:
        # Wake every waiter once; they re-check state and wait on the fresh event if need be.
        self._changed.set()
        self._changed = asyncio.Event()

    def _restart(self, conn: _Connection, reason: str) -> None:
        if self._conn is conn:
            log.warning("restarting MCP server %r: %s", self.config.name, reason)
            self._conn = None
            conn.scope.cancel()

    async def _await_connection(self) -> _Connection:
        while True:
            if self._closing:
                raise _Unavailable("the host is closed")
            if self._conn is not None:
                return self._conn
            if self._start_error is not None:
                raise _Unavailable(describe(self._start_error)) from self._start_error
            if self._owner is None or self._owner.done():
                raise _Unavailable("the host is not started")
            await self._changed.wait()
