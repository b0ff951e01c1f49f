"""What the run API answers with: the gateway builds every response body from these models and
the SDK parses every response into them.

Responses ignore fields they do not know, so a client keeps working against a newer gateway
that adds one; they are frozen, as values read from the server. The gateway always sends every
field (null where there is nothing to say), so the document lists them all as required; defaults
only help a client reading an older gateway.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentstream.contract.vocab import ApprovalStatus, CostGroup, RunStatus


class Resource(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_serialization_defaults_required=True)


class RunFlag(Resource):
    """A mark for a person's review (RunFlagged): the run went on, but something in it looked wrong."""

    kind: str
    step: int
    reason: str
    count: int


class BudgetCaps(Resource):
    """A run's hard caps as they stand (a resume raises them); 0: no cap."""

    usd: float = 0.0
    tokens: int = 0
    wall_s: float = 0.0
    on_loop: str = "halt"


class Compaction(Resource):
    """One context compaction (ContextCompacted): the prompt's estimated size before and after it."""

    step: int = Field(description="the step whose next model call got the compacted prompt")
    kind: str = Field(description="clear: old tool results cleared; summarize: and the old turns summarized")
    tokens_before: int
    tokens_after: int


class RunContext(Resource):
    """The context settings the run pinned at its start (its own over the tenant's defaults), and
    the compactions made so far."""

    mode: str = Field(description="on: the prompt is compacted past trigger_tokens; off: it is sent whole")
    trigger_tokens: int
    keep_turns: int
    summarize: bool
    summary_tier: str
    exclude_tools: list[str]
    compactions: int = Field(default=0, description="how many times the run's prompt was compacted")
    last_compaction: Compaction | None = Field(default=None, description="the latest one; null: none yet")


class Run(Resource):
    id: str
    status: RunStatus
    task: str
    model: str
    tools: list[str]
    max_steps: int
    labels: dict[str, str]
    steps: int
    reason: str | None = None
    final_answer: str | None = None
    resumable: bool = Field(default=False, description="halted at a limit that a resume can raise")
    flags: list[RunFlag] = Field(
        default_factory=list, description="marks for review: e.g. the model kept asking for a denied call"
    )
    budget: BudgetCaps = Field(default_factory=BudgetCaps)
    cost_usd: float = Field(default=0.0, description="settled cost so far, in US dollars")
    context: RunContext | None = Field(
        default=None, description="context management as the run pinned it; null until the run starts"
    )
    created_at_ms: int
    updated_at_ms: int
    events_url: str  # `run.status.terminal`, `run.status.settled`: whether it has ended, or halted
    parent_run_id: str | None = Field(default=None, description="the run that started this one; null: top level")
    depth: int = Field(default=0, description="0 for a top-level run, its parent's depth + 1 for a child")
    workflow: str | None = Field(default=None, description="the workflow (explicit graph) it follows; null: ReAct")
    workflow_version: str | None = Field(default=None, description="the workflow version asked for; null: latest")
    children: list[RunChild] = Field(
        default_factory=list, description="the child runs it started, in the order it asked for them (the first 100)"
    )
    children_count: int = Field(default=0, description="how many child runs it started (all of them)")


class RunChild(Resource):
    """A child run as its parent lists it; the whole subtree: `GET /v1/runs/{id}/tree`."""

    id: str
    status: RunStatus


class RunTreeNode(Resource):
    """One run of a run tree, with the runs it started."""

    id: str
    status: RunStatus
    task: str
    depth: int
    parent_run_id: str | None
    workflow: str | None
    steps: int
    result: str | None = Field(description="its final answer or why it ended, cut to 500 characters; null: not yet")
    children: list[RunTreeNode] = Field(description="the child runs shown, in the order they were asked for")
    children_count: int = Field(description="how many child runs it started; more than shown when the tree was cut")


class RunTree(Resource):
    """A run and its descendants, cut at `max_depth` levels below it and `max_runs` runs in all."""

    root: RunTreeNode
    runs: int = Field(description="the runs shown")
    truncated: bool = Field(description="some descendants were left out (depth or size bound)")
    max_depth: int
    max_runs: int


class RunPage(Resource):
    data: list[Run]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: the last page")


class Approval(Resource):
    id: str
    run_id: str
    status: ApprovalStatus
    tool: str
    tool_version: str = ""
    tier: str
    arguments_json: str
    reason: str = ""
    requested_at_ms: int
    expires_at_ms: int = Field(description="past this, the call is denied, never approved")
    decided_by: str | None = Field(
        default=None,
        description="`api:<tenant>:key/<key id>`: the API key that decided; `timeout`: the deadline passed",
    )
    decided_by_key_id: str | None = Field(default=None, description="the deciding key's id alone")
    decision_reason: str | None = None
    decided_at_ms: int | None = None


class ApprovalPage(Resource):
    data: list[Approval]


class Tool(Resource):
    name: str
    version: str
    owner: str | None = Field(default=None, description="the owning tenant; null: platform-wide")
    description: str = ""
    input_schema: dict[str, Any]
    tier: Literal["read_only", "reversible", "irreversible"]
    scopes: list[str] = Field(default_factory=list)
    egress: list[str] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    timeout_ms: int = 0
    approval_timeout_s: float | None = Field(
        description="the registration's approval deadline in seconds; null: the tenant's policy alone"
    )
    effective_approval_timeout_s: float = Field(
        description="the deadline this tenant's calls get: the tool's, capped by the tenant's policy"
    )
    transport: Literal["builtin", "stdio", "http"]
    registered_at_ms: int = 0
    disabled: bool = False


class ToolDetail(Tool):
    versions: list[str] = Field(description="every version registered under this name, oldest first")


class ToolPage(Resource):
    data: list[Tool]


class RunCost(Resource):
    run_id: str
    usd: float = Field(description="settled cost in US dollars (reservations not included)")
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int
    tool_calls: int
    by_tool: dict[str, float]
    by_model: dict[str, float]
    price_versions: list[str]
    status: RunStatus
    budget: BudgetCaps = Field(default_factory=BudgetCaps)


class CostRow(Resource):
    key: str
    usd: float
    runs: int
    calls: int


class CostReport(Resource):
    group_by: CostGroup
    since_ms: int = 0
    total_usd: float = Field(description="every call's cost, including calls no row of this grouping shows")
    data: list[CostRow]


class CostPoint(Resource):
    t_ms: int = Field(description="the bucket's start, ms since the epoch")
    usd: float
    calls: int


class CostLine(Resource):
    key: str = Field(description="the tool, model, run or tenant; `(other)`: every key past `top`, summed")
    total_usd: float
    calls: int
    points: list[CostPoint] = Field(description="buckets with spend, oldest first (a missing bucket: nothing spent)")


class CostSeries(Resource):
    """Settled spend (BudgetSettled) over time: one line per key, the most expensive first."""

    by: str
    bucket_ms: int
    since_ms: int
    until_ms: int
    total_usd: float = Field(description="every settled call in the window, whatever its key")
    series: list[CostLine]


class AuditRows(Resource):
    """An audit query's answer: the rows of the calling tenant's audit record it selected."""

    columns: list[str]
    rows: list[list[Any]] = Field(description="JSON values; timestamps as ISO 8601 strings, bytes as base64")
    truncated: bool = Field(description="more rows matched than `max_rows`")


class MemoryFile(Resource):
    """One file of the tenant's long-term memory (its content: `GET /v1/memory/export`)."""

    path: str = Field(description="under /memories, e.g. /memories/notes.md")
    size: int = Field(description="the content's size in UTF-8 bytes")
    version: int = Field(description="1 when created, +1 per change")
    updated_ms: int = Field(description="the last change, milliseconds since the epoch")


class MemoryPage(Resource):
    """The calling key's tenant's memory files, by path."""

    data: list[MemoryFile]


class MemoryExport(Resource):
    """The calling key's tenant's memory files with their contents."""

    files: dict[str, str] = Field(description="path -> content, each read from the blob store and verified")
    errors: dict[str, str] = Field(
        description="path -> why its content is not in `files` (its blob is missing or failed verification, "
        "or the export reached `max_bytes`); a file is never exported as an empty text instead"
    )
    max_bytes: int = Field(description="the most content one export carries (the tenant's memory cap)")
    truncated: bool = Field(description="files were left out because the export reached `max_bytes`")


class ErrorDetail(Resource):
    # Sent without its null fields: `field` and the details appear only where they say something.
    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_serialization_defaults_required=False)

    type: str = Field(description="machine-readable: e.g. invalid_field, not_found, unknown_tool")
    message: str
    field: str | None = Field(default=None, description="the parameter, header or body field to fix")
    # Only on `unknown_tool`: the requested names the tenant has no tool of, and those it has.
    unknown: list[str] | None = None
    available: list[str] | None = None


class Error(Resource):
    """Every refusal: a 4xx (or 5xx) with this body."""

    error: ErrorDetail


class Health(Resource):
    ok: bool


class RunEventData(Resource):
    """The JSON record of one event of the stream: its envelope, then the event's own fields."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(description="the event type, as in the message's `event` line")
    offset: int = Field(ge=0, description="the event's journal offset: its SSE id")
    timestamp_ms: int
    run_id: str


class RunEventDetail(RunEventData):
    """One event of a run, whole (what a truncated stream record's `more_url` names)."""

    blob_text: str | None = Field(
        default=None, description="with blob=true, an offloaded tool result's full text (`content` is its preview)"
    )


class RunEventFrame(Resource):
    """One Server-Sent Events message: `id` is the journal offset (a tree stream's: per journal
    partition, the last offset sent there, `<partition>:<offset>.…`), `event` the event type,
    `data` the JSON record (RunEventData). Resume a stream with `Last-Event-ID: <id>`."""

    id: str = Field(pattern=r"^(?:[0-9]+|[0-9]{1,5}:[0-9]{1,18}(?:\.[0-9]{1,5}:[0-9]{1,18})*)$")
    event: str = Field(min_length=1)
    data: str = Field(
        json_schema_extra={
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/RunEventData"},
        }
    )
