"""The tools API: the registry as a tenant sees it (platform tools and its own), registration of
the tenant's own tools, and the kill switch for them. Platform tools are administered by the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
from confluent_kafka import KafkaException
from starlette.requests import Request
from starlette.responses import Response

from agentstream.config import Settings
from agentstream.contract.requests import RegisterTool, SwitchTool
from agentstream.contract.resources import Tool, ToolDetail, ToolPage
from agentstream.gateway.errors import ApiError, model_response
from agentstream.registry import admin
from agentstream.registry.admin import RegistryError
from agentstream.registry.entry import ToolEntry
from agentstream.registry.reader import CatalogReader

# How long a run request naming a tool this gateway has not seen waits for the registry to be read
# to its end before it is refused: normally milliseconds; a broker outage lets the request through.
UNKNOWN_TOOL_CATCH_UP_S = 5.0
# An `unknown_tool` refusal's message names at most this many of the tools the tenant has.
_NAMED_IN_MESSAGE = 30


class ToolsApi:
    def __init__(self, settings: Settings, reader: CatalogReader, *, follows_topics: bool = True) -> None:
        """`follows_topics=False`: a catalog fed directly (in-process tests), nothing to catch up on."""
        self.settings = settings
        self.reader = reader
        self.follows_topics = follows_topics

    def _fresh(self) -> None:
        self.reader.refresh()

    async def check_run_tools(self, tenant_id: str, names: Sequence[str]) -> None:
        """Refuses (422 `unknown_tool`) a run that names a tool the tenant cannot use, as the
        orchestrator would a moment later (it resolves names with the same `visible`), so the
        caller learns at once which names are wrong and which it may use."""
        self._fresh()
        if not (missing := self._missing(tenant_id, names)):
            return
        if self.follows_topics:
            # The name may be a tool registered a moment ago (by the CLI, or through another
            # gateway) that this reader has not reached yet: read the registry to its end first.
            # Only requests that would be refused pay for it.
            try:
                await self.reader.catch_up(UNKNOWN_TOOL_CATCH_UP_S)
            except (TimeoutError, KafkaException):
                return  # the registry cannot be read now: let the orchestrator decide, as before
            if not (missing := self._missing(tenant_id, names)):
                return
        available = sorted(self.reader.catalog.visible(tenant_id))
        shown = ", ".join(available[:_NAMED_IN_MESSAGE]) + (", ..." if len(available) > _NAMED_IN_MESSAGE else "")
        raise ApiError(
            422,
            "unknown_tool",
            f"unknown tool(s): {', '.join(missing)}; this tenant's tools: {shown or 'none'} (GET /v1/tools)",
            field="tools",
            details={"unknown": missing, "available": available},
        )

    def _missing(self, tenant_id: str, names: Sequence[str]) -> list[str]:
        visible = self.reader.catalog.visible(tenant_id)
        return sorted({n for n in names if n not in visible})

    async def list(self, tenant_id: str) -> Response:
        self._fresh()
        catalog = self.reader.catalog
        data = [Tool(**self._resource(tenant_id, entry)) for _, entry in sorted(catalog.visible(tenant_id).items())]
        return model_response(ToolPage(data=data))

    async def get(self, request: Request, tenant_id: str) -> Response:
        entry = self._visible(request, tenant_id)
        versions = self.reader.catalog.versions.get((entry.owner, entry.name), {})
        return model_response(ToolDetail(**self._resource(tenant_id, entry), versions=sorted(versions)))

    async def register(self, tenant_id: str, body: RegisterTool) -> Response:
        self._fresh()
        draft = ToolEntry(
            name=body.name, description=body.description, input_schema=body.input_schema, tier=body.tier,
            transport=transport_of(body),
            owner=tenant_id, scopes=tuple(body.scopes), egress=tuple(body.egress), secrets=tuple(body.secrets),
            timeout_ms=int(body.timeout_s * 1000), approval_timeout_s=body.approval_timeout_s,
        )  # fmt: skip
        try:
            entry = await admin.register_tool(self.settings, draft, self.reader.catalog)
        except RegistryError as exc:
            raise ApiError(422, "invalid_tool", str(exc), field="body") from exc
        return model_response(Tool(**self._resource(tenant_id, entry)), 201)

    async def switch(self, request: Request, tenant_id: str, body: SwitchTool, *, disabled: bool) -> Response:
        entry = self._visible(request, tenant_id)
        if entry.owner != tenant_id:
            raise ApiError(403, "platform_tool", "platform tools are switched by the platform's operators")
        await admin.switch_tool(self.settings, tenant_id, entry.name, disabled=disabled, reason=body.reason,
                                by=f"api:{tenant_id}")  # fmt: skip
        return model_response(Tool(**{**self._resource(tenant_id, entry), "disabled": disabled}), 202)

    def _resource(self, tenant_id: str, entry: ToolEntry) -> dict[str, Any]:
        catalog = self.reader.catalog
        return {
            **entry.describe(),
            "disabled": catalog.switched_off(entry) is not None,
            # What this tenant's calls of the tool get when one needs a person: the registration's
            # deadline capped by the tenant's policy, so a caller need not work it out.
            "effective_approval_timeout_s": catalog.policy(tenant_id).approval_timeout_for(entry),
        }

    def _visible(self, request: Request, tenant_id: str) -> ToolEntry:
        self._fresh()
        entry = self.reader.catalog.visible(tenant_id).get(request.path_params["name"])
        if entry is None:
            raise ApiError(404, "not_found", "tool not found")
        return entry


def transport_of(body: RegisterTool) -> dict[str, Any]:
    """The registration's transport, named by the server, never by the tool: the executor runs one
    process (or connection) per distinct transport (and tenant and egress; `server_key`), so the
    tools of one MCP server registered one by one share its state, and shape for shape what
    `agentstream tools register --command` writes (cli/tools.py), so either path reaches the same process."""
    if body.command is not None:
        command = body.command[0]
        return {"kind": "stdio", "server": command.rsplit("/", 1)[-1], "command": command, "args": body.command[1:]}
    assert body.url is not None  # the model's validator: exactly one of command and url
    return {"kind": "http", "server": httpx.URL(body.url).host, "url": body.url}
