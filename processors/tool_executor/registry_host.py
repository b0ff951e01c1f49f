"""Runs a registered tool version wherever its registration says: in process (built-in tools), in
an MCP stdio server started on first use inside the sandbox with the tool's egress allowlist, or
on a remote MCP server over streamable HTTP whose URL is on that allowlist.

Server processes (and remote connections) are never shared between tenants, and a tool that
receives credentials gets its own per run: see `server_key`. Idle ones are closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from agentstream.codemode.interface import RUN_CODE_TOOL
from agentstream.context.compaction import READ_RESULT_TOOL
from agentstream.memory.paths import MEMORY_TOOLS
from agentstream.processors.tool_executor.approval_tool import approved
from agentstream.processors.tool_executor.call_policy import CallPolicy
from agentstream.processors.tool_executor.code_tool import CodeTool
from agentstream.processors.tool_executor.mcp_config import McpServerConfig
from agentstream.processors.tool_executor.mcp_host import McpToolHost
from agentstream.processors.tool_executor.memory_tool import MemoryTool
from agentstream.processors.tool_executor.read_result import ReadResultTool
from agentstream.registry.entry import ToolEntry
from agentstream.sandbox import SandboxPolicy, egress_allowed
from agentstream.tooling import ToolHost, ToolResult
from agentstream.workflows.definition import APPROVAL_TOOL

log = logging.getLogger(__name__)


def server_config(
    entry: ToolEntry, *, sandboxed: bool = True, hidden_paths: Sequence[str | os.PathLike[str]] = ()
) -> McpServerConfig:
    transport = entry.transport
    if transport.get("kind") == "http":
        return McpServerConfig(
            name=str(transport.get("server") or entry.name), command="", args=[], risk=entry.tier,
            idempotent=entry.idempotent, timeout_s=entry.timeout_ms / 1000.0, url=str(transport["url"]),
        )  # fmt: skip
    policy = SandboxPolicy(
        egress_allowlist=tuple(entry.egress),
        wall_clock_s=entry.timeout_ms / 1000.0,
        hidden_paths=tuple(os.path.abspath(p) for p in hidden_paths),
        # Host directories the tool may write: an operator's grant to a platform-wide tool only.
        writable_paths=() if entry.owner else tuple(os.path.abspath(str(p)) for p in transport.get("writable") or ()),
    )
    return McpServerConfig(
        name=str(transport.get("server") or entry.name),
        command=str(transport["command"]),
        args=[str(a) for a in transport.get("args") or []],
        env={str(k): str(v) for k, v in (transport.get("env") or {}).items()},
        risk=entry.tier,
        idempotent=entry.idempotent,
        timeout_s=entry.timeout_ms / 1000.0,
        # Only an operator's platform-wide registration may opt out; a tenant's tool never does.
        sandbox=policy if sandboxed and (entry.owner or transport.get("sandbox", True)) else None,
    )


def url_allowed(entry: ToolEntry) -> bool:
    """A remote tool's own URL must be on its egress allowlist, like anything a sandboxed tool reaches."""
    url = httpx.URL(str(entry.transport.get("url", "")))
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme in ("http", "https") and egress_allowed(entry.egress, url.host, port)


def server_key(entry: ToolEntry, *, tenant: str, run_id: str) -> str:
    """Which calls share one server process (for stdio) or connection (for HTTP).

    Per tenant, because a process keeps what it was told (globals, caches, files in its HOME) and a
    platform-wide tool would otherwise carry one tenant's data into another's call. Per run too for
    a tool that receives credentials (`_meta.credentials`): its secrets, once in its memory, stay
    with the run they were redeemed for. Within that, one per transport and egress allowlist.
    """
    scope = {"tenant": tenant, "run": run_id if entry.secrets else ""}
    return orjson.dumps([entry.transport, sorted(entry.egress), scope], option=orjson.OPT_SORT_KEYS).decode()


@dataclass(eq=False)
class _Slot:
    server: McpToolHost
    in_use: int = 0
    last_used: float = 0.0


class RegistryToolHost:
    def __init__(
        self,
        builtin: ToolHost,
        *,
        hidden_paths: Sequence[str | os.PathLike[str]] = (),
        idle_s: float = 120.0,
        max_servers: int = 64,
        clock: Callable[[], float] = time.monotonic,
        read_back: ReadResultTool | None = None,
        memory: MemoryTool | None = None,
        code: CodeTool | None = None,
    ) -> None:
        self.builtin = builtin
        self.code = code
        self.read_back = read_back
        self.memory = memory
        # Hidden from every sandboxed server on top of the sandbox's defaults (the executor's home).
        self.hidden_paths = tuple(hidden_paths)
        self.idle_s = idle_s
        self.max_servers = max_servers
        self._clock = clock
        self._servers: dict[str, _Slot] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_due = 0.0

    @property
    def server_count(self) -> int:
        return len(self._servers)

    async def call(
        self, entry: ToolEntry, arguments: dict[str, Any], *, idempotency_key: str, tenant: str, run_id: str
    ) -> ToolResult:
        timeout_s = entry.timeout_ms / 1000.0
        kind = entry.transport.get("kind", "builtin")
        if kind == "builtin" and entry.name == READ_RESULT_TOOL and self.read_back is not None:
            # The tenant and run of the signed authorization, passed explicitly: what it reads is
            # decided by who runs it, never by its arguments.
            return await self.read_back.call(arguments, tenant=tenant, run_id=run_id, timeout_s=timeout_s)
        if kind == "builtin" and entry.name in MEMORY_TOOLS and not entry.owner and self.memory is not None:
            # Likewise: whose memory it is comes from the authorization, never from the arguments.
            return await self.memory.call(entry.name, arguments, tenant=tenant, run_id=run_id, timeout_s=timeout_s)
        if kind == "builtin" and entry.name == RUN_CODE_TOOL and not entry.owner and self.code is not None:
            return await self.code.call(arguments, timeout_s=timeout_s)  # one round of a program, sandboxed
        if kind == "builtin" and entry.name == APPROVAL_TOOL and not entry.owner:
            return approved(arguments)  # the gate held it for a person; reaching here is the approval
        if kind == "builtin":
            return await self.builtin.call(entry.name, arguments, idempotency_key=idempotency_key, timeout_s=timeout_s)
        if kind == "http" and not url_allowed(entry):
            # Checked at registration too; checked again here, where the connection is made.
            return ToolResult(
                f"{entry.name}: {entry.transport.get('url')} is not in its egress allowlist", is_error=True
            )
        if kind not in ("stdio", "http"):
            return ToolResult(f"{entry.name}: transport {kind!r} is not supported by this executor", is_error=True)
        slot = await self._acquire(entry, server_key(entry, tenant=tenant, run_id=run_id))
        if isinstance(slot, ToolResult):
            return slot
        # The tool's own retry rule and timeout, not those of the tool whose call started the server.
        policy = CallPolicy(entry.tier, entry.idempotent, timeout_s)
        try:
            return await slot.server.call(
                entry.name, arguments, idempotency_key=idempotency_key, timeout_s=timeout_s, policy=policy
            )
        finally:
            slot.in_use -= 1
            slot.last_used = self._clock()
            self.close_idle()
            self._sweep_later()

    async def _acquire(self, entry: ToolEntry, key: str) -> _Slot | ToolResult:
        """The server for `key`, started on first use, counted as in use until the caller is done."""
        lock = self._starting.setdefault(key, asyncio.Lock())
        async with lock:
            slot = self._servers.get(key)
            if slot is None:
                server = McpToolHost(server_config(entry, hidden_paths=self.hidden_paths))
                try:
                    await server.start()
                except Exception as exc:  # a server that cannot start is an observation, not a crash
                    log.warning("MCP server for %s failed to start: %s", entry.name, exc)
                    return ToolResult(f"{entry.name}: its MCP server failed to start: {exc}", is_error=True)
                slot = self._servers.get(key)
                if slot is None:
                    slot = self._servers[key] = _Slot(server)
                else:  # started meanwhile by a caller holding an evicted key's old lock: keep one
                    self._close_later(server)
            slot.in_use += 1  # no await since the lookup, so eviction cannot take it in between
            return slot

    def close_idle(self) -> None:
        """Closes servers idle for `idle_s`, and the least recently used idle ones past `max_servers`."""
        now = self._clock()
        idle = sorted((slot.last_used, key) for key, slot in self._servers.items() if slot.in_use == 0)
        expired = [key for used, key in idle if now - used >= self.idle_s]
        surplus = len(self._servers) - len(expired) - self.max_servers
        if surplus > 0:
            expired += [key for _used, key in idle if key not in expired][:surplus]
        for key in expired:
            self._close_later(self._servers.pop(key).server)
            lock = self._starting.get(key)
            if lock is not None and not lock.locked():
                del self._starting[key]

    def _sweep_later(self) -> None:
        """Idle servers are closed even if no other call comes to notice (a run's secrets included).
        One timer, due when the earliest idle server expires, rather than one per call."""
        idle = [slot.last_used for slot in self._servers.values() if slot.in_use == 0]
        if not idle:
            return
        due = min(idle) + self.idle_s + 0.05
        if self._sweep is not None and self._sweep_due <= due:
            return  # an earlier sweep is pending; it schedules the next one
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep_due = due
        self._sweep = asyncio.get_running_loop().call_later(max(0.0, due - self._clock()), self._swept)

    def _swept(self) -> None:
        self._sweep = None
        self.close_idle()
        self._sweep_later()

    def _close_later(self, server: McpToolHost) -> None:
        task = asyncio.get_running_loop().create_task(server.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        servers, self._servers = [slot.server for slot in self._servers.values()], {}
        await asyncio.gather(*(s.aclose() for s in servers), *self._closing, return_exceptions=True)
        await self.builtin.aclose()
        if self.read_back is not None:
            await self.read_back.aclose()
        if self.memory is not None:
            await self.memory.aclose()
