"""The policy: a pure function from a proposed call and what is known about it to a verdict.

The risk tier, not the model, decides: the model's text never reaches this function, only the
tool it named and the arguments it chose, checked against the version the run pinned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agentstream.events import ToolSwitched
from agentstream.llm import ToolCall
from agentstream.processors.orchestrator.validation import validate_call
from agentstream.processors.policy_gate.taint import Leak
from agentstream.registry.entry import TenantPolicy, ToolEntry

Decision = Literal["allow", "deny", "needs_approval"]


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    rule: str
    reason: str


def evaluate(
    tool: str,
    arguments_json: str,
    entry: ToolEntry | None,
    switched_off: ToolSwitched | None,
    policy: TenantPolicy,
    calls_so_far: int,
    leak: Leak | None = None,
) -> Verdict:
    """`calls_so_far`: this run's earlier calls of the same tool that the gate let through.
    `leak`: private data of this run that the arguments carry (the gate's run context), if any."""
    if entry is None:
        return Verdict("deny", "unknown_tool", f"{tool} is not a registered tool at the version this run pinned")
    if switched_off is not None:
        return Verdict("deny", "kill_switch", f"{tool} is disabled by an operator: {switched_off.reason}")
    if tool in policy.deny:
        return Verdict("deny", "tenant_deny", f"{tool} is on this tenant's deny list")
    if policy.allow and tool not in policy.allow:
        return Verdict("deny", "not_allowed", f"{tool} is not on this tenant's allow list")
    # Checked again here, not only in the orchestrator: the gate trusts no upstream producer.
    error = validate_call(ToolCall("gate", tool, arguments_json), {tool: entry.spec})
    if error is not None:
        return Verdict("deny", "arguments", error.removeprefix("ERROR: "))
    if policy.granted_scopes is not None:
        missing = sorted(set(entry.scopes) - set(policy.granted_scopes))
        if missing:
            return Verdict("deny", "scope", f"{tool} needs scope(s) not granted to this tenant: {', '.join(missing)}")
    limit = policy.max_calls_per_run.get(tool)
    if limit is not None and calls_so_far >= limit:
        return Verdict("deny", "limit", f"{tool} may be called at most {limit} time(s) per run")
    if leak is not None:
        # Before the tier and auto-approval: a tenant that lets a tool run unattended did not
        # mean to let it carry the run's private data out.
        if policy.taint_action == "deny":
            return Verdict("deny", "taint", leak.reason(tool))
        tier = f"{tool} is irreversible; also, " if entry.tier == "irreversible" else ""
        return Verdict("needs_approval", "taint", f"{tier}{leak.reason(tool)}: a person must approve this call")
    if entry.tier == "irreversible":
        if tool in policy.auto_approve:
            return Verdict("allow", "auto_approve", f"{tool} is irreversible; this tenant's policy approves it")
        return Verdict("needs_approval", "tier", f"{tool} is irreversible: a person must approve this call")
    if tool in policy.require_approval:
        return Verdict("needs_approval", "tenant_approval", f"this tenant requires approval for {tool}")
    return Verdict("allow", "tier", f"{tool} is {entry.tier.replace('_', '-')}")
