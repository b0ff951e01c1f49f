"""A run's own journal events: its request and start, model and tool calls, and its ending."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentstream.events.base import RunEvent, _register

__all__ = [
    "SETTLED_TYPES",
    "TERMINAL_TYPES",
    "CancelRequested",
    "LlmCallCompleted",
    "LlmCallFailed",
    "LlmCallRequested",
    "ResumeRequested",
    "RunCancelled",
    "RunCompleted",
    "RunFailed",
    "RunHalted",
    "RunRequested",
    "RunStarted",
    "ToolCallCompleted",
    "ToolCallRequested",
]


@_register
@dataclass(frozen=True, slots=True)
class RunRequested(RunEvent):
    task: str
    model: str
    tools: list[str]
    max_steps: int
    idempotency_key: str
    labels: dict[str, str] = field(default_factory=dict)
    request_hash: str = ""
    # Hard caps for this run (v4); 0 means no cap of that kind beyond the platform's own.
    budget_usd: float = 0.0
    budget_tokens: int = 0
    budget_wall_s: float = 0.0
    on_loop: str = ""  # "halt" (default) or "warn" when a loop is detected
    # The id of the API key that created the run (v5); "" for runs not created through the gateway.
    # The approvals API refuses that key's decisions on the run's calls unless the tenant allows it.
    api_key_id: str = ""
    # The run's context settings as given on create (v6, agentstream.context.settings), JSON over
    # the tenant's defaults; "" for the tenant's defaults.
    context_json: str = ""
    # A task over the offload threshold (v7): its blob handle; `task` holds a preview and a marker.
    task_blob: str = ""
    # A child run's place in its run tree (v8): its parent, the parent's call it answers, and its
    # depth (0 for a top-level run).
    parent_run_id: str = ""
    parent_call_id: str = ""
    depth: int = 0
    # The registered workflow (explicit graph) the run follows (v8); "" for a ReAct run.
    workflow: str = ""
    workflow_version: str = ""


@_register
@dataclass(frozen=True, slots=True)
class RunStarted(RunEvent):
    model: str
    tools_json: str
    max_steps: int
    system_prompt: str
    tool_versions: dict[str, str] = field(default_factory=dict)
    # What repeated denials of one call do in this run (v3), from the tenant's policy at start:
    # "warn", "flag" or "halt"; "" (before v3) reads as the default.
    on_repeated_denial: str = ""
    # Tool name to the exact tool the run pinned (v3): "<owner or _platform>/<version>@<contract
    # digest>" (agentstream.registry.entry.ToolEntry.pin). A tenant's tool of the same name
    # registered later is another owner, so it never takes the place of what a running run pinned.
    tool_pins: dict[str, str] = field(default_factory=dict)
    # The effective context settings the run pinned (v4): the run's over the tenant's defaults.
    context_json: str = ""
    # The orchestrator version the run decides with to its end (v5); "" (before v5) reads as "v1".
    orchestrator_version: str = ""
    # The tenant's evaluation policy the step checks judge the run by (v5, agentstream.evaluation
    # .policy, JSON; "": no procedures, polling tools or constants declared).
    eval_json: str = ""
    # The workflow definition the run follows (v6, agentstream.workflows.definition JSON with its
    # registry version), pinned at start: "" for a ReAct run.
    workflow_json: str = ""


@_register
@dataclass(frozen=True, slots=True)
class CancelRequested(RunEvent):
    reason: str
    requested_by: str


@_register
@dataclass(frozen=True, slots=True)
class LlmCallRequested(RunEvent):
    step: int
    call_id: str
    model: str
    messages_json: str
    tools_json: str
    max_tokens: int
    tier: str = ""  # the model tier the orchestrator's routing policy chose (v2): "small" or "frontier"
    tier_reason: str = ""
    # "step" (the run's own call) or "compaction" (a context compaction's summarization call, v3):
    # the same journaled, budgeted, routed path; only the orchestrator reads the difference.
    purpose: str = "step"


@_register
@dataclass(frozen=True, slots=True)
class LlmCallCompleted(RunEvent):
    step: int
    call_id: str
    provider: str
    model: str
    text: str
    tool_calls_json: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    latency_ms: float
    attempts: int


@_register
@dataclass(frozen=True, slots=True)
class LlmCallFailed(RunEvent):
    step: int
    call_id: str
    provider: str
    error_type: str
    message: str
    status: int | None
    retryable: bool
    attempt: int
    final: bool


@_register
@dataclass(frozen=True, slots=True)
class ToolCallRequested(RunEvent):
    step: int
    call_id: str
    tool_call_id: str
    tool: str
    arguments_json: str
    idempotency_key: str
    timeout_ms: int
    tool_version: str = ""


@_register
@dataclass(frozen=True, slots=True)
class ToolCallCompleted(RunEvent):
    step: int
    call_id: str
    tool: str
    idempotency_key: str
    content: str
    is_error: bool
    duration_ms: float
    # The handle of a result offloaded to the blob store (v2); `content` then holds its preview.
    result_blob: str = ""


@_register
@dataclass(frozen=True, slots=True)
class RunCompleted(RunEvent):
    steps: int
    final_answer: str
    reason: str


@_register
@dataclass(frozen=True, slots=True)
class RunFailed(RunEvent):
    steps: int
    error_type: str
    reason: str


@_register
@dataclass(frozen=True, slots=True)
class RunCancelled(RunEvent):
    steps: int
    reason: str


@_register
@dataclass(frozen=True, slots=True)
class RunHalted(RunEvent):
    steps: int
    halt: int
    limit: str
    reason: str
    resumable: bool


@_register
@dataclass(frozen=True, slots=True)
class ResumeRequested(RunEvent):
    halt: int
    add_steps: int
    reason: str
    requested_by: str
    add_usd: float = 0.0  # budget raised with the resume (v2)
    add_tokens: int = 0
    add_wall_s: float = 0.0


TERMINAL_TYPES = frozenset({"RunCompleted", "RunFailed", "RunCancelled"})
# Not an ending, but the run waits for someone: a stream or a `wait` may stop here.
SETTLED_TYPES = TERMINAL_TYPES | {"RunHalted"}
