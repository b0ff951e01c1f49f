"""Drafts registrations from an MCP server's own `tools/list` (`agentstream tools discover`)."""

from __future__ import annotations

from typing import Any

from agentstream.processors.tool_executor.mcp_host import McpToolHost
from agentstream.processors.tool_executor.registry_host import server_config
from agentstream.registry.entry import ToolEntry


async def discover(transport: dict[str, Any], *, sandboxed: bool = True) -> list[ToolEntry]:
    """Starts the server `transport` describes, asks `tools/list`, and drafts one registration per
    tool, tier `irreversible` until a person says otherwise: the safe default."""
    probe = ToolEntry(name="discovery", description="", input_schema={}, tier="irreversible", transport=transport)
    host = McpToolHost(server_config(probe, sandboxed=sandboxed))
    await host.start()
    try:
        return [
            ToolEntry(
                name=d.spec.name,
                description=d.spec.description,
                input_schema=d.spec.input_schema,
                tier="irreversible",
                transport=transport,
            )
            for d in host.descriptors()
        ]
    finally:
        await host.aclose()
