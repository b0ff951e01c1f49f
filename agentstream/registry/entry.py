"""A registered tool version, and the tenant tool policy: the registry's value types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from agentstream.events import ToolRegistered
from agentstream.llm import ToolSpec
from agentstream.memory.paths import MEMORY_TOOLS
from agentstream.tooling import RiskTier

TIERS: tuple[RiskTier, ...] = ("read_only", "reversible", "irreversible")
PLATFORM = "_platform"  # the owner segment of a platform-wide tool's keys
TaintAction = Literal["needs_approval", "deny"]
DenialAction = Literal["warn", "flag", "halt"]
# Bounds of an approval deadline, a tool's or a tenant's: under a second nobody can answer, and a
# call left open for over a week is a run nobody is waiting for.
MIN_APPROVAL_TIMEOUT_S = 1.0
MAX_APPROVAL_TIMEOUT_S = 604_800.0


def registry_key(owner: str, name: str, version: str) -> str:
    return f"tool/{owner or PLATFORM}/{name}/{version}"


def switch_key(owner: str, name: str) -> str:
    return f"tool/{owner or PLATFORM}/{name}"


def policy_key(tenant_id: str) -> str:
    return f"policy/{tenant_id}"


@dataclass(frozen=True, slots=True)
class ToolEntry:
    """One version of one tool. `owner` is a tenant id, or "" for a platform-wide tool."""

    name: str
    description: str
    input_schema: dict[str, Any]
    tier: RiskTier
    transport: dict[str, Any]
    owner: str = ""
    version: str = "1"
    scopes: tuple[str, ...] = ()
    egress: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    timeout_ms: int = 30_000
    idempotent: bool = False
    registered_ms: int = 0
    # Seconds a person has to decide on one of its calls (when a call needs approval); None: the
    # tenant's policy alone. It can only shorten the tenant's deadline (see `approval_timeout_for`).
    approval_timeout_s: float | None = None

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.input_schema)

    @property
    def source(self) -> str:
        kind = str(self.transport.get("kind", "builtin"))
        return "builtin" if kind == "builtin" else f"{kind}:{self.transport.get('server', self.name)}"

    def same_contract(self, other: ToolEntry) -> bool:
        """Equal in everything a run depends on: a difference means a new version."""
        return (
            self.description == other.description
            and _canonical(self.input_schema) == _canonical(other.input_schema)
            and (
                self.tier,
                self.scopes,
                self.egress,
                self.secrets,
                self.timeout_ms,
                self.idempotent,
                self.approval_timeout_s,
            )
            == (
                other.tier,
                other.scopes,
                other.egress,
                other.secrets,
                other.timeout_ms,
                other.idempotent,
                other.approval_timeout_s,
            )
            and _canonical(self.transport) == _canonical(other.transport)
        )

    def to_event(self) -> ToolRegistered:
        return ToolRegistered(
            event_id=registry_key(self.owner, self.name, self.version),
            name=self.name,
            version=self.version,
            description=self.description,
            input_schema_json=_canonical(self.input_schema),
            source=self.source,
            risk=self.tier,
            idempotent=self.idempotent,
            timeout_ms=self.timeout_ms,
            owner=self.owner,
            scopes=list(self.scopes),
            egress=list(self.egress),
            transport_json=_canonical(self.transport),
            secrets=list(self.secrets),
            registered_ms=self.registered_ms,
            approval_timeout_s=self.approval_timeout_s or 0.0,
        )

    @staticmethod
    def from_event(event: ToolRegistered) -> ToolEntry:
        # Unknown tiers are treated as the worst.
        tier: RiskTier = event.risk if event.risk in TIERS else "irreversible"
        transport = orjson.loads(event.transport_json) if event.transport_json else {"kind": "builtin"}
        # Versions registered before the field existed kept it in the transport; it is read from
        # there and dropped from it, so re-registering the same tool with the field is the same contract.
        legacy = _positive(transport.pop("approval_timeout_s", None))
        approval_timeout_s = _positive(event.approval_timeout_s) or legacy
        return ToolEntry(
            name=event.name,
            description=event.description,
            input_schema=orjson.loads(event.input_schema_json),
            tier=tier,
            transport=transport,
            owner=event.owner,
            version=event.version,
            scopes=tuple(event.scopes),
            egress=tuple(event.egress),
            secrets=tuple(event.secrets),
            timeout_ms=event.timeout_ms,
            idempotent=event.idempotent,
            registered_ms=event.registered_ms,
            approval_timeout_s=approval_timeout_s,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "owner": self.owner or None,
            "description": self.description,
            "input_schema": self.input_schema,
            "tier": self.tier,
            "scopes": list(self.scopes),
            "egress": list(self.egress),
            "secrets": list(self.secrets),
            "timeout_ms": self.timeout_ms,
            "approval_timeout_s": self.approval_timeout_s,
            "transport": self.transport.get("kind", "builtin"),
            "registered_at_ms": self.registered_ms,
        }


def _positive(value: object) -> float | None:
    # 0 (the Avro default) means unset; so does anything that is not a positive number.
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _denial_action(value: object) -> DenialAction:
    # Policies written before the setting existed, or naming an action this version does not
    # know, get the default: it records the repeats and never stops the user's run.
    match value:
        case "warn" | "halt":
            return value
        case _:
            return "flag"


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """A tenant's rules for tool calls. The defaults are the platform's: every tool the run pinned
    may be proposed, every scope is granted, irreversible tools need a person's approval."""

    allow: tuple[str, ...] = ()  # empty: every tool; otherwise only these
    deny: tuple[str, ...] = ()
    granted_scopes: tuple[str, ...] | None = None  # None: every scope
    auto_approve: tuple[str, ...] = ()  # irreversible tools this tenant lets run without a person
    require_approval: tuple[str, ...] = ()  # tools of lower tiers that still need a person
    max_calls_per_run: dict[str, int] = field(default_factory=dict)
    approval_timeout_s: float = 300.0  # the default for every tool; a tool's own may shorten it
    # Data-flow taint, the gate's run context: results of `private_tools` ("*": of every tool) are
    # this tenant's private data; a later call of an egress-capable tool (one with an egress
    # allowlist, or named in `egress_tools`, such as email) whose arguments carry some of it needs a
    # person ("needs_approval") or is refused ("deny"). No private tools: nothing is tracked.
    private_tools: tuple[str, ...] = ()
    egress_tools: tuple[str, ...] = ()
    taint_action: TaintAction = "needs_approval"
    # What a run does when its model keeps asking for a call that was denied (the usual sign of an
    # injection): "warn" journals it, "flag" also marks the run for review, "halt" stops it (a
    # resumable halt, which an injection can then trigger at will). Denied calls never count as a loop.
    on_repeated_denial: DenialAction = "flag"
    # Whether the API key that created a run may decide its approvals. Off by default: a script
    # holding the run's key would otherwise approve everything its runs ask for.
    allow_self_approval: bool = False
    # The tenant's default context settings (agentstream.context.settings, JSON; "": the
    # platform's); a run's own `context` on create is applied over them.
    context_json: str = ""
    # The tenant's evaluation policy (agentstream.evaluation.policy, JSON; "": none): the procedures
    # its runs must follow, its polling tools, its constants. Each run pins it at start.
    eval_json: str = ""

    def is_private(self, tool: str) -> bool:
        # Memory holds what the tenant's runs chose to keep: private whatever `private_tools` say.
        return tool in self.private_tools or "*" in self.private_tools or tool in MEMORY_TOOLS

    def tracks_taint(self, tools: list[str] | tuple[str, ...] = ()) -> bool:
        """Whether a run with these tools needs a taint context: the tenant marks tools private,
        or the run may read its memory."""
        return bool(self.private_tools) or any(t in MEMORY_TOOLS for t in tools)

    def is_egress(self, entry: ToolEntry) -> bool:
        return bool(entry.egress) or entry.name in self.egress_tools

    def approval_timeout_for(self, entry: ToolEntry) -> float:
        """Seconds a person has to decide on a call of `entry`: the tool's own deadline where it
        has one, but never longer than this tenant allows (the shorter deadline is the safe one)."""
        if entry.approval_timeout_s is not None and entry.approval_timeout_s > 0:
            return min(self.approval_timeout_s, entry.approval_timeout_s)
        return self.approval_timeout_s

    def to_json(self) -> str:
        context = {"context": orjson.loads(self.context_json)} if self.context_json else {}
        evaluation = {"eval": orjson.loads(self.eval_json)} if self.eval_json else {}
        return orjson.dumps(
            {
                **context,
                **evaluation,
                "allow": list(self.allow),
                "deny": list(self.deny),
                "granted_scopes": None if self.granted_scopes is None else list(self.granted_scopes),
                "auto_approve": list(self.auto_approve),
                "require_approval": list(self.require_approval),
                "max_calls_per_run": self.max_calls_per_run,
                "approval_timeout_s": self.approval_timeout_s,
                "private_tools": list(self.private_tools),
                "egress_tools": list(self.egress_tools),
                "taint_action": self.taint_action,
                "on_repeated_denial": self.on_repeated_denial,
                "allow_self_approval": self.allow_self_approval,
            },
            option=orjson.OPT_SORT_KEYS,
        ).decode()

    @staticmethod
    def from_json(raw: str) -> TenantPolicy:
        d = orjson.loads(raw)
        scopes = d.get("granted_scopes")
        return TenantPolicy(
            allow=tuple(d.get("allow") or ()),
            deny=tuple(d.get("deny") or ()),
            granted_scopes=None if scopes is None else tuple(scopes),
            auto_approve=tuple(d.get("auto_approve") or ()),
            require_approval=tuple(d.get("require_approval") or ()),
            max_calls_per_run={str(k): int(v) for k, v in (d.get("max_calls_per_run") or {}).items()},
            approval_timeout_s=float(d.get("approval_timeout_s", 300.0)),
            private_tools=tuple(d.get("private_tools") or ()),
            egress_tools=tuple(d.get("egress_tools") or ()),
            # An action this version does not know is read as the strictest one.
            taint_action="needs_approval" if d.get("taint_action", "needs_approval") == "needs_approval" else "deny",
            on_repeated_denial=_denial_action(d.get("on_repeated_denial")),
            allow_self_approval=d.get("allow_self_approval") is True,  # anything but true: the safe default
            context_json=orjson.dumps(d["context"]).decode() if isinstance(d.get("context"), dict) else "",
            eval_json=orjson.dumps(d["eval"]).decode() if isinstance(d.get("eval"), dict) else "",
        )
