"""One ToolHost over several: routes each call by tool name to the host that owns the tool."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from agentstream.tooling import ToolDescriptor, ToolHost, ToolResult
from processors.tool_executor.builtin import BuiltinToolHost
from processors.tool_executor.mcp_host import McpStdioToolHost, time_server_config

log = logging.getLogger(__name__)


@runtime_checkable
class _Startable(Protocol):
    async def start(self) -> None: ...


def _routes(hosts: list[ToolHost]) -> dict[str, tuple[ToolHost, ToolDescriptor]]:
    routes: dict[str, tuple[ToolHost, ToolDescriptor]] = {}
    for host in hosts:
        for descriptor in host.descriptors():
            name = descriptor.spec.name
            if name in routes:
                # Silently shadowing one tool with another would send calls to the wrong system.
                raise ValueError(
                    f"tool {name!r} is offered by both {routes[name][1].source!r} and {descriptor.source!r}"
                )
            routes[name] = (host, descriptor)
    return routes


class CompositeToolHost:
    """Routes by tool name. Hosts that need starting may be passed unstarted if `start()` is called;
    tool names are checked for duplicates both here and again once every host has started."""

    def __init__(self, hosts: list[ToolHost]) -> None:
        self.hosts = list(hosts)
        self._routes = _routes(self.hosts)

    async def start(self) -> None:
        started: list[ToolHost] = []
        try:
            for host in self.hosts:
                if isinstance(host, _Startable):
                    await host.start()
                started.append(host)
            self._routes = _routes(self.hosts)
        except BaseException:
            await _close_all(started)
            raise

    def descriptors(self) -> list[ToolDescriptor]:
        return [descriptor for _, descriptor in self._routes.values()]

    async def call(self, name: str, arguments: dict[str, Any], *, idempotency_key: str, timeout_s: float) -> ToolResult:
        route = self._routes.get(name)
        if route is None:
            known = ", ".join(sorted(self._routes)) or "none"
            return ToolResult(f"unknown tool {name!r}; available tools: {known}", is_error=True)
        host, _ = route
        return await host.call(name, arguments, idempotency_key=idempotency_key, timeout_s=timeout_s)

    async def aclose(self) -> None:
        await _close_all(self.hosts)


async def _close_all(hosts: list[ToolHost]) -> None:
    results = await asyncio.gather(*(host.aclose() for host in hosts), return_exceptions=True)
    for host, result in zip(hosts, results, strict=True):
        if isinstance(result, Exception):
            log.warning("closing tool host %r failed: %s", host, result)
        elif isinstance(result, BaseException):
            raise result


async def default_tool_host(bank_path: Path) -> CompositeToolHost:
    """The demo tool set: the built-in tools plus the reference mcp-server-time, started."""
    composite = CompositeToolHost([BuiltinToolHost(bank_path), McpStdioToolHost(time_server_config())])
    await composite.start()
    return composite
