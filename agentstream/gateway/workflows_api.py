"""The workflows API: a tenant registers, lists and reads its workflows (explicit graphs). The
registry is the tools registry's topic and reader (ToolCatalog.workflows), so the orchestrator
resolves a graph run's workflow from the same records this gateway answers from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from confluent_kafka import KafkaException
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from agentstream.contract.workflows import RegisterWorkflow, WorkflowDetail, WorkflowPage, WorkflowVersion
from agentstream.gateway.errors import ApiError, model_response
from agentstream.gateway.tools_api import UNKNOWN_TOOL_CATCH_UP_S, ToolsApi
from agentstream.workflows.book import WorkflowBook, describe, register_workflow
from agentstream.workflows.errors import WorkflowError


class _Caller(Protocol):
    @property
    def tenant_id(self) -> str: ...

    @property
    def key_id(self) -> str: ...


WorkflowHandler = Callable[[Request, _Caller], Awaitable[Response]]
ReadJson = Callable[[Request], Awaitable[Any]]


class WorkflowsApi:
    def __init__(self, tools: ToolsApi) -> None:
        self.tools = tools  # its reader holds the registry (tools and workflows) and follows the topic

    @property
    def book(self) -> WorkflowBook:
        return self.tools.reader.catalog.workflows

    async def list(self, tenant_id: str) -> Response:
        self.tools.reader.refresh()
        book = self.book
        data = [WorkflowVersion(**describe(found)) for name in book.names(tenant_id)
                if (found := book.get(tenant_id, name)) is not None]  # fmt: skip
        return model_response(WorkflowPage(data=data))

    async def get(self, request: Request, tenant_id: str) -> Response:
        self.tools.reader.refresh()
        name = request.path_params["name"]
        found = self.book.get(tenant_id, name, request.query_params.get("version", ""))
        if found is None:
            raise ApiError(404, "not_found", f"no workflow {name!r} (GET /v1/workflows lists this tenant's)")
        return model_response(WorkflowDetail(**describe(found), versions=self.book.version_list(tenant_id, name)))

    async def register(self, tenant_id: str, key_id: str, raw: Any) -> Response:
        self.tools.reader.refresh()
        try:
            RegisterWorkflow.model_validate(raw)  # the contract's shape first: a body that is no definition
            event, created = await register_workflow(self.tools.settings, tenant_id, raw, self.book,
                                                     f"api:{tenant_id}:{key_id}")  # fmt: skip
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ApiError(422, "invalid_workflow", f"{where}: {first['msg']}", field=where,
                           details={"kind": "invalid"}) from None  # fmt: skip
        except WorkflowError as exc:
            raise ApiError(422, "invalid_workflow", str(exc), field="body",
                           details={"kind": exc.kind, "node": exc.node}) from None  # fmt: skip
        return model_response(WorkflowVersion(**describe(event)), 201 if created else 200)

    async def check_run_workflow(self, tenant_id: str, name: str, version: str = "") -> None:
        """Refuses (422 `unknown_workflow`) a run naming a workflow (or version) the tenant has not
        registered, as the orchestrator would at the run's start; a workflow registered a moment
        ago through another gateway is waited for (the registry read to its end) first."""
        self.tools.reader.refresh()
        if self.book.get(tenant_id, name, version) is not None:
            return
        if self.tools.follows_topics:  # else a catalog fed directly (in-process tests): nothing to read
            try:
                await self.tools.reader.catch_up(UNKNOWN_TOOL_CATCH_UP_S)
            except (TimeoutError, KafkaException):
                return  # the registry cannot be read now: the orchestrator decides, as for tools
            if self.book.get(tenant_id, name, version) is not None:
                return
        known = self.book.version_list(tenant_id, name)
        what = f"version {version!r} of workflow {name!r} (versions: {', '.join(known)})" if known and version \
            else f"workflow {name!r}"  # fmt: skip
        raise ApiError(422, "unknown_workflow", f"no {what} is registered for this tenant (GET /v1/workflows)",
                       field="workflow", details={"available": self.book.names(tenant_id)})  # fmt: skip


def workflow_handlers(tools: ToolsApi | None, read_json: ReadJson) -> dict[str, WorkflowHandler]:
    """The gateway's handlers of listWorkflows, getWorkflow and registerWorkflow (404 where no
    registry is served)."""
    if tools is None:

        async def absent(_request: Request, _caller: _Caller) -> Response:
            raise ApiError(404, "not_found", "the workflow registry is not served by this gateway")

        return dict.fromkeys(("listWorkflows", "getWorkflow", "registerWorkflow"), absent)
    api = WorkflowsApi(tools)

    async def register(request: Request, caller: _Caller) -> Response:
        return await api.register(caller.tenant_id, caller.key_id, await read_json(request))

    return {
        "listWorkflows": lambda _request, caller: api.list(caller.tenant_id),
        "getWorkflow": lambda request, caller: api.get(request, caller.tenant_id),
        "registerWorkflow": register,
    }


async def check_run_workflow(tools: ToolsApi | None, tenant_id: str, name: str, version: str = "") -> None:
    """For the create path: refuses (422 `unknown_workflow`) a run naming a workflow (or version)
    the tenant has not registered; nothing to check where the gateway serves no registry."""
    if tools is not None and name:
        await WorkflowsApi(tools).check_run_workflow(tenant_id, name, version)
