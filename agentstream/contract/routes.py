"""The run API's operations, declared once: the gateway mounts its handlers by these (method,
path, the key's scope, the query it accepts) and the OpenAPI document is generated from them."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from agentstream.contract import queries, requests, resources, workflows
from agentstream.contract.queries import ANY_EVENT_ID_PATTERN, IDEMPOTENCY_KEY_PATTERN
from agentstream.tenancy.scopes import APPROVALS_DECIDE, AUDIT_READ, MEMORY_READ, RUNS_READ, RUNS_WRITE, TOOLS_WRITE


@dataclass(frozen=True)
class Header:
    name: str
    pattern: str
    required: bool
    description: str


@dataclass(frozen=True)
class Answer:
    description: str
    body: type[BaseModel]
    location: bool = False  # carries `Location: /v1/runs/{id}`


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    scope: str | None  # None: public (no API key)
    answers: dict[int, Answer]
    errors: tuple[int, ...] = ()
    query: type[queries.Query] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = False
    headers: tuple[Header, ...] = ()
    stream: bool = False  # the 200 answer is `text/event-stream` of `body` messages
    path_params: tuple[str, ...] = ()

    @property
    def query_names(self) -> frozenset[str]:
        return frozenset(self.query.model_fields) if self.query is not None else frozenset()


_IDEMPOTENCY_KEY = Header(
    "Idempotency-Key", IDEMPOTENCY_KEY_PATTERN, True, "1-200 printable ASCII characters; the same key and body name the same run"
)  # fmt: skip
_LAST_EVENT_ID = Header(
    "Last-Event-ID", ANY_EVENT_ID_PATTERN, False,
    "resume after this event id (a journal offset; with tree=true, the per-partition id a tree stream sent); "
    "empty: from the start",
)  # fmt: skip
# Every run-scoped operation: an unknown query parameter, authentication, the run, the tenant's rate.
_COMMON = (400, 401, 404, 429)
_LIST = (400, 401, 429)
_RUN = resources.Run
_TOOL = resources.Tool


def _switch(verb: str) -> Operation:
    return Operation(
        "POST", f"/v1/tools/{{name}}/{verb}", f"{verb}Tool", TOOLS_WRITE,
        {202: Answer(f"{verb}d in every run", _TOOL)}, (*_COMMON, 413, 422),
        body=requests.SwitchTool, path_params=("name",),
    )  # fmt: skip


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", "/v1/runs", "createRun", RUNS_WRITE,
        {
            200: Answer("the run this key already created", _RUN, location=True),
            201: Answer("created", _RUN, location=True),
            202: Answer("created or found; still running after `wait`", _RUN, location=True),
        },
        (400, 401, 409, 413, 422, 429, 503),
        query=queries.CreateRunQuery, body=requests.CreateRun, body_required=True, headers=(_IDEMPOTENCY_KEY,),
    ),
    Operation("GET", "/v1/runs", "listRuns", RUNS_READ, {200: Answer("a page of runs", resources.RunPage)}, _LIST,
              query=queries.ListRunsQuery),
    Operation("GET", "/v1/runs/{run_id}", "getRun", RUNS_READ, {200: Answer("the run", _RUN)}, _COMMON,
              path_params=("run_id",)),
    Operation("POST", "/v1/runs/{run_id}/cancel", "cancelRun", RUNS_WRITE, {202: Answer("cancel journaled", _RUN)},
              (*_COMMON, 409, 413, 422), body=requests.CancelRun, path_params=("run_id",)),
    Operation("POST", "/v1/runs/{run_id}/resume", "resumeRun", RUNS_WRITE, {202: Answer("resume journaled", _RUN)},
              (*_COMMON, 409, 413, 422, 503), body=requests.ResumeRun, path_params=("run_id",)),
    Operation(
        "GET", "/v1/runs/{run_id}/events", "streamRunEvents", RUNS_READ,
        {200: Answer("Server-Sent Events: the run's journal, catch-up then live", resources.RunEventFrame)},
        _COMMON, query=queries.StreamRunEventsQuery, headers=(_LAST_EVENT_ID,), stream=True, path_params=("run_id",),
    ),
    Operation("GET", "/v1/runs/{run_id}/tree", "getRunTree", RUNS_READ,
              {200: Answer("the run and the runs it started, nested", resources.RunTree)}, _COMMON,
              path_params=("run_id",)),
    Operation("GET", "/v1/runs/{run_id}/cost", "getRunCost", RUNS_READ,
              {200: Answer("what the run has cost so far", resources.RunCost)}, _COMMON, path_params=("run_id",)),
    Operation("GET", "/v1/costs", "listCosts", RUNS_READ,
              {200: Answer("the tenant's spend, grouped", resources.CostReport)}, _LIST, query=queries.ListCostsQuery),
    Operation("GET", "/v1/costs/series", "getCostSeries", RUNS_READ,
              {200: Answer("the tenant's settled spend over time, per tool, model, run or tenant",
                           resources.CostSeries)}, _LIST, query=queries.CostSeriesQuery),
    Operation("GET", "/v1/runs/{run_id}/events/{offset}", "getRunEvent", RUNS_READ,
              {200: Answer("one event of the run, whole (a truncated stream record's `more_url`)",
                           resources.RunEventDetail)}, _COMMON, query=queries.GetRunEventQuery,
              path_params=("run_id", "offset")),
    Operation("GET", "/v1/approvals", "listApprovals", RUNS_READ,
              {200: Answer("the tenant's approvals", resources.ApprovalPage)}, _LIST,
              query=queries.ListApprovalsQuery),
    Operation("GET", "/v1/approvals/{approval_id}", "getApproval", RUNS_READ,
              {200: Answer("the approval", resources.Approval)}, _COMMON, path_params=("approval_id",)),
    Operation("POST", "/v1/approvals/{approval_id}", "decideApproval", APPROVALS_DECIDE,
              {202: Answer("decision journaled", resources.Approval)}, (*_COMMON, 409, 413, 422),
              body=requests.DecideApproval, body_required=True, path_params=("approval_id",)),
    Operation("GET", "/v1/tools", "listTools", RUNS_READ, {200: Answer("the tools this tenant sees", resources.ToolPage)},
              _LIST),
    Operation("POST", "/v1/tools", "registerTool", TOOLS_WRITE,
              {201: Answer("the registered (or unchanged) version", _TOOL)}, (400, 401, 413, 422, 429),
              body=requests.RegisterTool, body_required=True),
    Operation("GET", "/v1/tools/{name}", "getTool", RUNS_READ, {200: Answer("the tool", resources.ToolDetail)},
              _COMMON, path_params=("name",)),
    _switch("disable"),
    _switch("enable"),
    Operation("GET", "/v1/workflows", "listWorkflows", RUNS_READ,
              {200: Answer("the latest version of each of this tenant's workflows", workflows.WorkflowPage)}, _LIST),
    Operation("POST", "/v1/workflows", "registerWorkflow", TOOLS_WRITE,
              {200: Answer("the same definition is already the latest version: that version", workflows.WorkflowVersion),
               201: Answer("registered as the next version", workflows.WorkflowVersion)},
              (400, 401, 413, 422, 429),
              body=workflows.RegisterWorkflow, body_required=True),
    Operation("GET", "/v1/workflows/{name}", "getWorkflow", RUNS_READ,
              {200: Answer("the workflow's version (the latest unless one is asked for)", workflows.WorkflowDetail)},
              _COMMON, query=workflows.GetWorkflowQuery, path_params=("name",)),
    Operation("POST", "/v1/audit/query", "queryAudit", AUDIT_READ,
              {200: Answer("the selected rows of the tenant's audit record", resources.AuditRows)},
              (400, 401, 403, 404, 413, 422, 429, 503), body=requests.AuditQuery, body_required=True),
    Operation("GET", "/v1/memory", "listMemory", RUNS_READ,
              {200: Answer("the tenant's memory files (no contents)", resources.MemoryPage)}, _LIST),
    Operation("GET", "/v1/memory/export", "exportMemory", MEMORY_READ,
              {200: Answer("the tenant's memory files with their contents", resources.MemoryExport)},
              (*_LIST, 503)),
    Operation("GET", "/healthz", "health", None, {200: Answer("the gateway is serving", resources.Health)}),
)  # fmt: skip
