"""Events of the compacted tables beside the journal: tools, tenant policies, processor status,
cost control, the run index, replicas, tenants and API keys, tenant secrets and memory files."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentstream.events.base import Event, _register

__all__ = [
    "AlertChanged",
    "AlertRuleSet",
    "ApiKeyIssued",
    "ApiKeyRevoked",
    "AuditRetentionSet",
    "JudgePolicySet",
    "KillSwitchSet",
    "MemoryFileSet",
    "ProcessorStatus",
    "ProjectionCheckpoint",
    "ReplicaStatus",
    "RolloutSet",
    "RunIndexed",
    "SecretDeleted",
    "SecretStored",
    "TenantBudgetSet",
    "TenantPolicySet",
    "TenantUpserted",
    "ToolQuarantined",
    "ToolRegistered",
    "ToolSwitched",
]


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
class AuditRetentionSet(Event):
    event_id: str  # retention/<tenant>
    tenant_id: str
    days: int  # 0: kept forever
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


@_register
@dataclass(frozen=True, slots=True)
class ToolQuarantined(Event):
    """A tool's output declared poisoned from `since_ms` on (the `control` topic, keyed
    "quarantine/<id>"): the tool is disabled, the runs that consumed its output and were live are
    halted by run kill switches, the ended ones flagged; `released` once an operator lifts it."""

    event_id: str
    quarantine_id: str
    owner: str  # the tool's owner; "" for the platform
    tool: str
    since_ms: int
    reason: str
    halted_runs: list[str]
    flagged_runs: list[str]
    released: bool
    set_by: str
    set_ms: int


@_register
@dataclass(frozen=True, slots=True)
class JudgePolicySet(Event):
    """A tenant's judge sampling (the `control` topic, keyed "judge/<tenant>"): the policy as JSON
    (agentstream.judge.policy: rate, model, budget_usd); a rate of 0 stops it."""

    event_id: str
    tenant_id: str
    policy_json: str
    set_by: str
    set_ms: int


@_register
@dataclass(frozen=True, slots=True)
class RolloutSet(Event):
    """The orchestrator rollout in force (the `control` topic, keyed "rollout/orchestrator"): new
    runs of rings 1..`ring` start on the candidate, the others on the baseline (agentstream.rollout)."""

    event_id: str
    candidate: str
    baseline: str
    ring: int
    status: str  # rolling, promoted, rolled_back
    internal_tenants: list[str]
    reason: str
    set_by: str
    set_ms: int


@_register
@dataclass(frozen=True, slots=True)
class AlertRuleSet(Event):
    """An alert rule set or deleted (the `control` topic, keyed "alert-rule/<id>"): the rule as
    JSON (agentstream.monitor.rules), checked when it was set."""

    event_id: str
    rule_id: str
    rule_json: str
    deleted: bool
    set_by: str
    set_ms: int


@_register
@dataclass(frozen=True, slots=True)
class AlertChanged(Event):
    """An alert raised or cleared by the monitor (the `control` topic, keyed
    "alert/<rule>/<tenant>/<tool>/<version>", so the latest state of each alert is kept)."""

    event_id: str
    rule_id: str
    metric: str
    tenant_id: str
    tool: str
    version: str
    raised: bool
    value: float
    threshold: float
    samples: int
    window_s: int
    action: str
    action_taken: str  # what the monitor did about it, or why it could not
    at_ms: int  # the journal time the windows were judged at


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
    # v2: the run as the console lists it (agentstream.gateway.catalog), for a gateway that starts
    # after the run: its Run resource and settled calls as JSON; "" for a location only.
    summary: str = ""


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


# Long-term memory (the `memory` topic, agentstream.memory): the index of a tenant's memory files,
# keyed "<tenant_id><path>" ("acme/memories/notes.md"), so compaction keeps each file's latest
# state. The contents are in the blob store (the tenant's, scope "memory"), never in the record.


@_register
@dataclass(frozen=True, slots=True)
class MemoryFileSet(Event):
    event_id: str
    tenant_id: str
    path: str
    blob: str  # the content's blob handle; "" when deleted
    size: int  # UTF-8 bytes of the content
    version: int  # 1 for a new file, +1 for every change (a deletion included)
    updated_ms: int
    deleted: bool
    run_id: str  # the run whose tool call made the change
