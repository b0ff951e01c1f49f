"""The journal events of the gates between a run and its calls: policy, approvals, authorization,
budgets, loop detection and model routing."""

from __future__ import annotations

from dataclasses import dataclass

from agentstream.events.base import RunEvent, _register

__all__ = [
    "ApprovalDecided",
    "ApprovalRequested",
    "BudgetExceeded",
    "BudgetReserved",
    "BudgetSettled",
    "LlmCallDispatched",
    "LlmCallRouted",
    "LoopDetected",
    "PolicyDecided",
    "RunFlagged",
    "ToolCallAuthorized",
]


@_register
@dataclass(frozen=True, slots=True)
class PolicyDecided(RunEvent):
    step: int
    call_id: str
    tool: str
    tool_version: str
    tier: str
    decision: str
    rule: str
    reason: str
    decided_ms: int


@_register
@dataclass(frozen=True, slots=True)
class ApprovalRequested(RunEvent):
    step: int
    call_id: str
    approval_id: str
    tool: str
    tool_version: str
    tier: str
    arguments_json: str
    reason: str
    requested_ms: int
    expires_ms: int


@_register
@dataclass(frozen=True, slots=True)
class ApprovalDecided(RunEvent):
    call_id: str
    approval_id: str
    approved: bool
    decided_by: str
    reason: str
    decided_ms: int
    signature: str


@_register
@dataclass(frozen=True, slots=True)
class ToolCallAuthorized(RunEvent):
    step: int
    call_id: str
    tool_call_id: str
    tool: str
    tool_version: str
    arguments_json: str
    idempotency_key: str
    timeout_ms: int
    authorized_by: str
    expires_ms: int
    capability: str
    delegation: str
    rule: str = ""
    reason: str = ""


# The cost governor's records: a reservation before every model or tool call, its settlement
# after, and a refusal that halts the run. `kind` is "model" or "tool".


@_register
@dataclass(frozen=True, slots=True)
class BudgetReserved(RunEvent):
    step: int
    call_id: str
    kind: str
    tool: str
    reserved_usd: float
    reserved_tokens: int
    committed_usd: float  # the run's spent + reserved, this reservation included
    tenant_committed_usd: float  # the tenant's, today
    price_version: str
    decided_ms: int


@_register
@dataclass(frozen=True, slots=True)
class BudgetSettled(RunEvent):
    step: int
    call_id: str
    kind: str
    tool: str
    model: str
    cost_usd: float
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    released_usd: float  # what the reservation held beyond the actual cost
    price_version: str


@_register
@dataclass(frozen=True, slots=True)
class BudgetExceeded(RunEvent):
    step: int
    call_id: str
    kind: str
    limit: str  # budget_usd, budget_tokens, wall_clock, tenant_usd_per_day, tenant_active_runs, kill_switch
    reason: str
    resumable: bool
    evidence_json: str
    decided_ms: int


@_register
@dataclass(frozen=True, slots=True)
class LoopDetected(RunEvent):
    step: int
    kind: str  # "tool_call" or "model_output"
    action: str  # "halt" or "warn"
    signature: str
    count: int
    window: int
    evidence_json: str


@_register
@dataclass(frozen=True, slots=True)
class RunFlagged(RunEvent):
    """The run is marked for a person's review, and goes on: the model kept asking for a call that
    was denied (a sign of prompt injection), and the tenant's policy flags rather than halts."""

    step: int
    kind: str  # "repeated_denial"
    reason: str
    signature: str
    count: int
    evidence_json: str


@_register
@dataclass(frozen=True, slots=True)
class LlmCallRouted(RunEvent):
    """The model router's choice for one attempt of a call: which provider and model, and why."""

    step: int
    call_id: str
    attempt: int
    tier: str
    provider: str
    model: str
    reason: str
    decided_ms: int


@_register
@dataclass(frozen=True, slots=True)
class LlmCallDispatched(RunEvent):
    """The KV-affinity dispatcher's choice of replica for one model call."""

    step: int
    call_id: str
    session: str
    replica: str
    url: str
    policy: str
    reason: str
    decided_ms: int
