"""Event types: one frozen dataclass per Avro record under `schemas/`.

Field names and order mirror the `.avsc` files exactly (a test checks it), so the codec maps a
dataclass to its record without a second description of the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True, slots=True)
class Event:
    type_name: ClassVar[str] = ""

    def to_record(self) -> dict[str, Any]:
        names = _FIELD_NAMES.get(type(self))
        if names is None:  # once per event type: `fields()` rebuilds its tuple at every call
            names = _FIELD_NAMES[type(self)] = tuple(f.name for f in fields(self))
        return {name: getattr(self, name) for name in names}


_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _register(cls: type[Event]) -> type[Event]:
    cls.type_name = cls.__name__
    EVENT_TYPES[cls.__name__] = cls
    return cls


@dataclass(frozen=True, slots=True)
class RunEvent(Event):
    """An event in a run's journal; partitioned by `run_id`, keyed by `event_id`."""

    event_id: str
    run_id: str
    tenant_id: str


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


TERMINAL_TYPES = frozenset({"RunCompleted", "RunFailed", "RunCancelled"})
# Not an ending, but the run waits for someone: a stream or a `wait` may stop here.
SETTLED_TYPES = TERMINAL_TYPES | {"RunHalted"}


@_register
@dataclass(frozen=True, slots=True)
class ToolRegistered(Event):
    event_id: str
    name: str
    version: str
    description: str
    input_schema_json: str
    source: str
    risk: str
    idempotent: bool
    timeout_ms: int
    owner: str = ""
    scopes: list[str] = field(default_factory=list)
    egress: list[str] = field(default_factory=list)
    transport_json: str = ""
    secrets: list[str] = field(default_factory=list)
    registered_ms: int = 0
    approval_timeout_s: float = 0.0


@_register
@dataclass(frozen=True, slots=True)
class ToolSwitched(Event):
    event_id: str
    owner: str
    name: str
    disabled: bool
    reason: str
    switched_by: str
    switched_ms: int


@_register
@dataclass(frozen=True, slots=True)
class TenantPolicySet(Event):
    event_id: str
    tenant_id: str
    policy_json: str
    set_by: str
    set_ms: int


@_register
@dataclass(frozen=True, slots=True)
class ProcessorStatus(Event):
    event_id: str
    processor: str
    instance: str
    ts_ms: int
    state: str
    partitions: list[int]
    lag: int
    processed: int
    errors: int
    dead_lettered: int


# Cost control (the `control` topic): tenant budgets and kill switches. Keyed "budget/<tenant>"
# and "kill/<scope>/<target>", so compaction keeps the latest setting of each.


@_register
@dataclass(frozen=True, slots=True)
class TenantBudgetSet(Event):
    event_id: str
    tenant_id: str
    usd_per_day: float  # 0: no daily cap
    max_active_runs: int  # 0: no cap
    set_by: str
    set_ms: int


@_register
@dataclass(frozen=True, slots=True)
class KillSwitchSet(Event):
    event_id: str
    scope: str  # "platform", "tenant" or "run"
    target: str  # tenant or run id; "" for the platform
    engaged: bool
    reason: str
    set_by: str
    set_ms: int


# The gateway's run index (`runs.index`, keyed by run id) and its projection's resume point
# (`gateway.checkpoints`): hints for reading history by partition and offset, rebuildable from the
# journal, which stays the source of truth.


@_register
@dataclass(frozen=True, slots=True)
class RunIndexed(Event):
    event_id: str
    run_id: str
    tenant_id: str
    partition: int
    first_offset: int
    last_offset: int
    last_ms: int  # the journal's append time of the run's last event so far
    status: str
    created_ms: int


@_register
@dataclass(frozen=True, slots=True)
class ProjectionCheckpoint(Event):
    event_id: str
    writer: str
    ts_ms: int
    offsets: list[int]  # per journal partition, where the projection may resume


@_register
@dataclass(frozen=True, slots=True)
class ReplicaStatus(Event):
    """A model replica's health and KV-cache occupancy (the `replicas.status` topic, keyed
    "replica/<id>"), reported by the replica's prober."""

    event_id: str
    replica: str
    url: str
    healthy: bool
    kv_capacity_tokens: int
    kv_used_tokens: int
    running: int
    waiting: int
    ts_ms: int


# Tenants and API keys (the `tenants` topic). `event_id` is the record key, "tenant/<tenant_id>"
# or "key/<key_id>", so compaction keeps only the latest state of each tenant and each key.


@_register
@dataclass(frozen=True, slots=True)
class TenantUpserted(Event):
    event_id: str
    tenant_id: str
    name: str
    rate_per_s: float
    burst: int
    max_active_runs: int
    disabled: bool


@_register
@dataclass(frozen=True, slots=True)
class ApiKeyIssued(Event):
    event_id: str
    key_id: str
    tenant_id: str
    key_hash: str
    label: str
    created_ms: int
    # What the key may do (v2; agentstream.tenancy.scopes); empty: the defaults, as before v2.
    scopes: list[str] = field(default_factory=list)


@_register
@dataclass(frozen=True, slots=True)
class ApiKeyRevoked(Event):
    event_id: str
    key_id: str
    tenant_id: str


def event_key(event: Event) -> str:
    key = getattr(event, "event_id", None)
    if not isinstance(key, str):
        raise TypeError(f"{type(event).__name__} has no event_id")
    return key


# Tenant secrets (the `secrets` topic). `event_id` is the record key, "secret/<tenant_id>/<name>",
# so compaction keeps each secret's latest version, and a deletion drops its ciphertext. Values
# appear only sealed (agentstream.credentials.envelope): these records never hold plaintext.


@_register
@dataclass(frozen=True, slots=True)
class SecretStored(Event):
    event_id: str
    tenant_id: str
    name: str
    key_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes
    tools: list[str]
    scopes: list[str]
    version: int
    created_ms: int


@_register
@dataclass(frozen=True, slots=True)
class SecretDeleted(Event):
    event_id: str
    tenant_id: str
    name: str
    deleted_ms: int
