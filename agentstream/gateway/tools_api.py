"""The tools API: the registry as a tenant sees it (platform tools and its own), registration of
the tenant's own tools, and the kill switch for them. Platform tools are administered by the CLI."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentstream.config import Settings
from agentstream.gateway.errors import ApiError
from agentstream.gateway.models import RegisterTool, SwitchTool
from agentstream.registry import admin
from agentstream.registry.admin import RegistryError
from agentstream.registry.entry import ToolEntry
from agentstream.registry.reader import CatalogReader


class ToolsApi:
    def __init__(self, settings: Settings, reader: CatalogReader) -> None:
        self.settings = settings
        self.reader = reader

    def _fresh(self) -> None:
        self.reader.refresh()

    async def list(self, tenant_id: str) -> Response:
        self._fresh()
        catalog = self.reader.catalog
        data = [self._resource(tenant_id, entry) for _, entry in sorted(catalog.visible(tenant_id).items())]
        return JSONResponse({"data": data})

    async def get(self, request: Request, tenant_id: str) -> Response:
        entry = self._visible(request, tenant_id)
        versions = self.reader.catalog.versions.get((entry.owner, entry.name), {})
        return JSONResponse({**self._resource(tenant_id, entry), "versions": sorted(versions)})

    async def register(self, tenant_id: str, body: RegisterTool) -> Response:
        self._fresh()
        draft = ToolEntry(
            name=body.name, description=body.description, input_schema=body.input_schema, tier=body.tier,
            transport=_transport(body),
            owner=tenant_id, scopes=tuple(body.scopes), egress=tuple(body.egress), secrets=tuple(body.secrets),
            timeout_ms=int(body.timeout_s * 1000), approval_timeout_s=body.approval_timeout_s,
        )  # fmt: skip
        try:
            entry = await admin.register_tool(self.settings, draft, self.reader.catalog)
        except RegistryError as exc:
            raise ApiError(422, "invalid_tool", str(exc), field="body") from exc
        return JSONResponse(self._resource(tenant_id, entry), status_code=201)

    async def switch(self, request: Request, tenant_id: str, body: SwitchTool, *, disabled: bool) -> Response:
        entry = self._visible(request, tenant_id)
        if entry.owner != tenant_id:
            raise ApiError(403, "platform_tool", "platform tools are switched by the platform's operators")
        await admin.switch_tool(self.settings, tenant_id, entry.name, disabled=disabled, reason=body.reason,
                                by=f"api:{tenant_id}")  # fmt: skip
        return JSONResponse({**self._resource(tenant_id, entry), "disabled": disabled}, status_code=202)

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


def _transport(body: RegisterTool) -> dict[str, Any]:
    if body.command is not None:
        return {"kind": "stdio", "server": body.name, "command": body.command[0], "args": body.command[1:]}
    return {"kind": "http", "server": body.name, "url": body.url}
