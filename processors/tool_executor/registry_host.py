"""Runs a registered tool version wherever its registration says: in process (built-in tools), in
an MCP stdio server started on first use inside the sandbox with the tool's egress allowlist, or
on a remote MCP server over streamable HTTP whose URL is on that allowlist."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import orjson

from agentstream.registry.entry import ToolEntry
from agentstream.sandbox import SandboxPolicy, egress_allowed
from agentstream.tooling import ToolHost, ToolResult
from processors.tool_executor.mcp_host import McpServerConfig, McpToolHost

log = logging.getLogger(__name__)


def server_config(entry: ToolEntry, *, sandboxed: bool = True) -> McpServerConfig:
    transport = entry.transport
    if transport.get("kind") == "http":
        return McpServerConfig(
            name=str(transport.get("server") or entry.name), command="", args=[], risk=entry.tier,
            idempotent=entry.idempotent, timeout_s=entry.timeout_ms / 1000.0, url=str(transport["url"]),
        )  # fmt: skip
    policy = SandboxPolicy(egress_allowlist=tuple(entry.egress), wall_clock_s=entry.timeout_ms / 1000.0)
    return McpServerConfig(
        name=str(transport.get("server") or entry.name),
        command=str(transport["command"]),
        args=[str(a) for a in transport.get("args") or []],
        env={str(k): str(v) for k, v in (transport.get("env") or {}).items()},
        risk=entry.tier,
        idempotent=entry.idempotent,
        timeout_s=entry.timeout_ms / 1000.0,
        sandbox=policy if sandboxed and transport.get("sandbox", True) else None,
    )


def url_allowed(entry: ToolEntry) -> bool:
    """A remote tool's own URL must be on its egress allowlist, like anything a sandboxed tool reaches."""
    url = httpx.URL(str(entry.transport.get("url", "")))
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme in ("http", "https") and egress_allowed(entry.egress, url.host, port)


class RegistryToolHost:
    def __init__(self, builtin: ToolHost) -> None:
        self.builtin = builtin
        self._servers: dict[str, McpToolHost] = {}
        self._starting: dict[str, asyncio.Lock] = {}

    async def call(self, entry: ToolEntry, arguments: dict[str, Any], *, idempotency_key: str) -> ToolResult:
        timeout_s = entry.timeout_ms / 1000.0
        kind = entry.transport.get("kind", "builtin")
        if kind == "builtin":
            return await self.builtin.call(entry.name, arguments, idempotency_key=idempotency_key, timeout_s=timeout_s)
        if kind == "http" and not url_allowed(entry):
            # Checked at registration too; checked again here, where the connection is made.
            return ToolResult(
                f"{entry.name}: {entry.transport.get('url')} is not in its egress allowlist", is_error=True
            )
        if kind in ("stdio", "http"):
            server = await self._server(entry)
            if isinstance(server, ToolResult):
                return server
            return await server.call(entry.name, arguments, idempotency_key=idempotency_key, timeout_s=timeout_s)
        return ToolResult(f"{entry.name}: transport {kind!r} is not supported by this executor", is_error=True)

    async def _server(self, entry: ToolEntry) -> McpToolHost | ToolResult:
        # One connection (for stdio, one server process) per distinct transport and egress allowlist.
        key = orjson.dumps([entry.transport, sorted(entry.egress)], option=orjson.OPT_SORT_KEYS).decode()
        lock = self._starting.setdefault(key, asyncio.Lock())
        async with lock:
            server = self._servers.get(key)
            if server is None:
                server = McpToolHost(server_config(entry))
                try:
                    await server.start()
                except Exception as exc:  # a server that cannot start is an observation, not a crash
                    log.warning("MCP server for %s failed to start: %s", entry.name, exc)
                    return ToolResult(f"{entry.name}: its MCP server failed to start: {exc}", is_error=True)
                self._servers[key] = server
            return server

    async def aclose(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        await asyncio.gather(*(s.aclose() for s in servers), return_exceptions=True)
        await self.builtin.aclose()
