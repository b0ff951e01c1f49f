"""`request_approval`: the platform's approval step (a workflow's approval node). It does nothing:
its tier is irreversible, so the policy gate holds every call of it for a person (or the tenant's
auto-approval), and the journal records who decided. Once authorized, it answers at once."""

from __future__ import annotations

from typing import Any

from agentstream.llm import ToolSpec
from agentstream.tooling import ToolDescriptor, ToolResult
from agentstream.workflows.definition import APPROVAL_TOOL


def descriptor() -> ToolDescriptor:
    schema = {
        "type": "object",
        "properties": {"reason": {"type": "string", "maxLength": 2000}},
        "required": ["reason"],
        "additionalProperties": False,
    }
    description = "Ask a person to approve the next step of a workflow; the reason says what is approved."
    return ToolDescriptor(ToolSpec(APPROVAL_TOOL, description, schema), "builtin", "irreversible",
                          idempotent=True, timeout_s=5.0)  # fmt: skip


def approved(arguments: dict[str, Any]) -> ToolResult:
    # Reaching the executor means the gate authorized it: a person (or the policy) approved.
    return ToolResult(f"approved: {str(arguments.get('reason', ''))[:200]}")
